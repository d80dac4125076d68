package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// ---- helpers (prefix rm) ----

func rmOpen(t *testing.T, db *sqlutil.DB) (context.Context, *Storage) {
	t.Helper()
	ctx := context.Background()
	s, err := New(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, s
}

// rmTx runs fn in a write transaction and fails the test on error.
func rmTx(t *testing.T, s *Storage, fn func(ctx context.Context, tx *sqlutil.Tx) error) {
	t.Helper()
	ctx := context.Background()
	if err := s.WithTx(ctx, func(tx *sqlutil.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
}

func rmStr(s string) *string { return &s }

// rmEvent is a message event of a room at pos (ID "$<room>-<pos>").
func rmEvent(pos int64, room, typ string) *Event {
	id := fmt.Sprintf("$%s-%d", room, pos)
	return &Event{
		Pos: pos, RoomID: room, EventID: id, Type: typ, Sender: "@alice:x", OriginTS: 1000 + pos,
		JSON: []byte(fmt.Sprintf(`{"event_id":%q,"type":%q}`, id, typ)), Visibility: "shared",
	}
}

// rmInsertEvents stores message events of a room at the given positions.
func rmInsertEvents(t *testing.T, s *Storage, room string, positions ...int64) {
	t.Helper()
	rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
		for _, p := range positions {
			if err := InsertEvent(ctx, tx, rmEvent(p, room, "m.room.message")); err != nil {
				return err
			}
		}
		return nil
	})
}

func rmPositions(evs []Event) []int64 {
	out := make([]int64, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.Pos)
	}
	return out
}

func rmRange(from, to int64) []int64 {
	var out []int64
	for p := from; p <= to; p++ {
		out = append(out, p)
	}
	return out
}

// rmSetState makes ev the current event of its key at pos, as the consumer
// does: close the key, insert the new row.
func rmSetState(ctx context.Context, tx *sqlutil.Tx, room, typ, key, eventID, membership string, pos int64) error {
	if err := CloseStateKey(ctx, tx, room, typ, key, pos); err != nil {
		return err
	}
	return InsertState(ctx, tx, &StateRow{RoomID: room, Type: typ, StateKey: key, EventID: eventID, Membership: membership,
		JSON: []byte(fmt.Sprintf(`{"event_id":%q}`, eventID)), FromPos: pos})
}

// rmKeys renders state rows as "type|key=event" strings, sorted.
func rmKeys(rows []StateRow) []string {
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.Type+"|"+r.StateKey+"="+r.EventID)
	}
	sort.Strings(out)
	return out
}

func rmWant(t *testing.T, what string, got, want []string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got == nil {
		got = []string{}
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

const rmMin = math.MinInt64 / 2

// ---- events ----

func TestEventsInsertAndByID(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		if n, err := MaxEventPos(ctx, s.DB()); err != nil || n != 0 {
			t.Fatalf("MaxEventPos on empty = %d, %v; want 0", n, err)
		}
		full := &Event{
			Pos: 7, RoomID: "!r:x", EventID: "$full", Type: "m.room.member", Sender: "@bob:x", StateKey: rmStr("@bob:x"),
			Membership: "join", ContainsURL: true, OriginTS: 1234, JSON: []byte(`{"type":"m.room.member","content":{"membership":"join"}}`),
			TxnID: "txn1", DeviceID: "DEV", Visibility: "joined", ReplacesState: "$old", PrevContent: []byte(`{"membership":"invite"}`),
		}
		emptyKey := &Event{Pos: 8, RoomID: "!r:x", EventID: "$emptykey", Type: "m.room.name", Sender: "@bob:x", StateKey: rmStr(""),
			OriginTS: 1, JSON: []byte(`{}`), Visibility: "shared"}
		backfilled := rmEvent(-3, "!r:x", "m.room.message")
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for _, e := range []*Event{full, emptyKey, rmEvent(9, "!r:x", "m.room.message"), backfilled} {
				if err := InsertEvent(ctx, tx, e); err != nil {
					return err
				}
			}
			return nil
		})

		// A known event ID, at another position, is ErrExists.
		dup := *full
		dup.Pos = 100
		err := s.WithTx(ctx, func(tx *sqlutil.Tx) error { return InsertEvent(ctx, tx, &dup) })
		if !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate event ID: err = %v, want ErrExists", err)
		}
		// The consumer goes on in the same transaction after ErrExists (it
		// stores its stream position there): the transaction must stay
		// usable on both engines.
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := InsertEvent(ctx, tx, &dup); !errors.Is(err, ErrExists) {
				return fmt.Errorf("duplicate event ID: err = %v, want ErrExists", err)
			}
			if err := SetConsumerPosition(ctx, tx, "c", 5); err != nil {
				return fmt.Errorf("the transaction is unusable after ErrExists: %w", err)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		} else if seq, err := ConsumerPosition(ctx, s.DB(), "c"); err != nil || seq != 5 {
			t.Errorf("consumer position after a duplicate in the transaction = %d, %v", seq, err)
		}
		if n, _ := MaxEventPos(ctx, s.DB()); n != 9 {
			t.Errorf("a duplicate was stored at position %d", n)
		}

		got, err := EventsByID(ctx, s.DB(), []string{"$full", "$emptykey", "$unknown", backfilled.EventID})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got["$unknown"] != nil {
			t.Fatalf("EventsByID returned %d events: %v", len(got), got)
		}
		f := got["$full"]
		if f.Pos != 7 || f.RoomID != "!r:x" || f.Type != "m.room.member" || f.Sender != "@bob:x" || f.StateKey == nil ||
			*f.StateKey != "@bob:x" || f.Membership != "join" || !f.ContainsURL || f.OriginTS != 1234 ||
			string(f.JSON) != string(full.JSON) || f.TxnID != "txn1" || f.DeviceID != "DEV" || f.Visibility != "joined" ||
			f.ReplacesState != "$old" || string(f.PrevContent) != `{"membership":"invite"}` || f.Redacted {
			t.Errorf("round trip of a full event: %+v", f)
		}
		e := got["$emptykey"]
		if e.StateKey == nil || *e.StateKey != "" {
			t.Errorf("empty state key read back as %v, want a pointer to \"\"", e.StateKey)
		}
		if e.PrevContent != nil || e.Membership != "" || e.TxnID != "" || e.ReplacesState != "" {
			t.Errorf("unset fields of an event read back as %+v", e)
		}
		if m := got[backfilled.EventID]; m.StateKey != nil || m.Pos != -3 {
			t.Errorf("a backfilled message event read back as %+v", m)
		}
		if n, err := MaxEventPos(ctx, s.DB()); err != nil || n != 9 {
			t.Errorf("MaxEventPos = %d, %v; want 9", n, err)
		}

		// More IDs than one batch holds.
		rmInsertEvents(t, s, "!big:x", rmRange(1000, 1599)...)
		var ids []string
		for p := int64(1000); p < 1600; p++ {
			ids = append(ids, fmt.Sprintf("$!big:x-%d", p), fmt.Sprintf("$missing-%d", p))
		}
		got, err = EventsByID(ctx, s.DB(), ids)
		if err != nil || len(got) != 600 {
			t.Fatalf("EventsByID of 1200 IDs (600 known) = %d events, %v", len(got), err)
		}
		if got["$!big:x-1599"].Pos != 1599 || got["$!big:x-1000"].Pos != 1000 {
			t.Error("EventsByID across batches returned wrong events")
		}
		if got, err := EventsByID(ctx, s.DB(), nil); err != nil || len(got) != 0 {
			t.Errorf("EventsByID(nil) = %v, %v", got, err)
		}
	})
}

// ---- timelines ----

func TestTimelines(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		// Room A at odd positions 1..39 (20 events), B at 2, 4, 6, C none.
		var a []int64
		for p := int64(1); p < 40; p += 2 {
			a = append(a, p)
		}
		rmInsertEvents(t, s, "!a:x", a...)
		rmInsertEvents(t, s, "!b:x", 2, 4, 6)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			e := rmEvent(8, "!b:x", "m.room.topic")
			e.StateKey = rmStr("")
			return InsertEvent(ctx, tx, e)
		})

		all := []Range{{RoomID: "!a:x", From: rmMin, To: 100}, {RoomID: "!b:x", From: rmMin, To: 100}, {RoomID: "!c:x", From: rmMin, To: 100}}
		evs, limited, err := Timelines(ctx, s.DB(), all, 5, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := rmPositions(evs["!a:x"]); !slices.Equal(got, []int64{31, 33, 35, 37, 39}) || !limited["!a:x"] {
			t.Errorf("room A: %v limited=%v; want the latest 5 in order, limited", got, limited["!a:x"])
		}
		if got := rmPositions(evs["!b:x"]); !slices.Equal(got, []int64{2, 4, 6, 8}) || limited["!b:x"] {
			t.Errorf("room B: %v limited=%v; want all 4, not limited", got, limited["!b:x"])
		}
		if len(evs["!c:x"]) != 0 || limited["!c:x"] {
			t.Errorf("empty room C: %v limited=%v", evs["!c:x"], limited["!c:x"])
		}
		for _, e := range evs["!a:x"] {
			if e.RoomID != "!a:x" {
				t.Errorf("room A timeline holds an event of %s", e.RoomID)
			}
		}

		// Ranges: after From (exclusive) up to To (inclusive). Exactly
		// limit events is not limited; one more is.
		evs, limited, err = Timelines(ctx, s.DB(), []Range{{RoomID: "!a:x", From: 29, To: 39}, {RoomID: "!b:x", From: 2, To: 6}}, 5, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := rmPositions(evs["!a:x"]); !slices.Equal(got, []int64{31, 33, 35, 37, 39}) || limited["!a:x"] {
			t.Errorf("A (29, 39]: %v limited=%v; want 31..39, exactly the limit, not limited", got, limited["!a:x"])
		}
		if got := rmPositions(evs["!b:x"]); !slices.Equal(got, []int64{4, 6}) || limited["!b:x"] {
			t.Errorf("B (2, 6]: %v limited=%v", got, limited["!b:x"])
		}
		evs, limited, _ = Timelines(ctx, s.DB(), []Range{{RoomID: "!a:x", From: 27, To: 39}}, 5, "", nil)
		if got := rmPositions(evs["!a:x"]); !slices.Equal(got, []int64{31, 33, 35, 37, 39}) || !limited["!a:x"] {
			t.Errorf("A (27, 39]: %v limited=%v; want the latest 5, limited", got, limited["!a:x"])
		}
		evs, limited, _ = Timelines(ctx, s.DB(), []Range{{RoomID: "!a:x", From: 39, To: 100}}, 5, "", nil)
		if len(evs["!a:x"]) != 0 || limited["!a:x"] {
			t.Errorf("A after its last event: %v limited=%v", rmPositions(evs["!a:x"]), limited["!a:x"])
		}

		// A condition on the row "e" with its arguments.
		evs, limited, err = Timelines(ctx, s.DB(), []Range{{RoomID: "!b:x", From: rmMin, To: 100}}, 1, "e.type = ?", []any{"m.room.message"})
		if err != nil {
			t.Fatal(err)
		}
		if got := rmPositions(evs["!b:x"]); !slices.Equal(got, []int64{6}) || !limited["!b:x"] {
			t.Errorf("B messages, limit 1: %v limited=%v; want [6] limited", got, limited["!b:x"])
		}
		evs, _, _ = Timelines(ctx, s.DB(), []Range{{RoomID: "!b:x", From: rmMin, To: 100}}, 10, "e.state_key IS NOT NULL", nil)
		if got := rmPositions(evs["!b:x"]); !slices.Equal(got, []int64{8}) {
			t.Errorf("B state events: %v; want [8]", got)
		}

		// No ranges: nothing, no error.
		if evs, limited, err := Timelines(ctx, s.DB(), nil, 5, "", nil); err != nil || len(evs) != 0 || len(limited) != 0 {
			t.Errorf("no ranges: %v %v %v", evs, limited, err)
		}

		// More rooms than one statement takes: every room answered.
		var many []Range
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for i := range 650 {
				room := fmt.Sprintf("!m%03d:x", i)
				many = append(many, Range{RoomID: room, From: rmMin, To: 100000})
				for j := range 2 {
					if err := InsertEvent(ctx, tx, rmEvent(int64(10000+2*i+j), room, "m.room.message")); err != nil {
						return err
					}
				}
			}
			return nil
		})
		evs, limited, err = Timelines(ctx, s.DB(), many, 1, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 650 || len(limited) != 650 {
			t.Fatalf("650 rooms: %d timelines, %d limited", len(evs), len(limited))
		}
		for i, r := range many {
			if got := rmPositions(evs[r.RoomID]); !slices.Equal(got, []int64{int64(10000 + 2*i + 1)}) {
				t.Fatalf("room %s: %v", r.RoomID, got)
			}
		}
	})
}

func TestRoomEvents(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmInsertEvents(t, s, "!a:x", -2, -1, 1, 3, 5, 7, 9)
		rmInsertEvents(t, s, "!b:x", 2, 4, 6)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			e := rmEvent(11, "!a:x", "m.room.name")
			e.StateKey = rmStr("")
			return InsertEvent(ctx, tx, e)
		})
		cases := []struct {
			name          string
			after, before int64
			forward       bool
			limit         int
			cond          string
			args          []any
			want          []int64
		}{
			{"backwards from the end", rmMin, math.MaxInt64 / 2, false, 3, "", nil, []int64{11, 9, 7}},
			{"backwards, before exclusive", rmMin, 7, false, 3, "", nil, []int64{5, 3, 1}},
			{"backwards into backfill", rmMin, 3, false, 10, "", nil, []int64{1, -1, -2}},
			{"backwards, after exclusive", 3, 9, false, 10, "", nil, []int64{7, 5}},
			{"forwards", 1, math.MaxInt64 / 2, true, 3, "", nil, []int64{3, 5, 7}},
			{"forwards, both bounds exclusive", -2, 5, true, 10, "", nil, []int64{-1, 1, 3}},
			{"forwards past the end", 11, math.MaxInt64 / 2, true, 10, "", nil, nil},
			{"condition", rmMin, math.MaxInt64 / 2, false, 10, "e.type <> ?", []any{"m.room.message"}, []int64{11}},
		}
		for _, c := range cases {
			evs, err := RoomEvents(ctx, s.DB(), "!a:x", c.after, c.before, c.forward, c.limit, c.cond, c.args)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			for _, e := range evs {
				if e.RoomID != "!a:x" {
					t.Errorf("%s: event of room %s", c.name, e.RoomID)
				}
			}
			if got := rmPositions(evs); !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
	})
}

func TestEventAtTimestamp(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		// Timestamps out of position order, and two events sharing one.
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for _, e := range []struct {
				pos, ts int64
				room    string
			}{{1, 100, "!a:x"}, {2, 300, "!a:x"}, {3, 200, "!a:x"}, {4, 300, "!a:x"}, {5, 400, "!a:x"}, {6, 250, "!b:x"}} {
				ev := rmEvent(e.pos, e.room, "m.room.message")
				ev.OriginTS = e.ts
				if err := InsertEvent(ctx, tx, ev); err != nil {
					return err
				}
			}
			return nil
		})
		cases := []struct {
			name    string
			ts      int64
			forward bool
			maxPos  int64
			want    []int64
		}{
			{"backwards, exact", 200, false, 100, []int64{3}},
			{"backwards, between", 250, false, 100, []int64{3}},
			{"backwards, tie takes the later position", 300, false, 100, []int64{4}},
			{"backwards, before everything", 50, false, 100, nil},
			{"forwards, exact", 200, true, 100, []int64{3}},
			{"forwards, between", 150, true, 100, []int64{3}},
			{"forwards, tie takes the earlier position", 260, true, 100, []int64{2}},
			{"forwards, after everything", 500, true, 100, nil},
			{"bounded by position", 1000, false, 3, []int64{2}},
			{"forwards bounded by position", 350, true, 4, nil},
		}
		for _, c := range cases {
			evs, err := EventAtTimestamp(ctx, s.DB(), "!a:x", c.ts, c.forward, c.maxPos, 1)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if got := rmPositions(evs); !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
		evs, _ := EventAtTimestamp(ctx, s.DB(), "!a:x", 1000, false, 100, 3)
		if got := rmPositions(evs); !slices.Equal(got, []int64{5, 4, 2}) {
			t.Errorf("backwards, limit 3: %v, want [5 4 2]", got)
		}
	})
}

// ---- state ----

// rmStateRoom builds this history of room !s:x (and some of !t:x):
//
//	1 create                 5 message (no state change)
//	2 alice joins            6 name "two" (replaces 3)
//	3 name "one"             7 bob leaves
//	4 bob joins              8 topic, 9 carol invited
//	10 a state reset removes the topic (CloseState by event ID)
func rmStateRoom(t *testing.T, s *Storage) {
	t.Helper()
	rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
		steps := []struct {
			typ, key, id, membership string
			pos                      int64
		}{
			{"m.room.create", "", "$create", "", 1},
			{"m.room.member", "@alice:x", "$alice-join", "join", 2},
			{"m.room.name", "", "$name1", "", 3},
			{"m.room.member", "@bob:x", "$bob-join", "join", 4},
			{"m.room.name", "", "$name2", "", 6},
			{"m.room.member", "@bob:x", "$bob-leave", "leave", 7},
			{"m.room.topic", "", "$topic", "", 8},
			{"m.room.member", "@carol:x", "$carol-invite", "invite", 9},
		}
		for _, st := range steps {
			if err := rmSetState(ctx, tx, "!s:x", st.typ, st.key, st.id, st.membership, st.pos); err != nil {
				return err
			}
		}
		if err := CloseState(ctx, tx, "!s:x", []string{"$topic", "$not-current"}, 10); err != nil {
			return err
		}
		// Another room where alice is invited and dave joined.
		for _, st := range []struct{ key, id, membership string }{{"@dave:x", "$t-dave", "join"}, {"@alice:x", "$t-alice", "invite"}} {
			if err := rmSetState(ctx, tx, "!t:x", "m.room.member", st.key, st.id, st.membership, 5); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestStatesOverTime(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmStateRoom(t, s)
		at := func(pos, since int64) []string {
			t.Helper()
			st, err := States(ctx, s.DB(), []StateQuery{{RoomID: "!s:x", At: pos, Since: since}})
			if err != nil {
				t.Fatal(err)
			}
			return rmKeys(st["!s:x"])
		}
		create, alice, name1, name2 := "m.room.create|=$create", "m.room.member|@alice:x=$alice-join", "m.room.name|=$name1", "m.room.name|=$name2"
		bobJoin, bobLeave, topic, carol := "m.room.member|@bob:x=$bob-join", "m.room.member|@bob:x=$bob-leave", "m.room.topic|=$topic", "m.room.member|@carol:x=$carol-invite"
		rmWant(t, "state at 0", at(0, rmMin), nil)
		rmWant(t, "state at 1", at(1, rmMin), []string{create})
		rmWant(t, "state at 3", at(3, rmMin), []string{create, alice, name1})
		rmWant(t, "state at 5", at(5, rmMin), []string{create, alice, name1, bobJoin})
		rmWant(t, "state at 6", at(6, rmMin), []string{create, alice, name2, bobJoin})
		rmWant(t, "state at 7", at(7, rmMin), []string{create, alice, name2, bobLeave})
		rmWant(t, "state at 9", at(9, rmMin), []string{create, alice, name2, bobLeave, topic, carol})
		rmWant(t, "state at 10 (topic removed)", at(10, rmMin), []string{create, alice, name2, bobLeave, carol})
		rmWant(t, "state now", at(math.MaxInt64/2, rmMin), []string{create, alice, name2, bobLeave, carol})

		// Since: only rows that started after it, and still valid at At.
		rmWant(t, "state at 7 since 5", at(7, 5), []string{name2, bobLeave})
		rmWant(t, "state at 9 since 6", at(9, 6), []string{bobLeave, topic, carol})
		rmWant(t, "state at 10 since 7", at(10, 7), []string{carol})
		rmWant(t, "state at 5 since 5", at(5, 5), nil)

		// Rows come ordered by the position they started at.
		st, _ := States(ctx, s.DB(), []StateQuery{{RoomID: "!s:x", At: 9, Since: rmMin}})
		for i := 1; i < len(st["!s:x"]); i++ {
			if st["!s:x"][i-1].FromPos > st["!s:x"][i].FromPos {
				t.Errorf("state rows out of order: %v", rmKeys(st["!s:x"]))
			}
		}
		for _, r := range st["!s:x"] {
			if r.EventID == "$bob-leave" && (r.Membership != "leave" || r.FromPos != 7 || string(r.JSON) != `{"event_id":"$bob-leave"}`) {
				t.Errorf("bob's leave row read back as %+v", r)
			}
			if r.EventID == "$name2" && r.Membership != "" {
				t.Errorf("a non-member row has membership %q", r.Membership)
			}
		}

		// Lazy: member events only of the listed users, whenever they
		// started (Since bounds the other state).
		lazy := func(pos, since int64, membersOnly bool, members ...string) []string {
			t.Helper()
			st, err := States(ctx, s.DB(), []StateQuery{{RoomID: "!s:x", At: pos, Since: since, Lazy: true, MembersOnly: membersOnly, Members: members}})
			if err != nil {
				t.Fatal(err)
			}
			return rmKeys(st["!s:x"])
		}
		rmWant(t, "lazy at 9, no members", lazy(9, rmMin, false), []string{create, name2, topic})
		rmWant(t, "lazy at 9, bob", lazy(9, rmMin, false, "@bob:x"), []string{create, name2, topic, bobLeave})
		rmWant(t, "lazy at 5, bob and alice", lazy(5, rmMin, false, "@bob:x", "@alice:x", "@nobody:x"), []string{create, name1, alice, bobJoin})
		rmWant(t, "lazy at 9 since 6, alice", lazy(9, 6, false, "@alice:x"), []string{topic, alice})
		rmWant(t, "lazy members only at 9, alice and carol", lazy(9, rmMin, true, "@alice:x", "@carol:x"), []string{alice, carol})
		rmWant(t, "lazy members only, none", lazy(9, rmMin, true), nil)

		// Several rooms in one call, each with its own position; members
		// listed for one room do not leak into another.
		st, err := States(ctx, s.DB(), []StateQuery{
			{RoomID: "!s:x", At: 3, Since: rmMin},
			{RoomID: "!t:x", At: 9, Since: rmMin, Lazy: true, Members: []string{"@dave:x"}},
			{RoomID: "!none:x", At: 9, Since: rmMin},
		})
		if err != nil {
			t.Fatal(err)
		}
		rmWant(t, "multi: !s:x at 3", rmKeys(st["!s:x"]), []string{create, alice, name1})
		rmWant(t, "multi: !t:x lazy dave", rmKeys(st["!t:x"]), []string{"m.room.member|@dave:x=$t-dave"})
		if len(st["!none:x"]) != 0 {
			t.Errorf("unknown room has state %v", st["!none:x"])
		}
		if st, err := States(ctx, s.DB(), nil); err != nil || len(st) != 0 {
			t.Errorf("States(nil) = %v, %v", st, err)
		}

		// Current state by key.
		id, js, err := CurrentStateEvent(ctx, s.DB(), "!s:x", "m.room.name", "")
		if err != nil || id != "$name2" || string(js) != `{"event_id":"$name2"}` {
			t.Errorf("current name = %q %s %v", id, js, err)
		}
		for _, k := range [][2]string{{"m.room.topic", ""}, {"m.room.member", "@nobody:x"}, {"m.room.name", "x"}} {
			if id, js, err := CurrentStateEvent(ctx, s.DB(), "!s:x", k[0], k[1]); err != nil || id != "" || js != nil {
				t.Errorf("current %v = %q %s %v; want none", k, id, js, err)
			}
		}

		// Re-inserting a row at the same position (a redelivered message)
		// replaces it and makes it current again.
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return InsertState(ctx, tx, &StateRow{RoomID: "!s:x", Type: "m.room.topic", StateKey: "", EventID: "$topic", JSON: []byte(`{}`), FromPos: 8})
		})
		if id, _, _ := CurrentStateEvent(ctx, s.DB(), "!s:x", "m.room.topic", ""); id != "$topic" {
			t.Errorf("re-inserted row: current topic %q, want $topic", id)
		}
	})
}

func TestStatesManyRooms(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		var qs []StateQuery
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for i := range 450 {
				room := fmt.Sprintf("!r%03d:x", i)
				qs = append(qs, StateQuery{RoomID: room, At: 100, Since: rmMin, Lazy: true, Members: []string{fmt.Sprintf("@u%d:x", i)}})
				for _, u := range []string{fmt.Sprintf("@u%d:x", i), "@other:x"} {
					if err := rmSetState(ctx, tx, room, "m.room.member", u, "$"+room+u, "join", 1); err != nil {
						return err
					}
				}
				if err := rmSetState(ctx, tx, room, "m.room.create", "", "$c"+room, "", 1); err != nil {
					return err
				}
			}
			return nil
		})
		st, err := States(ctx, s.DB(), qs)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 450 {
			t.Fatalf("state of %d rooms, want 450", len(st))
		}
		for i, q := range qs {
			want := []string{"m.room.create|=$c" + q.RoomID, fmt.Sprintf("m.room.member|@u%d:x=$%s@u%d:x", i, q.RoomID, i)}
			rmWant(t, q.RoomID, rmKeys(st[q.RoomID]), want)
		}
	})
}

// ---- memberships ----

func TestMemberships(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmStateRoom(t, s)
		// alice: joined !s:x at 2, invited to !t:x at 5, left !u:x.
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return rmSetState(ctx, tx, "!u:x", "m.room.member", "@alice:x", "$u-alice-leave", "leave", 11)
		})
		ms, err := CurrentMemberships(ctx, s.DB(), "@alice:x")
		if err != nil {
			t.Fatal(err)
		}
		want := []Membership{{"!s:x", "join", "$alice-join", 2, false, false, ""}, {"!t:x", "invite", "$t-alice", 5, false, false, ""}, {"!u:x", "leave", "$u-alice-leave", 11, false, false, ""}}
		if !slices.Equal(ms, want) {
			t.Errorf("alice's memberships %+v, want %+v", ms, want)
		}
		ms, _ = CurrentMemberships(ctx, s.DB(), "@bob:x")
		if want := []Membership{{"!s:x", "leave", "$bob-leave", 7, false, false, ""}}; !slices.Equal(ms, want) {
			t.Errorf("bob's memberships %+v, want his current leave only", ms)
		}

		if ms, err := CurrentMemberships(ctx, s.DB(), "@nobody:x"); err != nil || len(ms) != 0 {
			t.Errorf("unknown user's memberships %v, %v", ms, err)
		}

		// Current joined and invited members, with where they took effect.
		render := func(ms []RoomMember, err error) []string {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, m := range ms {
				out = append(out, fmt.Sprintf("%s %s %s %d", m.RoomID, m.UserID, m.Membership, m.Pos))
			}
			sort.Strings(out)
			return out
		}
		members := func(rooms []string) []string {
			t.Helper()
			return render(CurrentMembers(ctx, s.DB(), rooms))
		}
		all := []string{"!s:x @alice:x join 2", "!s:x @carol:x invite 9", "!t:x @alice:x invite 5", "!t:x @dave:x join 5"}
		rmWant(t, "members of every room", render(EveryCurrentMember(ctx, s.DB())), all)
		rmWant(t, "members of both rooms", members([]string{"!s:x", "!t:x"}), all)
		rmWant(t, "members of !t:x", members([]string{"!t:x"}), all[2:])
		rmWant(t, "members of no room (nil)", members(nil), nil)
		rmWant(t, "members of no room (empty)", members([]string{}), nil)
		rmWant(t, "members of !u:x (alice left)", members([]string{"!u:x"}), nil)

		// Every current member event, left and banned ones included, in
		// stream order.
		ms2, err := RoomMemberships(ctx, s.DB(), []string{"!s:x", "!u:x"})
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, m := range ms2 {
			order = append(order, fmt.Sprintf("%d %s %s", m.Pos, m.UserID, m.Membership))
		}
		if want := []string{"2 @alice:x join", "7 @bob:x leave", "9 @carol:x invite", "11 @alice:x leave"}; !slices.Equal(order, want) {
			t.Errorf("room memberships %v, want %v (in stream order)", order, want)
		}
		if ms, err := RoomMemberships(ctx, s.DB(), nil); err != nil || len(ms) != 0 {
			t.Errorf("room memberships of no room: %v, %v", ms, err)
		}

		// More rooms than one statement takes.
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for i := range 600 {
				if err := rmSetState(ctx, tx, fmt.Sprintf("!m%03d:x", i), "m.room.member", "@alice:x", fmt.Sprintf("$m%d", i), "join", 20); err != nil {
					return err
				}
			}
			return nil
		})
		var rooms []string
		for i := range 600 {
			rooms = append(rooms, fmt.Sprintf("!m%03d:x", i))
		}
		if got := members(rooms); len(got) != 600 {
			t.Errorf("members of 600 rooms: %d rows", len(got))
		}

		// Forgetting holds while the forgotten member event is current.
		forgotten := func(user, room string) bool {
			t.Helper()
			f, err := Forgotten(ctx, s.DB(), user, room)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			if err := SetForgotten(ctx, tx, "@alice:x", "!u:x", "$u-alice-leave"); err != nil {
				return err
			}
			return SetForgotten(ctx, tx, "@bob:x", "!s:x", "$bob-join") // no longer current
		})
		ms, _ = CurrentMemberships(ctx, s.DB(), "@alice:x")
		if len(ms) != 603 || !slices.ContainsFunc(ms, func(m Membership) bool { return m.RoomID == "!u:x" && m.Forgotten }) ||
			slices.ContainsFunc(ms, func(m Membership) bool { return m.RoomID != "!u:x" && m.Forgotten }) || !forgotten("@alice:x", "!u:x") {
			t.Errorf("alice's memberships after forgetting !u:x: %+v", ms)
		}
		if ms, _ = CurrentMemberships(ctx, s.DB(), "@bob:x"); ms[0].Forgotten || forgotten("@bob:x", "!s:x") {
			t.Errorf("bob's leave forgotten by a forget of an older member event: %+v", ms)
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return rmSetState(ctx, tx, "!u:x", "m.room.member", "@alice:x", "$u-alice-ban", "ban", 12)
		})
		if forgotten("@alice:x", "!u:x") {
			t.Error("a new member event does not end the forgetting")
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return SetForgotten(ctx, tx, "@alice:x", "!u:x", "$u-alice-ban")
		})
		if !forgotten("@alice:x", "!u:x") || forgotten("@alice:x", "!s:x") || forgotten("@nobody:x", "!u:x") {
			t.Error("forgetting the ban")
		}
	})
}

func TestMembershipChanges(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		changes := []MembershipChange{
			{"@a:x", "!r1:x", "invite", "$1", "@b:x", 3},
			{"@a:x", "!r1:x", "join", "$2", "@a:x", 5},
			{"@a:x", "!r2:x", "join", "$3", "@a:x", 6},
			{"@a:x", "!r1:x", "leave", "$4", "@a:x", 9},
			{"@b:x", "!r1:x", "join", "$5", "@b:x", 1},
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for i := range changes {
				if err := InsertMembershipChange(ctx, tx, &changes[i]); err != nil {
					return err
				}
			}
			// A redelivered change is ignored.
			return InsertMembershipChange(ctx, tx, &MembershipChange{"@a:x", "!r1:x", "ban", "$other", "@b:x", 5})
		})
		get := func(from, to int64, rooms []string) []string {
			t.Helper()
			cs, err := MembershipChanges(ctx, s.DB(), "@a:x", from, to, rooms)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, c := range cs {
				out = append(out, fmt.Sprintf("%d %s %s %s %s", c.Pos, c.RoomID, c.Membership, c.EventID, c.Sender))
			}
			return out
		}
		eq := func(what string, got, want []string) {
			t.Helper()
			if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("%s:\n got  %v\n want %v (in order)", what, got, want)
			}
		}
		eq("all of a's changes", get(rmMin, 100, nil), []string{
			"3 !r1:x invite $1 @b:x", "5 !r1:x join $2 @a:x", "6 !r2:x join $3 @a:x", "9 !r1:x leave $4 @a:x"})
		eq("(3, 6]", get(3, 6, nil), []string{"5 !r1:x join $2 @a:x", "6 !r2:x join $3 @a:x"})
		eq("(9, 100]", get(9, 100, nil), nil)
		eq("room !r1:x", get(rmMin, 100, []string{"!r1:x"}), []string{"3 !r1:x invite $1 @b:x", "5 !r1:x join $2 @a:x", "9 !r1:x leave $4 @a:x"})
		eq("rooms !r2:x and !r9:x up to 8", get(rmMin, 8, []string{"!r2:x", "!r9:x"}), []string{"6 !r2:x join $3 @a:x"})
		eq("an empty room list", get(rmMin, 100, []string{}), nil)
	})
}

// ---- ephemeral and per-user streams ----

func TestReceiptsSince(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		put := func(rs ...Receipt) {
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
				for i := range rs {
					if err := UpsertReceipt(ctx, tx, &rs[i]); err != nil {
						return err
					}
				}
				return nil
			})
		}
		put(Receipt{"!a:x", "m.read", "@u:x", "", "$1", 10, 1},
			Receipt{"!a:x", "m.read", "@v:x", "", "$1", 11, 2},
			Receipt{"!a:x", "m.read", "@u:x", "$thread", "$2", 12, 3},
			Receipt{"!a:x", "m.read.private", "@u:x", "", "$2", 13, 4},
			Receipt{"!b:x", "m.read", "@u:x", "", "$9", 14, 5})
		// u's main m.read in !a:x moves on: one row, at the new position.
		put(Receipt{"!a:x", "m.read", "@u:x", "", "$3", 20, 6})
		get := func(rooms []string, from, to int64) []string {
			t.Helper()
			rs, err := ReceiptsSince(ctx, s.DB(), rooms, from, to)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range rs {
				out = append(out, fmt.Sprintf("%s %s %s %q %s %d %d", r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.TS, r.Pos))
			}
			sort.Strings(out)
			return out
		}
		rmWant(t, "!a:x from the start", get([]string{"!a:x"}, -1, 6), []string{
			`!a:x m.read @u:x "" $3 20 6`, `!a:x m.read @v:x "" $1 11 2`, `!a:x m.read @u:x "$thread" $2 12 3`, `!a:x m.read.private @u:x "" $2 13 4`})
		rmWant(t, "both rooms in (2, 5]", get([]string{"!a:x", "!b:x"}, 2, 5), []string{
			`!a:x m.read @u:x "$thread" $2 12 3`, `!a:x m.read.private @u:x "" $2 13 4`, `!b:x m.read @u:x "" $9 14 5`})
		rmWant(t, "!a:x in (0, 1] (the row moved to 6)", get([]string{"!a:x"}, 0, 1), nil)
		rmWant(t, "no rooms", get(nil, -1, 100), nil)

		// Where a receipt points in the timeline.
		rmInsertEvents(t, s, "!a:x", 30)
		put(Receipt{"!a:x", "m.read", "@w:x", "", "$!a:x-30", 21, 7})
		if pos, found, err := ReceiptEventPos(ctx, s.DB(), "!a:x", "m.read", "@w:x", ""); err != nil || !found || pos != 30 {
			t.Errorf("position of w's receipt: %d %v %v; want 30", pos, found, err)
		}
		// A receipt of an event the read model lacks, and no receipt.
		for _, k := range [][3]string{{"m.read", "@u:x", ""}, {"m.read", "@nobody:x", ""}, {"m.read", "@w:x", "$thread"}} {
			if pos, found, err := ReceiptEventPos(ctx, s.DB(), "!a:x", k[0], k[1], k[2]); err != nil || found {
				t.Errorf("position of receipt %v: %d %v %v; want none", k, pos, found, err)
			}
		}
	})
}

func TestAccountDataSince(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		put := func(user string, d AccountData) {
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error { return UpsertAccountData(ctx, tx, user, &d) })
		}
		put("@u:x", AccountData{"", "m.push_rules", json.RawMessage(`{"v":1}`), 1})
		put("@u:x", AccountData{"!a:x", "m.tag", json.RawMessage(`{"tags":{}}`), 2})
		put("@v:x", AccountData{"", "m.push_rules", json.RawMessage(`{"v":"other"}`), 3})
		put("@u:x", AccountData{"", "m.direct", json.RawMessage(`{}`), 4})
		put("@u:x", AccountData{"", "m.push_rules", json.RawMessage(`{"v":2}`), 5}) // replaces the first
		get := func(user string, from, to int64) []string {
			t.Helper()
			ds, err := AccountDataSince(ctx, s.DB(), user, from, to)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, d := range ds {
				out = append(out, fmt.Sprintf("%d %q %s %s", d.Pos, d.RoomID, d.Type, d.Content))
			}
			return out
		}
		eq := func(what string, got, want []string) {
			t.Helper()
			if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("%s:\n got  %v\n want %v (in order)", what, got, want)
			}
		}
		eq("u, all", get("@u:x", -1, 5), []string{`2 "!a:x" m.tag {"tags":{}}`, `4 "" m.direct {}`, `5 "" m.push_rules {"v":2}`})
		eq("u, (2, 4]", get("@u:x", 2, 4), []string{`4 "" m.direct {}`})
		eq("u, (0, 1]: the first item moved on", get("@u:x", 0, 1), nil)
		eq("v, all", get("@v:x", -1, 100), []string{`3 "" m.push_rules {"v":"other"}`})
		eq("nobody", get("@w:x", -1, 100), nil)
	})
}

func TestPresence(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		if _, err := SelectPresence(ctx, s.DB(), "@u:x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("presence of an unknown user: err = %v, want ErrNotFound", err)
		}
		put := func(p Presence) {
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error { return UpsertPresence(ctx, tx, &p) })
		}
		put(Presence{"@u:x", "online", rmStr("busy"), 100, true, 1})
		put(Presence{"@v:x", "unavailable", nil, 50, false, 2})
		put(Presence{"@w:x", "online", nil, 60, true, 3})
		p, err := SelectPresence(ctx, s.DB(), "@u:x")
		if err != nil || p.Presence != "online" || p.StatusMsg == nil || *p.StatusMsg != "busy" || p.LastActiveTS != 100 || !p.CurrentlyActive || p.Pos != 1 {
			t.Fatalf("u's presence %+v, %v", p, err)
		}
		put(Presence{"@u:x", "offline", nil, 150, false, 4})
		p, _ = SelectPresence(ctx, s.DB(), "@u:x")
		if p.Presence != "offline" || p.StatusMsg != nil || p.LastActiveTS != 150 || p.CurrentlyActive || p.Pos != 4 {
			t.Fatalf("u's updated presence %+v", p)
		}
		get := func(users []string, from, to int64) []string {
			t.Helper()
			ps, err := PresenceSince(ctx, s.DB(), users, from, to)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range ps {
				out = append(out, fmt.Sprintf("%s %s %d", p.UserID, p.Presence, p.Pos))
			}
			sort.Strings(out)
			return out
		}
		rmWant(t, "u, v from the start", get([]string{"@u:x", "@v:x", "@nobody:x"}, -1, 4), []string{"@u:x offline 4", "@v:x unavailable 2"})
		rmWant(t, "everyone in (1, 3]", get([]string{"@u:x", "@v:x", "@w:x"}, 1, 3), []string{"@v:x unavailable 2", "@w:x online 3"})
		rmWant(t, "u in (0, 1]: it moved on", get([]string{"@u:x"}, 0, 1), nil)
		rmWant(t, "no users", get(nil, -1, 100), nil)
		// More users than one statement takes.
		var many []string
		for i := range 700 {
			many = append(many, fmt.Sprintf("@m%d:x", i))
		}
		many = append(many, "@w:x")
		rmWant(t, "701 users", get(many, -1, 100), []string{"@w:x online 3"})
	})
}

func TestStrippedStates(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for _, r := range []struct {
				user, room string
				pos        int64
				state      string
			}{
				{"@u:x", "!a:x", 3, `[{"type":"old"}]`},
				{"@u:x", "!a:x", 9, `[{"type":"new"}]`},
				{"@u:x", "!a:x", 5, `[{"type":"middle"}]`},
				{"@u:x", "!b:x", 4, `[{"type":"b"}]`},
				{"@v:x", "!a:x", 12, `[{"type":"v's"}]`},
				{"@u:x", "!b:x", 4, `[{"type":"redelivered"}]`}, // ignored
			} {
				if err := InsertStrippedState(ctx, tx, r.user, r.room, r.pos, json.RawMessage(r.state)); err != nil {
					return err
				}
			}
			return nil
		})
		got, err := StrippedStates(ctx, s.DB(), "@u:x", []string{"!a:x", "!b:x", "!c:x"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || string(got["!a:x"]) != `[{"type":"new"}]` || string(got["!b:x"]) != `[{"type":"b"}]` {
			t.Errorf("u's stripped state: %s", got)
		}
		if got, _ := StrippedStates(ctx, s.DB(), "@v:x", []string{"!a:x"}); string(got["!a:x"]) != `[{"type":"v's"}]` {
			t.Errorf("v's stripped state: %s", got)
		}
		if got, err := StrippedStates(ctx, s.DB(), "@u:x", nil); err != nil || len(got) != 0 {
			t.Errorf("no rooms: %v, %v", got, err)
		}
	})
}

// ---- positions ----

func TestPositions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		ev, rc, ad, pr, err := MaxPositions(ctx, s.DB())
		if err != nil || ev != 0 || rc != 0 || ad != 0 || pr != 0 {
			t.Fatalf("positions of an empty model: %d %d %d %d, %v", ev, rc, ad, pr, err)
		}
		rmInsertEvents(t, s, "!a:x", -5, 3, 17)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for _, err := range []error{
				UpsertReceipt(ctx, tx, &Receipt{"!a:x", "m.read", "@u:x", "", "$1", 1, 4}),
				UpsertReceipt(ctx, tx, &Receipt{"!a:x", "m.read", "@v:x", "", "$1", 1, 2}),
				UpsertAccountData(ctx, tx, "@u:x", &AccountData{"", "t", json.RawMessage(`{}`), 8}),
				UpsertPresence(ctx, tx, &Presence{UserID: "@u:x", Presence: "online", Pos: 6}),
			} {
				if err != nil {
					return err
				}
			}
			return nil
		})
		ev, rc, ad, pr, err = MaxPositions(ctx, s.DB())
		if err != nil || ev != 17 || rc != 4 || ad != 8 || pr != 6 {
			t.Errorf("positions %d %d %d %d, %v; want 17 4 8 6", ev, rc, ad, pr, err)
		}

		if seq, err := ConsumerPosition(ctx, s.DB(), "a"); err != nil || seq != 0 {
			t.Errorf("unknown consumer at %d, %v; want 0", seq, err)
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			if err := SetConsumerPosition(ctx, tx, "a", 10); err != nil {
				return err
			}
			return SetConsumerPosition(ctx, tx, "b", 1<<40)
		})
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error { return SetConsumerPosition(ctx, tx, "a", 11) })
		a, _ := ConsumerPosition(ctx, s.DB(), "a")
		b, _ := ConsumerPosition(ctx, s.DB(), "b")
		if a != 11 || b != 1<<40 {
			t.Errorf("consumer positions a=%d b=%d; want 11 and 2^40", a, b)
		}
		// A rolled back transaction leaves the position.
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := SetConsumerPosition(ctx, tx, "a", 12); err != nil {
				return err
			}
			return errors.New("abort")
		})
		if a, _ := ConsumerPosition(ctx, s.DB(), "a"); err == nil || a != 11 {
			t.Errorf("after a rollback: a=%d (err %v); want 11", a, err)
		}
	})
}

// ---- redaction ----

func TestRedactEvent(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			topic := rmEvent(1, "!a:x", "m.room.topic")
			topic.StateKey = rmStr("")
			for _, e := range []*Event{topic, rmEvent(2, "!a:x", "m.room.message"), rmEvent(3, "!a:x", "m.room.message")} {
				if err := InsertEvent(ctx, tx, e); err != nil {
					return err
				}
			}
			return InsertState(ctx, tx, &StateRow{RoomID: "!a:x", Type: "m.room.topic", EventID: topic.EventID, JSON: topic.JSON, FromPos: 1})
		})
		redacted := []byte(`{"type":"m.room.topic","content":{},"unsigned":{"redacted_because":{}}}`)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			if err := RedactEvent(ctx, tx, "$!a:x-1", redacted); err != nil {
				return err
			}
			if err := RedactEvent(ctx, tx, "$!a:x-2", []byte(`{"type":"m.room.message","content":{}}`)); err != nil {
				return err
			}
			return RedactEvent(ctx, tx, "$unknown", []byte(`{}`)) // nothing to do
		})
		evs, err := EventsByID(ctx, s.DB(), []string{"$!a:x-1", "$!a:x-2", "$!a:x-3"})
		if err != nil {
			t.Fatal(err)
		}
		if e := evs["$!a:x-1"]; !e.Redacted || string(e.JSON) != string(redacted) {
			t.Errorf("redacted state event %+v", e)
		}
		if e := evs["$!a:x-2"]; !e.Redacted || string(e.JSON) != `{"type":"m.room.message","content":{}}` {
			t.Errorf("redacted message %+v", e)
		}
		if e := evs["$!a:x-3"]; e.Redacted || string(e.JSON) != string(rmEvent(3, "!a:x", "m.room.message").JSON) {
			t.Errorf("an event that was not redacted changed: %+v", e)
		}
		// The state row serves the redacted JSON too.
		if id, js, _ := CurrentStateEvent(ctx, s.DB(), "!a:x", "m.room.topic", ""); id != "$!a:x-1" || string(js) != string(redacted) {
			t.Errorf("current topic after redaction: %s %s", id, js)
		}
		st, _ := States(ctx, s.DB(), []StateQuery{{RoomID: "!a:x", At: 10, Since: rmMin}})
		if len(st["!a:x"]) != 1 || string(st["!a:x"][0].JSON) != string(redacted) {
			t.Errorf("state after redaction: %+v", st["!a:x"])
		}
		tl, _, _ := Timelines(ctx, s.DB(), []Range{{RoomID: "!a:x", From: rmMin, To: 10}}, 10, "", nil)
		if len(tl["!a:x"]) != 3 || !tl["!a:x"][0].Redacted || tl["!a:x"][2].Redacted {
			t.Errorf("timeline after redaction: %+v", tl["!a:x"])
		}
	})
}
