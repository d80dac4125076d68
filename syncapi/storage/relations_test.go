package storage

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// TestRelationsBackfillMigration: migration 0018 indexes the relations of
// the events stored before it (re-run here on events inserted without the
// index), skipping redacted events and malformed relations.
func TestRelationsBackfillMigration(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if _, err := New(ctx, db); err != nil {
			t.Fatal(err)
		}
		events := []struct {
			id, json string
			redacted bool
		}{
			{"$root", `{"type":"m.room.message","content":{"body":"root"}}`, false},
			{"$t1", `{"type":"m.room.message","content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, false},
			{"$t2", `{"type":"m.room.message","content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, false},
			{"$edit", `{"type":"m.room.message","content":{"m.new_content":{"body":"x"},"m.relates_to":{"rel_type":"m.replace","event_id":"$root"}}}`, false},
			{"$react", `{"type":"m.reaction","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$t1","key":"k"}}}`, false},
			{"$gone", `{"type":"m.room.message","content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, true},
			{"$bad", `{"type":"m.room.message","content":{"m.relates_to":{"rel_type":5,"event_id":"$root"}}}`, false},
			{"$nul", `{"type":"m.room.message","content":{"body":"\u0000","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`, false},
		}
		err := db.WithTx(ctx, func(tx *sqlutil.Tx) error {
			for i, e := range events {
				if err := InsertEvent(ctx, tx, &Event{Pos: int64(i + 1), RoomID: "!r:x", EventID: e.id, Type: "m.room.message", Sender: "@a:x",
					JSON: []byte(e.json), Visibility: "shared", Redacted: e.redacted}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		text, err := schema.ReadFile("schema/" + string(db.Dialect) + "/0018_relations_backfill.sql")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, string(text)); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sync_relations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		// $nul reads on SQLite; PostgreSQL's jsonb refuses it and skips it.
		want := map[sqlutil.Dialect]int{sqlutil.SQLite: 5, sqlutil.Postgres: 4}[db.Dialect]
		if n != want {
			t.Fatalf("%d relations indexed, want %d", n, want)
		}
		var key string
		var editOK bool
		if err := db.QueryRowContext(ctx, `SELECT aggregation_key FROM sync_relations WHERE event_id = '$react'`).Scan(&key); err != nil || key != "k" {
			t.Fatalf("annotation key = %q, %v", key, err)
		}
		if err := db.QueryRowContext(ctx, `SELECT edit_ok FROM sync_relations WHERE event_id = '$edit'`).Scan(&editOK); err != nil || !editOK {
			t.Fatalf("edit_ok = %v, %v", editOK, err)
		}
		latest := map[sqlutil.Dialect]string{sqlutil.SQLite: "$nul", sqlutil.Postgres: "$t2"}[db.Dialect]
		threads, err := Threads(ctx, db, "!r:x", 1<<40, "", 10)
		if err != nil || len(threads) != 1 || threads[0].RootID != "$root" {
			t.Fatalf("threads = %v, %v", threads, err)
		}
		sum, err := ThreadSummaries(ctx, db, []Parent{{"!r:x", "$root"}}, "@a:x")
		if err != nil || sum["$root"].LatestEventID != latest || !sum["$root"].Participated {
			t.Fatalf("summary = %+v, %v; want latest %s", sum, err, latest)
		}
		edits, err := LatestEdits(ctx, db, []Parent{{"!r:x", "$root"}})
		if err != nil || edits["$root"] == nil || edits["$root"].EventID != "$edit" {
			t.Fatalf("edits = %v, %v", edits, err)
		}
		// Redacting the latest reply falls back to the one before.
		if err := db.WithTx(ctx, func(tx *sqlutil.Tx) error { return DeleteRelation(ctx, tx, latest) }); err != nil {
			t.Fatal(err)
		}
		sum, _ = ThreadSummaries(ctx, db, []Parent{{"!r:x", "$root"}}, "@b:x")
		wantLatest := map[sqlutil.Dialect]string{sqlutil.SQLite: "$t2", sqlutil.Postgres: "$t1"}[db.Dialect]
		if sum["$root"].LatestEventID != wantLatest || sum["$root"].Participated {
			t.Fatalf("after the redaction, summary = %+v, want latest %s", sum, wantLatest)
		}
	})
}
