package sqlutil_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

type item struct {
	Name string
	N    int64
}

func scanItem(rows *sql.Rows) (item, error) {
	var it item
	err := rows.Scan(&it.Name, &it.N)
	return it, err
}

func insertItems(t *testing.T, db *sqlutil.DB, n int) {
	t.Helper()
	ctx := context.Background()
	err := db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		for i := range n {
			if _, err := tx.ExecContext(ctx, `INSERT INTO t_items (name, n) VALUES (?, ?)`, fmt.Sprintf("item%02d", i), i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCollect(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		migrated(t, db)
		insertItems(t, db, 3)

		rows, err := db.QueryContext(ctx, `SELECT name, n FROM t_items ORDER BY n`)
		got, err := sqlutil.Collect(rows, err, scanItem)
		want := []item{{"item00", 0}, {"item01", 1}, {"item02", 2}}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Collect = %v, %v; want %v", got, err, want)
		}

		rows, err = db.QueryContext(ctx, `SELECT name FROM t_items ORDER BY n DESC`)
		names, err := sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
		if err != nil || !slices.Equal(names, []string{"item02", "item01", "item00"}) {
			t.Fatalf("Collect(ScanValue[string]) = %v, %v", names, err)
		}
		rows, err = db.QueryContext(ctx, `SELECT n FROM t_items ORDER BY n`)
		ns, err := sqlutil.Collect(rows, err, sqlutil.ScanValue[int64])
		if err != nil || !slices.Equal(ns, []int64{0, 1, 2}) {
			t.Fatalf("Collect(ScanValue[int64]) = %v, %v", ns, err)
		}

		// No rows: a nil slice.
		rows, err = db.QueryContext(ctx, `SELECT name, n FROM t_items WHERE n > ?`, 100)
		got, err = sqlutil.Collect(rows, err, scanItem)
		if err != nil || got != nil {
			t.Fatalf("Collect of no rows = %#v, %v; want nil, nil", got, err)
		}

		// A query error is returned as is.
		rows, err = db.QueryContext(ctx, `SELECT name, n FROM t_no_such_table`)
		if got, err := sqlutil.Collect(rows, err, scanItem); err == nil || got != nil {
			t.Fatalf("Collect of a failed query = %v, %v; want an error", got, err)
		}

		// A scan error stops the loop, returns no rows, and closes them.
		boom := errors.New("boom")
		calls := 0
		rows, err = db.QueryContext(ctx, `SELECT name, n FROM t_items ORDER BY n`)
		got, err = sqlutil.Collect(rows, err, func(rows *sql.Rows) (item, error) {
			if calls++; calls == 2 {
				return item{}, boom
			}
			return scanItem(rows)
		})
		if !errors.Is(err, boom) || got != nil || calls != 2 {
			t.Fatalf("Collect with a failing scan = %v, %v after %d calls; want nil, boom after 2", got, err, calls)
		}
		if rows.Next() {
			t.Fatal("rows still open after a scan error")
		}
	})
}

func TestEach(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		migrated(t, db)
		insertItems(t, db, 4)

		byName := map[string]int64{}
		rows, err := db.QueryContext(ctx, `SELECT name, n FROM t_items`)
		err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			it, err := scanItem(rows)
			byName[it.Name] = it.N
			return err
		})
		if err != nil || len(byName) != 4 || byName["item03"] != 3 {
			t.Fatalf("Each = %v, %v", byName, err)
		}
		if rows.Next() {
			t.Fatal("rows still open after Each")
		}

		boom := errors.New("boom")
		calls := 0
		rows, err = db.QueryContext(ctx, `SELECT name, n FROM t_items`)
		err = sqlutil.Each(rows, err, func(*sql.Rows) error {
			calls++
			return boom
		})
		if !errors.Is(err, boom) || calls != 1 {
			t.Fatalf("Each with a failing fn = %v after %d calls; want boom after 1", err, calls)
		}

		rows, err = db.QueryContext(ctx, `SELECT name FROM t_no_such_table`)
		if err := sqlutil.Each(rows, err, func(*sql.Rows) error { t.Fatal("fn called"); return nil }); err == nil {
			t.Fatal("Each of a failed query: want an error")
		}
	})
}

func TestInBatches(t *testing.T) {
	var got [][]int
	err := sqlutil.InBatches([]int{1, 2, 3, 4, 5, 6, 7}, 3, func(b []int) error {
		got = append(got, b)
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[[1 2 3] [4 5 6] [7]]" {
		t.Fatalf("InBatches = %v, %v", got, err)
	}

	// Appending to a batch does not overwrite the next one.
	list := []int{1, 2, 3, 4}
	_ = sqlutil.InBatches(list, 2, func(b []int) error {
		_ = append(b, 0)
		return nil
	})
	if fmt.Sprint(list) != "[1 2 3 4]" {
		t.Fatalf("list after appending to batches = %v", list)
	}

	if err := sqlutil.InBatches([]string(nil), 10, func([]string) error { t.Fatal("fn called for an empty list"); return nil }); err != nil {
		t.Fatal(err)
	}

	boom := errors.New("boom")
	calls := 0
	err = sqlutil.InBatches([]int{1, 2, 3}, 1, func([]int) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("InBatches with a failing fn = %v after %d calls; want boom after 1", err, calls)
	}

	// Together with Collect, on both engines: an IN list larger than a batch.
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		migrated(t, db)
		insertItems(t, db, 25)
		var names []any
		for i := range 30 { // five of them do not exist
			names = append(names, fmt.Sprintf("item%02d", i))
		}
		var all []item
		err := sqlutil.InBatches(names, 7, func(batch []any) error {
			rows, err := db.QueryContext(ctx, `SELECT name, n FROM t_items WHERE name IN (`+sqlutil.InList(len(batch))+`) ORDER BY n`, batch...)
			items, err := sqlutil.Collect(rows, err, scanItem)
			all = append(all, items...)
			return err
		})
		if err != nil || len(all) != 25 || all[24] != (item{"item24", 24}) {
			t.Fatalf("batched Collect = %d items (%v), %v; want 25", len(all), all, err)
		}
	})
}
