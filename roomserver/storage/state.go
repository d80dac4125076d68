package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver/state"
)

// InsertBlocks stores state blocks (deduplicated by content) and returns
// their numeric IDs in order. cached answers for hashes the caller already
// knows the numeric ID of, so that only new blocks reach the database.
func InsertBlocks(ctx context.Context, tx *sqlutil.Tx, blocks []state.Snapshot, cached func(hash []byte) (int64, bool)) (nids []int64, hashes [][]byte, err error) {
	encoded := make([][]byte, len(blocks))
	hashes = make([][]byte, len(blocks))
	known := map[string]int64{}
	var unknown []any
	for i, b := range blocks {
		encoded[i] = b.Encode()
		hashes[i] = state.Hash(encoded[i])
		if nid, ok := cached(hashes[i]); ok {
			known[string(hashes[i])] = nid
		} else {
			unknown = append(unknown, hashes[i])
		}
	}
	err = sqlutil.InBatches(unknown, 500, func(batch []any) error {
		rows, err := tx.QueryContext(ctx, `SELECT hash, block_nid FROM rs_state_blocks WHERE hash IN (`+sqlutil.InList(len(batch))+`)`, batch...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var h []byte
			var nid int64
			if err := rows.Scan(&h, &nid); err != nil {
				return err
			}
			known[string(h)] = nid
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	nids = make([]int64, len(blocks))
	for i, h := range hashes {
		nid, ok := known[string(h)]
		if !ok {
			if _, err := tx.ExecContext(ctx, `INSERT INTO rs_state_blocks (hash, entries) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, h, encoded[i]); err != nil {
				return nil, nil, err
			}
			if err := tx.QueryRowContext(ctx, `SELECT block_nid FROM rs_state_blocks WHERE hash = ?`, h).Scan(&nid); err != nil {
				return nil, nil, err
			}
			known[string(h)] = nid
		}
		nids[i] = nid
	}
	return nids, hashes, nil
}

// InsertSnapshot stores a snapshot as its list of blocks (deduplicated) and
// returns its numeric ID.
func InsertSnapshot(ctx context.Context, tx *sqlutil.Tx, blockNIDs []int64) (int64, error) {
	enc := state.EncodeNIDs(blockNIDs)
	h := state.Hash(enc)
	if _, err := tx.ExecContext(ctx, `INSERT INTO rs_state_snapshots (hash, blocks) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING`, h, enc); err != nil {
		return 0, err
	}
	var nid int64
	err := tx.QueryRowContext(ctx, `SELECT snapshot_nid FROM rs_state_snapshots WHERE hash = ?`, h).Scan(&nid)
	return nid, err
}

// SelectSnapshotBlocks returns the block IDs of a snapshot.
func SelectSnapshotBlocks(ctx context.Context, q sqlutil.Querier, snapshotNID int64) ([]int64, error) {
	var enc []byte
	if err := q.QueryRowContext(ctx, `SELECT blocks FROM rs_state_snapshots WHERE snapshot_nid = ?`, snapshotNID).Scan(&enc); err != nil {
		return nil, sqlutil.NotFound(err)
	}
	return state.DecodeNIDs(enc)
}

// SelectBlocks returns decoded blocks by numeric ID.
func SelectBlocks(ctx context.Context, q sqlutil.Querier, nids []int64) (map[int64]state.Snapshot, error) {
	out := make(map[int64]state.Snapshot, len(nids))
	err := sqlutil.InBatches(nids, 500, func(batch []int64) error {
		rows, err := q.QueryContext(ctx, `SELECT block_nid, entries FROM rs_state_blocks WHERE block_nid IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var nid int64
			var enc []byte
			if err := rows.Scan(&nid, &enc); err != nil {
				return err
			}
			snap, err := state.Decode(enc)
			if err != nil {
				return err
			}
			out[nid] = snap
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
