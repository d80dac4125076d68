package storage

import (
	"context"
	"database/sql"
	"sort"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// ServerKey is a verify key of another server, as the keyring caches it.
// A current key has ValidUntilTS set and ExpiredTS 0; an old key
// (old_verify_keys) has ExpiredTS set and ValidUntilTS 0.
type ServerKey struct {
	ServerName string
	KeyID      string
	// PublicKey is the key in unpadded base64, as servers publish it.
	PublicKey    string
	ValidUntilTS int64
	ExpiredTS    int64
}

// KeyRef names a key of a server.
type KeyRef struct {
	ServerName string
	KeyID      string
}

// ServerKeys returns the stored keys among refs; keys not stored are
// missing from the result.
func (s *Storage) ServerKeys(ctx context.Context, refs []KeyRef) ([]ServerKey, error) {
	byServer := map[string][]any{}
	for _, r := range refs {
		byServer[r.ServerName] = append(byServer[r.ServerName], r.KeyID)
	}
	servers := make([]string, 0, len(byServer))
	for name := range byServer {
		servers = append(servers, name)
	}
	sort.Strings(servers)
	var out []ServerKey
	for _, name := range servers {
		err := sqlutil.InBatches(byServer[name], 500, func(ids []any) error {
			rows, err := s.db.QueryContext(ctx, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts
				FROM fed_server_keys WHERE server_name = ? AND key_id IN (`+sqlutil.InList(len(ids))+`)`,
				append([]any{name}, ids...)...)
			keys, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (ServerKey, error) {
				var k ServerKey
				err := rows.Scan(&k.ServerName, &k.KeyID, &k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS)
				return k, err
			})
			out = append(out, keys...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// StoreServerKeys inserts or updates keys, fetched at fetchedTS. An update
// never makes a stored key less useful: a current key is replaced by an old
// one (the server retired it) or by a current one valid at least as long (a
// stale notary answer does not shorten it), and an old key stays old.
// MergeServerKey is the same rule, for caches.
func (s *Storage) StoreServerKeys(ctx context.Context, keys []ServerKey, fetchedTS int64) error {
	if len(keys) == 0 {
		return nil
	}
	return s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO fed_server_keys
				(server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
					valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts
				WHERE (fed_server_keys.expired_ts = 0 AND (excluded.expired_ts <> 0 OR excluded.valid_until_ts >= fed_server_keys.valid_until_ts))
					OR (fed_server_keys.expired_ts <> 0 AND excluded.expired_ts <> 0)`,
				k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS, fetchedTS); err != nil {
				return err
			}
		}
		return nil
	})
}

// MergeServerKey returns what StoreServerKeys keeps when next is stored
// over stored.
func MergeServerKey(stored, next ServerKey) ServerKey {
	if stored.ExpiredTS == 0 && (next.ExpiredTS != 0 || next.ValidUntilTS >= stored.ValidUntilTS) {
		return next
	}
	if stored.ExpiredTS != 0 && next.ExpiredTS != 0 {
		return next
	}
	return stored
}

// KeyResponse is a key response of a server as the server signed it, stored
// for one of the key IDs it lists.
type KeyResponse struct {
	KeyID        string
	ValidUntilTS int64
	FetchedTS    int64
	JSON         []byte
}

// StoreKeyResponse stores raw, a key response of serverName listing keyIDs
// (current and old) and valid until validUntilTS, as the last response
// seen for each of these keys.
func (s *Storage) StoreKeyResponse(ctx context.Context, serverName string, keyIDs []string, validUntilTS, fetchedTS int64, raw []byte) error {
	if len(keyIDs) == 0 {
		return nil
	}
	return s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		for _, id := range keyIDs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO fed_server_key_responses
				(server_name, key_id, valid_until_ts, fetched_ts, response) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (server_name, key_id) DO UPDATE SET valid_until_ts = excluded.valid_until_ts,
					fetched_ts = excluded.fetched_ts, response = excluded.response`,
				serverName, id, validUntilTS, fetchedTS, string(raw)); err != nil {
				return err
			}
		}
		return nil
	})
}

// KeyResponses returns the stored key responses of serverName for keyIDs,
// or for every key of the server when keyIDs is empty, ordered by key ID.
// Several keys may share one response.
func (s *Storage) KeyResponses(ctx context.Context, serverName string, keyIDs []string) ([]KeyResponse, error) {
	scan := func(rows *sql.Rows) (KeyResponse, error) {
		var r KeyResponse
		var raw string
		err := rows.Scan(&r.KeyID, &r.ValidUntilTS, &r.FetchedTS, &raw)
		r.JSON = []byte(raw)
		return r, err
	}
	const cols = `SELECT key_id, valid_until_ts, fetched_ts, response FROM fed_server_key_responses WHERE server_name = ?`
	if len(keyIDs) == 0 {
		rows, err := s.db.QueryContext(ctx, cols+` ORDER BY key_id`, serverName)
		return sqlutil.Collect(rows, err, scan)
	}
	var out []KeyResponse
	err := sqlutil.InBatches(keyIDs, 500, func(ids []string) error {
		args := []any{serverName}
		for _, id := range ids {
			args = append(args, id)
		}
		rows, err := s.db.QueryContext(ctx, cols+` AND key_id IN (`+sqlutil.InList(len(ids))+`) ORDER BY key_id`, args...)
		rs, err := sqlutil.Collect(rows, err, scan)
		out = append(out, rs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, nil
}
