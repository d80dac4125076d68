package keys

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/myelin-chat/myelin/userapi/storage"
)

// Signatures of remote users' master keys by a local user's user-signing
// key (cross-server verification). As in Synapse they stay on this server:
// stored in user_key_signatures like those of local users' keys, never sent
// over federation, and merged into the remote user's master key only when
// their signer reads it (/keys/query). The remote master key itself is not
// stored here: the caller reads it from the remote device cache or from
// the user's server each time.

// remoteMaster checks a remote user's master key as its server publishes
// it: nil when there is none or it is not a master key of userID.
func remoteMaster(userID string, raw json.RawMessage) *crossSigningKey {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	key, err := checkCrossSigningKey(raw, userID, storage.KeyTypeMaster, nil)
	if err != nil {
		return nil
	}
	return key
}

// MergeSignatures implements api.KeysAPI.
func (k *Keys) MergeSignatures(ctx context.Context, signer string, masterKeys map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	out := maps.Clone(masterKeys)
	if signer == "" || len(masterKeys) == 0 {
		return out, nil
	}
	users := slices.Sorted(maps.Keys(masterKeys))
	sigs, err := storage.SelectSignatures(ctx, k.store.DB(), users, signer)
	if err != nil {
		return nil, err
	}
	if len(sigs) == 0 {
		return out, nil
	}
	idx := indexSignatures(sigs)
	for _, u := range users {
		key := remoteMaster(u, masterKeys[u])
		if key == nil {
			continue
		}
		// Only signatures over this very key: a signature of a master
		// key the user has since replaced names the old public key.
		extra := idx.by(u, key.PublicKey, signer)
		if len(extra) == 0 {
			continue
		}
		js, err := withSignatures(masterKeys[u], extra, nil)
		if err != nil {
			return nil, fmt.Errorf("master key of %s: %w", u, err)
		}
		out[u] = js
	}
	return out, nil
}
