package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// nidTable describes a string <-> numeric ID table.
type nidTable struct{ table, nid, name string }

var (
	typeTable     = nidTable{"rs_event_types", "type_nid", "event_type"}
	stateKeyTable = nidTable{"rs_state_keys", "state_key_nid", "state_key"}
)

// lookup maps names to numeric IDs, creating missing ones when create is
// set (q must then be a transaction).
func (t nidTable) lookup(ctx context.Context, q sqlutil.Querier, names []string, create bool) (map[string]int64, error) {
	out := make(map[string]int64, len(names))
	if len(names) == 0 {
		return out, nil
	}
	if err := t.selectInto(ctx, q, names, out); err != nil {
		return nil, err
	}
	if !create || len(out) == len(names) {
		return out, nil
	}
	for _, n := range names {
		if _, ok := out[n]; ok {
			continue
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO `+t.table+` (`+t.name+`) VALUES (?) ON CONFLICT (`+t.name+`) DO NOTHING`, n); err != nil {
			return nil, err
		}
		var nid int64
		if err := q.QueryRowContext(ctx, `SELECT `+t.nid+` FROM `+t.table+` WHERE `+t.name+` = ?`, n).Scan(&nid); err != nil {
			return nil, err
		}
		out[n] = nid
	}
	return out, nil
}

func (t nidTable) selectInto(ctx context.Context, q sqlutil.Querier, names []string, out map[string]int64) error {
	return sqlutil.InBatches(names, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT `+t.name+`, `+t.nid+` FROM `+t.table+` WHERE `+t.name+` IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var name string
			var nid int64
			if err := rows.Scan(&name, &nid); err != nil {
				return err
			}
			out[name] = nid
			return nil
		})
	})
}

// names maps numeric IDs back to names.
func (t nidTable) names(ctx context.Context, q sqlutil.Querier, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	err := sqlutil.InBatches(nids, 500, func(batch []int64) error {
		rows, err := q.QueryContext(ctx, `SELECT `+t.nid+`, `+t.name+` FROM `+t.table+` WHERE `+t.nid+` IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var nid int64
			var name string
			if err := rows.Scan(&nid, &name); err != nil {
				return err
			}
			out[nid] = name
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TypeNIDs maps event types to numeric IDs (creating them when asked).
func TypeNIDs(ctx context.Context, q sqlutil.Querier, types []string, create bool) (map[string]int64, error) {
	return typeTable.lookup(ctx, q, types, create)
}

// StateKeyNIDs maps state keys to numeric IDs (creating them when asked).
func StateKeyNIDs(ctx context.Context, q sqlutil.Querier, keys []string, create bool) (map[string]int64, error) {
	return stateKeyTable.lookup(ctx, q, keys, create)
}

// TypeNames maps type numeric IDs back to event types.
func TypeNames(ctx context.Context, q sqlutil.Querier, nids []int64) (map[int64]string, error) {
	return typeTable.names(ctx, q, nids)
}

// StateKeyNames maps state key numeric IDs back to state keys.
func StateKeyNames(ctx context.Context, q sqlutil.Querier, nids []int64) (map[int64]string, error) {
	return stateKeyTable.names(ctx, q, nids)
}
