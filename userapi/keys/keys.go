// Package keys holds the end-to-end encryption keys of local users: device
// keys, one-time and fallback keys, cross-signing keys and the signatures
// uploaded over them. It implements userapi/api's KeysAPI for the user API,
// and announces every change of a device list or of published cross-signing
// keys as an api.KeyChange written to the user API's outbox in the
// transaction of the change.
package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// Keys implements api.KeysAPI.
type Keys struct {
	serverName string
	store      *storage.Storage
	// flush publishes the outbox after a commit that wrote to it.
	flush func(ctx context.Context) error
	log   *slog.Logger
}

var _ api.KeysAPI = (*Keys)(nil)

// New returns the keys of serverName's users in store; flush publishes the
// user API's outbox.
func New(serverName string, store *storage.Storage, flush func(ctx context.Context) error, log *slog.Logger) *Keys {
	if log == nil {
		log = slog.Default()
	}
	return &Keys{serverName: serverName, store: store, flush: flush, log: log}
}

// isLocal reports whether userID is a user of this server.
func (k *Keys) isLocal(userID string) bool {
	i := strings.IndexByte(userID, ':')
	return strings.HasPrefix(userID, "@") && i > 0 && userID[i+1:] == k.serverName
}

// publish publishes what a committed transaction queued; a failure is only
// logged: the messages stay in the outbox for the next flush.
func (k *Keys) publish(ctx context.Context) {
	if err := k.flush(ctx); err != nil {
		k.log.Warn("could not publish key changes yet", slog.String("error", err.Error()))
	}
}

// UploadKeys implements api.KeysAPI.
func (k *Keys) UploadKeys(ctx context.Context, req api.UploadKeysRequest) (*api.OneTimeKeyCounts, error) {
	var devKeys []byte
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var err error
		if devKeys, err = checkDeviceKeys(req.DeviceKeys, req.UserID, req.DeviceID); err != nil {
			return nil, err
		}
	}
	otks, err := checkOneTimeKeys("one_time_keys", req.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	fallbacks, err := checkOneTimeKeys("fallback_keys", req.FallbackKeys)
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(fallbacks); i++ {
		if fallbacks[i].Algorithm == fallbacks[i-1].Algorithm {
			return nil, invalid("fallback_keys may hold one key per algorithm")
		}
	}
	if devKeys == nil && len(otks) == 0 && len(fallbacks) == 0 {
		return k.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID)
	}
	queued := false
	err = k.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		dev, err := storage.SelectDevice(ctx, tx, req.UserID, req.DeviceID)
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%w: unknown device", api.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if devKeys != nil {
			old, err := storage.SelectDeviceKeyJSON(ctx, tx, req.UserID, req.DeviceID)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			if err != nil || old != string(devKeys) {
				// New keys (Synapse replaces changed identity keys
				// too): signatures over the old ones no longer hold.
				if err := storage.DeleteDeviceSignatures(ctx, tx, req.UserID, req.DeviceID); err != nil {
					return err
				}
				if err := storage.UpsertDeviceKeys(ctx, tx, req.UserID, req.DeviceID, string(devKeys), time.Now().UnixMilli()); err != nil {
					return err
				}
				queued = true
				if err := k.queueDeviceChanges(ctx, tx, req.UserID, []deviceChange{{deviceID: req.DeviceID, keys: devKeys, displayName: dev.DisplayName}}); err != nil {
					return err
				}
			}
		}
		if err := k.addOneTimeKeys(ctx, tx, req.UserID, req.DeviceID, otks); err != nil {
			return err
		}
		for _, f := range fallbacks {
			if err := storage.UpsertFallbackKey(ctx, tx, req.UserID, req.DeviceID, storage.OneTimeKey{Algorithm: f.Algorithm, KeyID: f.KeyID, KeyJSON: string(f.JSON)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if queued {
		k.publish(ctx)
	}
	return k.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID)
}

// addOneTimeKeys inserts new one-time keys; a key ID the device has
// already is accepted when it is the same key (signatures may differ) and
// fails with api.ErrKeyExists otherwise.
func (k *Keys) addOneTimeKeys(ctx context.Context, tx *sqlutil.Tx, userID, deviceID string, otks []parsedKey) error {
	if len(otks) == 0 {
		return nil
	}
	rows := make([]storage.OneTimeKey, len(otks))
	for i, o := range otks {
		rows[i] = storage.OneTimeKey{Algorithm: o.Algorithm, KeyID: o.KeyID, KeyJSON: string(o.JSON)}
	}
	skipped, err := storage.InsertOneTimeKeys(ctx, tx, userID, deviceID, rows)
	if err != nil || len(skipped) == 0 {
		return err
	}
	stored, err := storage.SelectOneTimeKeys(ctx, tx, userID, deviceID, skipped)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		old, ok := stored[[2]string{s.Algorithm, s.KeyID}]
		if ok && !sameOneTimeKey([]byte(old), []byte(s.KeyJSON)) {
			return fmt.Errorf("%w: One time key %s:%s already exists with other content", api.ErrKeyExists, s.Algorithm, s.KeyID)
		}
	}
	return nil
}

// OneTimeKeyCounts implements api.KeysAPI.
func (k *Keys) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (*api.OneTimeKeyCounts, error) {
	counts, err := storage.CountOneTimeKeys(ctx, k.store.DB(), userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	unused, err := storage.SelectUnusedFallbackAlgorithms(ctx, k.store.DB(), userID, deviceID)
	if err != nil {
		return nil, err
	}
	if unused == nil {
		unused = []string{}
	}
	return &api.OneTimeKeyCounts{Counts: counts, UnusedFallbackKeyTypes: unused}, nil
}

// QueryKeys implements api.KeysAPI.
func (k *Keys) QueryKeys(ctx context.Context, req api.QueryKeysRequest) (*api.QueryKeysResponse, error) {
	res := &api.QueryKeysResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	users := make([]string, 0, len(req.DeviceKeys))
	for u := range req.DeviceKeys {
		if k.isLocal(u) {
			users = append(users, u)
			res.DeviceKeys[u] = map[string]json.RawMessage{}
		}
	}
	if len(users) == 0 {
		return res, nil
	}
	slices.Sort(users)
	devs, cross, idx, err := k.loadKeys(ctx, users, req.RequesterUserID)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if want := req.DeviceKeys[d.UserID]; len(want) > 0 && !slices.Contains(want, d.DeviceID) {
			continue
		}
		unsigned := map[string]any{}
		if d.DisplayName != nil && (!req.OverFederation || req.DeviceNames) {
			unsigned["device_display_name"] = *d.DisplayName
		}
		js, err := withSignatures([]byte(d.KeyJSON), idx.own(d.UserID, d.DeviceID), unsigned)
		if err != nil {
			return nil, fmt.Errorf("device keys of %s: %w", d.UserID, err)
		}
		res.DeviceKeys[d.UserID][d.DeviceID] = js
	}
	for u, keys := range cross {
		for typ, key := range keys {
			// Signatures over cross-signing keys are shown to the user
			// who made them only (as Synapse does).
			var extra signatures
			if req.RequesterUserID != "" {
				extra = idx.by(u, key.PublicKey, req.RequesterUserID)
			}
			js, err := withSignatures([]byte(key.KeyJSON), extra, nil)
			if err != nil {
				return nil, fmt.Errorf("cross-signing key of %s: %w", u, err)
			}
			switch {
			case typ == storage.KeyTypeMaster:
				res.MasterKeys[u] = js
			case typ == storage.KeyTypeSelfSigning:
				res.SelfSigningKeys[u] = js
			case typ == storage.KeyTypeUserSigning && u == req.RequesterUserID && !req.OverFederation:
				res.UserSigningKeys[u] = js
			}
		}
	}
	return res, nil
}

// loadKeys reads the device keys, cross-signing keys and signatures of
// local users, with the signatures requester made (besides the users'
// own), in three statements.
func (k *Keys) loadKeys(ctx context.Context, users []string, requester string) ([]storage.DeviceKeys, map[string]map[string]storage.CrossSigningKey, signatureIndex, error) {
	db := k.store.DB()
	devs, err := storage.SelectDeviceKeys(ctx, db, users)
	if err != nil {
		return nil, nil, nil, err
	}
	cross, err := storage.SelectCrossSigningKeys(ctx, db, users)
	if err != nil {
		return nil, nil, nil, err
	}
	sigs, err := storage.SelectSignatures(ctx, db, users, requester)
	if err != nil {
		return nil, nil, nil, err
	}
	return devs, cross, indexSignatures(sigs), nil
}

// signatureIndex finds stored signatures by target.
type signatureIndex map[[2]string][]storage.Signature

func indexSignatures(sigs []storage.Signature) signatureIndex {
	idx := make(signatureIndex, len(sigs))
	for _, s := range sigs {
		key := [2]string{s.TargetUserID, s.TargetKeyID}
		idx[key] = append(idx[key], s)
	}
	return idx
}

// own returns the signatures the user made over one of their keys.
func (idx signatureIndex) own(userID, keyID string) signatures {
	return idx.by(userID, keyID, userID)
}

// by returns the signatures signer made over a key of userID.
func (idx signatureIndex) by(userID, keyID, signer string) signatures {
	var out signatures
	for _, s := range idx[[2]string{userID, keyID}] {
		if s.SignerUserID != signer {
			continue
		}
		if out == nil {
			out = signatures{signer: {}}
		}
		out[signer][s.SignerKeyID] = s.Signature
	}
	return out
}

// ClaimKeys implements api.KeysAPI.
func (k *Keys) ClaimKeys(ctx context.Context, req api.ClaimKeysRequest) (*api.ClaimKeysResponse, error) {
	res := &api.ClaimKeysResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	var claims []storage.KeyClaim
	for u, devs := range req.OneTimeKeys {
		if !k.isLocal(u) {
			continue
		}
		for d, alg := range devs {
			claims = append(claims, storage.KeyClaim{UserID: u, DeviceID: d, Algorithm: alg})
		}
	}
	if len(claims) == 0 {
		return res, nil
	}
	var got []storage.ClaimedKey
	err := k.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		otks, err := storage.ClaimOneTimeKeys(ctx, tx, claims)
		if err != nil {
			return err
		}
		done := make(map[storage.KeyClaim]bool, len(otks))
		for _, o := range otks {
			done[o.KeyClaim] = true
		}
		missing := slices.DeleteFunc(slices.Clone(claims), func(c storage.KeyClaim) bool { return done[c] })
		fallbacks, err := storage.ClaimFallbackKeys(ctx, tx, missing)
		if err != nil {
			return err
		}
		got = append(otks, fallbacks...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, c := range got {
		devs := res.OneTimeKeys[c.UserID]
		if devs == nil {
			devs = map[string]map[string]json.RawMessage{}
			res.OneTimeKeys[c.UserID] = devs
		}
		devs[c.DeviceID] = map[string]json.RawMessage{c.Algorithm + ":" + c.KeyID: json.RawMessage(c.KeyJSON)}
	}
	return res, nil
}

// QueryUserDevices implements api.KeysAPI.
func (k *Keys) QueryUserDevices(ctx context.Context, userID string) (*api.UserDevices, error) {
	res := &api.UserDevices{UserID: userID, Devices: []api.UserDevice{}}
	if !k.isLocal(userID) {
		return res, nil
	}
	// The stream ID first: a change committed in between is then in the
	// devices and announced again (harmless), never missed.
	var err error
	if res.StreamID, err = storage.SelectDeviceStreamID(ctx, k.store.DB(), userID); err != nil {
		return nil, err
	}
	devs, cross, idx, err := k.loadKeys(ctx, []string{userID}, "")
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		js, err := withSignatures([]byte(d.KeyJSON), idx.own(userID, d.DeviceID), nil)
		if err != nil {
			return nil, err
		}
		res.Devices = append(res.Devices, api.UserDevice{DeviceID: d.DeviceID, Keys: js, DisplayName: d.DisplayName})
	}
	if m, ok := cross[userID][storage.KeyTypeMaster]; ok {
		res.MasterKey = json.RawMessage(m.KeyJSON)
	}
	if s, ok := cross[userID][storage.KeyTypeSelfSigning]; ok {
		res.SelfSigningKey = json.RawMessage(s.KeyJSON)
	}
	return res, nil
}
