package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// uploaded lists the keys of an upload by storage key type.
func uploaded(keys api.CrossSigningKeys) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for typ, raw := range map[string]json.RawMessage{
		storage.KeyTypeMaster: keys.MasterKey, storage.KeyTypeSelfSigning: keys.SelfSigningKey, storage.KeyTypeUserSigning: keys.UserSigningKey,
	} {
		if len(raw) > 0 && string(raw) != "null" {
			out[typ] = raw
		}
	}
	return out
}

// CrossSigningUploadNeedsAuth implements api.KeysAPI.
func (k *Keys) CrossSigningUploadNeedsAuth(ctx context.Context, keys api.CrossSigningKeys) (bool, error) {
	stored, err := storage.SelectCrossSigningKeys(ctx, k.store.DB(), []string{keys.UserID})
	if err != nil {
		return false, err
	}
	if _, ok := stored[keys.UserID][storage.KeyTypeMaster]; !ok {
		return false, nil
	}
	for typ, raw := range uploaded(keys) {
		old, ok := stored[keys.UserID][typ]
		c, err := canonical(raw)
		if !ok || err != nil || !bytes.Equal(c, []byte(old.KeyJSON)) {
			return true, nil
		}
	}
	return false, nil
}

// UploadCrossSigningKeys implements api.KeysAPI.
func (k *Keys) UploadCrossSigningKeys(ctx context.Context, keys api.CrossSigningKeys) error {
	user := keys.UserID
	up := uploaded(keys)
	var checked []*crossSigningKey
	var types []string
	queued := false
	err := k.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		stored, err := storage.SelectCrossSigningKeys(ctx, tx, []string{user})
		if err != nil {
			return err
		}
		var master *crossSigningKey
		if raw, ok := up[storage.KeyTypeMaster]; ok {
			if master, err = checkCrossSigningKey(raw, user, storage.KeyTypeMaster, nil); err != nil {
				return err
			}
			checked, types = append(checked, master), append(types, storage.KeyTypeMaster)
		} else if m, ok := stored[user][storage.KeyTypeMaster]; ok {
			if master, err = storedCrossSigningKey(m.KeyJSON); err != nil {
				return fmt.Errorf("stored master key of %s: %w", user, err)
			}
		} else {
			return fmt.Errorf("%w: No master key available", api.ErrMissingMasterKey)
		}
		for _, typ := range []string{storage.KeyTypeSelfSigning, storage.KeyTypeUserSigning} {
			if raw, ok := up[typ]; ok {
				key, err := checkCrossSigningKey(raw, user, typ, master)
				if err != nil {
					return err
				}
				checked, types = append(checked, key), append(types, typ)
			}
		}
		changed := map[string]bool{}
		for i, key := range checked {
			if old, ok := stored[user][types[i]]; ok && old.KeyJSON == string(key.JSON) {
				continue
			}
			changed[types[i]] = true
			if err := storage.UpsertCrossSigningKey(ctx, tx, storage.CrossSigningKey{UserID: user, KeyType: types[i], PublicKey: key.PublicKey, KeyJSON: string(key.JSON)}); err != nil {
				return err
			}
		}
		if changed[storage.KeyTypeMaster] || changed[storage.KeyTypeSelfSigning] {
			queued = true
			if err := k.queueKeyChange(ctx, tx, user, api.KeyChangeCrossSigning); err != nil {
				return err
			}
		}
		if changed[storage.KeyTypeUserSigning] {
			queued = true
			return k.queueKeyChange(ctx, tx, user, api.KeyChangeUserSigning)
		}
		return nil
	})
	if err == nil && queued {
		k.publish(ctx)
	}
	return err
}

func failure(code, format string, args ...any) api.KeyFailure {
	return api.KeyFailure{Errcode: code, Error: fmt.Sprintf(format, args...)}
}

// signedObject is what /keys/signatures/upload carries for one key.
type signedObject struct {
	raw  json.RawMessage
	sigs map[string]string // the uploader's signatures
}

// stripped is the canonical JSON of a key without signatures and
// unsigned, to compare what was signed with what is stored.
func stripped(raw []byte) []byte {
	b, err := withoutFields(raw, "signatures", "unsigned")
	if err != nil {
		return nil
	}
	return b
}

// UploadSignatures implements api.KeysAPI, as Synapse does: the user's own
// devices signed by its self-signing key, its master key signed by its
// devices, and other users' master keys (local ones as stored, remote ones
// as remoteMasters has them) signed by its user-signing key. Signatures
// already stored are skipped.
func (k *Keys) UploadSignatures(ctx context.Context, userID string, signed map[string]map[string]json.RawMessage, remoteMasters map[string]json.RawMessage) (map[string]map[string]api.KeyFailure, error) {
	failures := map[string]map[string]api.KeyFailure{}
	fail := func(u, key string, f api.KeyFailure) {
		if failures[u] == nil {
			failures[u] = map[string]api.KeyFailure{}
		}
		failures[u][key] = f
	}
	users := make([]string, 0, len(signed)+1)
	for u := range signed {
		users = append(users, u)
	}
	if !slices.Contains(users, userID) {
		users = append(users, userID)
	}
	slices.Sort(users)
	var sigs []storage.Signature
	var devicesSigned []string
	masterSigned, othersSigned := false, false
	queued := false
	err := k.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		cross, err := storage.SelectCrossSigningKeys(ctx, tx, users)
		if err != nil {
			return err
		}
		devs, err := storage.SelectDeviceKeys(ctx, tx, []string{userID})
		if err != nil {
			return err
		}
		stored, err := storage.SelectSignatures(ctx, tx, users, userID)
		if err != nil {
			return err
		}
		have := map[storage.Signature]bool{}
		for _, s := range stored {
			s.Signature = ""
			have[s] = true
		}
		devices := make(map[string]storage.DeviceKeys, len(devs))
		for _, d := range devs {
			devices[d.DeviceID] = d
		}
		csKey := func(u, typ string) *crossSigningKey {
			row, ok := cross[u][typ]
			if !ok {
				return nil
			}
			key, err := storedCrossSigningKey(row.KeyJSON)
			if err != nil {
				return nil
			}
			return key
		}
		add := func(s storage.Signature) bool {
			probe := s
			probe.Signature = ""
			if have[probe] {
				return false
			}
			have[probe] = true
			sigs = append(sigs, s)
			return true
		}
		for target, objs := range signed {
			var targetMaster *crossSigningKey
			if k.isLocal(target) {
				targetMaster = csKey(target, storage.KeyTypeMaster)
			} else {
				targetMaster = remoteMaster(target, remoteMasters[target])
			}
			for keyID, raw := range objs {
				obj, f := parseSigned(raw, userID)
				if f != nil {
					fail(target, keyID, *f)
					continue
				}
				if target == userID {
					f = k.checkSelfSignature(userID, keyID, obj, csKey(userID, storage.KeyTypeMaster), csKey(userID, storage.KeyTypeSelfSigning), devices, func(s storage.Signature, master bool) {
						if add(s) {
							if master {
								masterSigned = true
							} else if !slices.Contains(devicesSigned, s.TargetKeyID) {
								devicesSigned = append(devicesSigned, s.TargetKeyID)
							}
						}
					})
				} else {
					f = checkUserSignature(userID, target, keyID, obj, csKey(userID, storage.KeyTypeUserSigning), targetMaster, func(s storage.Signature) {
						if add(s) {
							othersSigned = true
						}
					})
				}
				if f != nil {
					fail(target, keyID, *f)
				}
			}
		}
		if len(sigs) == 0 {
			return nil
		}
		if err := storage.UpsertSignatures(ctx, tx, sigs); err != nil {
			return err
		}
		queued = true
		slices.Sort(devicesSigned)
		changes, err := k.devicesWithKeys(ctx, tx, userID, devicesSigned)
		if err != nil {
			return err
		}
		if err := k.queueDeviceChanges(ctx, tx, userID, changes); err != nil {
			return err
		}
		if masterSigned {
			if err := k.queueKeyChange(ctx, tx, userID, api.KeyChangeCrossSigning); err != nil {
				return err
			}
		}
		if othersSigned {
			return k.queueKeyChange(ctx, tx, userID, api.KeyChangeUserSigning)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if queued {
		k.publish(ctx)
	}
	return failures, nil
}

// parseSigned checks that raw is an object signed by userID.
func parseSigned(raw json.RawMessage, userID string) (*signedObject, *api.KeyFailure) {
	var obj struct {
		Signatures signatures `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		f := failure(mxerr.CodeInvalidParam, "Invalid parameter")
		return nil, &f
	}
	if len(obj.Signatures[userID]) == 0 {
		f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
		return nil, &f
	}
	return &signedObject{raw: raw, sigs: obj.Signatures[userID]}, nil
}

// checkSelfSignature checks a signature of the user's own key keyID: the
// master key (by devices) or a device (by the self-signing key), and
// passes the signatures to store to add.
func (k *Keys) checkSelfSignature(userID, keyID string, obj *signedObject, master, ssk *crossSigningKey, devices map[string]storage.DeviceKeys, add func(s storage.Signature, master bool)) *api.KeyFailure {
	if master != nil && keyID == master.PublicKey {
		// The master key, signed by devices of the user.
		if !bytes.Equal(stripped(obj.raw), stripped(master.JSON)) {
			f := failure(mxerr.CodeUnknown, "Key does not match")
			return &f
		}
		var storedSigs struct {
			Signatures signatures `json:"signatures"`
		}
		_ = json.Unmarshal(master.JSON, &storedSigs)
		var found []storage.Signature
		for signer, sig := range obj.sigs {
			if storedSigs.Signatures[userID][signer] == sig {
				continue // as uploaded with the key (its self-signature)
			}
			alg, dev, _ := strings.Cut(signer, ":")
			d, ok := devices[dev]
			var pub string
			if ok {
				var dk struct {
					Keys map[string]string `json:"keys"`
				}
				_ = json.Unmarshal([]byte(d.KeyJSON), &dk)
				pub = dk.Keys[signer]
			}
			verify, err := decodeEd25519(pub)
			if alg != "ed25519" || err != nil {
				f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
				return &f
			}
			if err := gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(signer), verify, obj.raw); err != nil {
				f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
				return &f
			}
			found = append(found, storage.Signature{TargetUserID: userID, TargetKeyID: keyID, SignerUserID: userID, SignerKeyID: signer, Signature: sig})
		}
		for _, s := range found {
			add(s, true)
		}
		return nil
	}
	// A device, signed by the self-signing key.
	if ssk == nil {
		f := failure(mxerr.CodeNotFound, "No self_signing key found for %s", userID)
		return &f
	}
	sig, ok := obj.sigs[ssk.KeyID]
	if !ok {
		f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
		return &f
	}
	d, ok := devices[keyID]
	if !ok {
		f := failure(mxerr.CodeNotFound, "Unknown device")
		return &f
	}
	if !bytes.Equal(stripped(obj.raw), stripped([]byte(d.KeyJSON))) {
		f := failure(mxerr.CodeUnknown, "Key does not match")
		return &f
	}
	if err := gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(ssk.KeyID), ssk.Verify, obj.raw); err != nil {
		f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
		return &f
	}
	add(storage.Signature{TargetUserID: userID, TargetKeyID: keyID, SignerUserID: userID, SignerKeyID: ssk.KeyID, Signature: sig}, false)
	return nil
}

// checkUserSignature checks a signature of another user's master key by
// the user's user-signing key.
func checkUserSignature(userID, target, keyID string, obj *signedObject, usk, targetMaster *crossSigningKey, add func(storage.Signature)) *api.KeyFailure {
	switch {
	case usk == nil:
		f := failure(mxerr.CodeNotFound, "No user_signing key found for %s", userID)
		return &f
	case targetMaster == nil:
		f := failure(mxerr.CodeNotFound, "No master key found for %s", target)
		return &f
	case keyID != targetMaster.PublicKey:
		f := failure(mxerr.CodeNotFound, "Unknown device")
		return &f
	}
	sig, ok := obj.sigs[usk.KeyID]
	if !ok {
		f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
		return &f
	}
	if !bytes.Equal(stripped(obj.raw), stripped(targetMaster.JSON)) {
		f := failure(mxerr.CodeUnknown, "Key does not match")
		return &f
	}
	if err := gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(usk.KeyID), usk.Verify, obj.raw); err != nil {
		f := failure(mxerr.CodeInvalidSignature, "Invalid signature")
		return &f
	}
	add(storage.Signature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: userID, SignerKeyID: usk.KeyID, Signature: sig})
	return nil
}
