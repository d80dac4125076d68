package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Server-side key backups: /room_keys/version and /room_keys/keys. The
// user API stores them; this file checks the shapes of the requests and
// maps the user API's errors. Where the spec is silent this follows
// Synapse: any algorithm is accepted (only the spec's needs a public_key
// in auth_data), a non-boolean is_verified is M_INVALID_PARAM, GET of a
// room without keys is {"sessions": {}} and of a missing session 404,
// and guests have no backups.

const (
	// backupAlgorithmCurve25519 is the spec's one backup algorithm.
	backupAlgorithmCurve25519 = "m.megolm_backup.v1.curve25519-aes-sha2"
	// maxBackupIDBytes bounds algorithm names, room IDs and session IDs
	// (the spec's bound on identifiers; megolm session IDs are 43 bytes).
	maxBackupIDBytes = 255
	// maxRoomKeysBody is the body cap of PUT /room_keys/keys: a key is
	// about 1 KiB, so some 30,000 sessions in one upload.
	maxRoomKeysBody = 32 << 20
	// maxKeyIndex is the largest first_message_index or forwarded_count:
	// canonical JSON's integer bound.
	maxKeyIndex = 1<<53 - 1
	// codeWrongRoomKeysVersion: the version written to is not the current
	// one.
	codeWrongRoomKeysVersion = "M_WRONG_ROOM_KEYS_VERSION"
)

// backupError maps the user API's key backup errors to Matrix errors.
func backupError(err error) error {
	var wrong *userapi.WrongVersionError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &wrong):
		return mxerr.New(codeWrongRoomKeysVersion, "Wrong backup version.").WithStatus(http.StatusForbidden).
			With("current_version", wrong.Current)
	case errors.Is(err, userapi.ErrNotFound):
		return mxerr.NotFound("Unknown backup version")
	case errors.Is(err, userapi.ErrAlgorithmMismatch):
		return mxerr.InvalidParam("Algorithm does not match")
	}
	return err
}

// backupFields is a JSON object read field by field.
type backupFields map[string]json.RawMessage

// has reports whether a field is present and not null.
func (f backupFields) has(key string) bool {
	v, ok := f[key]
	return ok && string(v) != "null"
}

// object returns a field that must be a JSON object.
func (f backupFields) object(key, name string) (backupFields, error) {
	if !f.has(key) {
		return nil, mxerr.MissingParam("Missing %s", name)
	}
	var m backupFields
	if !isBackupObject(f[key]) || json.Unmarshal(f[key], &m) != nil {
		return nil, mxerr.BadJSON("%s must be an object", name)
	}
	return m, nil
}

// str returns a field that must be a string.
func (f backupFields) str(key, name string) (string, error) {
	if !f.has(key) {
		return "", mxerr.MissingParam("Missing %s", name)
	}
	var s string
	if json.Unmarshal(f[key], &s) != nil {
		return "", mxerr.BadJSON("%s must be a string", name)
	}
	return s, nil
}

func isBackupObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// compactBackupJSON returns raw without insignificant whitespace.
func compactBackupJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// readBackupFields reads a request body that must be a JSON object.
func readBackupFields(r *http.Request) (backupFields, error) {
	var f backupFields
	if err := httputil.DecodeJSON(r, &f); err != nil {
		return nil, err
	}
	return f, nil
}

// backupVersionBody reads the algorithm and auth_data of POST
// /room_keys/version and PUT /room_keys/version/{version}.
func backupVersionBody(f backupFields) (algorithm string, authData json.RawMessage, err error) {
	if algorithm, err = f.str("algorithm", "algorithm"); err != nil {
		return "", nil, err
	}
	if algorithm == "" || len(algorithm) > maxBackupIDBytes {
		return "", nil, mxerr.InvalidParam("algorithm must be 1 to %d bytes", maxBackupIDBytes)
	}
	auth, err := f.object("auth_data", "auth_data")
	if err != nil {
		return "", nil, err
	}
	if algorithm == backupAlgorithmCurve25519 {
		key, err := auth.str("public_key", "auth_data.public_key")
		if err != nil {
			return "", nil, err
		}
		if key == "" {
			return "", nil, mxerr.InvalidParam("auth_data.public_key must not be empty")
		}
	}
	// signatures is optional; null is its absence (mautrix-go sends null
	// for an unsigned auth_data, and Synapse takes it).
	if auth.has("signatures") {
		if _, err := auth.object("signatures", "auth_data.signatures"); err != nil {
			return "", nil, err
		}
	}
	return algorithm, compactBackupJSON(f["auth_data"]), nil
}

// POST /_matrix/client/v3/room_keys/version
func (c *ClientAPI) postRoomKeysVersion(r *http.Request) (any, error) {
	f, err := readBackupFields(r)
	if err != nil {
		return nil, err
	}
	algorithm, authData, err := backupVersionBody(f)
	if err != nil {
		return nil, err
	}
	version, err := c.users.CreateKeyBackup(r.Context(), httputil.DeviceFrom(r.Context()).UserID, algorithm, authData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": version}, nil
}

// GET /_matrix/client/v3/room_keys/version
func (c *ClientAPI) getRoomKeysVersionCurrent(r *http.Request) (any, error) {
	b, err := c.users.QueryKeyBackup(r.Context(), httputil.DeviceFrom(r.Context()).UserID, "")
	if errors.Is(err, userapi.ErrNotFound) {
		return nil, mxerr.NotFound("No current backup version")
	}
	return b, err
}

// GET /_matrix/client/v3/room_keys/version/{version}
func (c *ClientAPI) getRoomKeysVersion(r *http.Request) (any, error) {
	b, err := c.users.QueryKeyBackup(r.Context(), httputil.DeviceFrom(r.Context()).UserID, httputil.Vars(r)["version"])
	if err != nil {
		return nil, backupError(err)
	}
	return b, nil
}

// PUT /_matrix/client/v3/room_keys/version/{version}
func (c *ClientAPI) putRoomKeysVersion(r *http.Request) (any, error) {
	version := httputil.Vars(r)["version"]
	f, err := readBackupFields(r)
	if err != nil {
		return nil, err
	}
	algorithm, authData, err := backupVersionBody(f)
	if err != nil {
		return nil, err
	}
	if f.has("version") {
		v, err := f.str("version", "version")
		if err != nil {
			return nil, err
		}
		if v != version {
			return nil, mxerr.InvalidParam("Version in body does not match")
		}
	}
	err = c.users.UpdateKeyBackup(r.Context(), httputil.DeviceFrom(r.Context()).UserID, version, algorithm, authData)
	return struct{}{}, backupError(err)
}

// DELETE /_matrix/client/v3/room_keys/version/{version}
func (c *ClientAPI) deleteRoomKeysVersion(r *http.Request) (any, error) {
	err := c.users.DeleteKeyBackup(r.Context(), httputil.DeviceFrom(r.Context()).UserID, httputil.Vars(r)["version"])
	return struct{}{}, backupError(err)
}

// roomKeysTarget returns the caller, the version query parameter
// (required) and the room and session of a /room_keys/keys route ("" when
// the route has none).
func roomKeysTarget(r *http.Request) (userID, version, roomID, sessionID string, err error) {
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", "", "", "", mxerr.MissingParam("Missing version query parameter")
	}
	vars := httputil.Vars(r)
	return httputil.DeviceFrom(r.Context()).UserID, version, vars["roomId"], vars["sessionId"], nil
}

// checkBackupIDs checks the room and session ID of a key to store.
func checkBackupIDs(roomID, sessionID string) error {
	if len(roomID) < 2 || roomID[0] != '!' || len(roomID) > maxBackupIDBytes {
		return mxerr.InvalidParam("Invalid room ID %q", roomID)
	}
	if sessionID == "" || len(sessionID) > maxBackupIDBytes {
		return mxerr.InvalidParam("Session IDs must be 1 to %d bytes", maxBackupIDBytes)
	}
	return nil
}

// An upload is decoded in one pass into these types (a big upload is
// megabytes of JSON: each extra pass over it shows), then checked field by
// field. A field absent or null is a nil or "null" RawMessage.
type (
	uploadBody struct {
		Rooms map[string]*uploadRoom `json:"rooms"`
	}
	uploadRoom struct {
		Sessions map[string]*uploadKey `json:"sessions"`
	}
	uploadKey struct {
		FirstMessageIndex json.RawMessage `json:"first_message_index"`
		ForwardedCount    json.RawMessage `json:"forwarded_count"`
		IsVerified        json.RawMessage `json:"is_verified"`
		SessionData       json.RawMessage `json:"session_data"`
	}
)

// decodeBackupUpload decodes a body that must be a JSON object into v: invalid
// JSON is M_NOT_JSON; another value, or a field of the wrong type,
// M_BAD_JSON. It validates the body once (httputil.UnmarshalObject would
// twice).
func decodeBackupUpload(b []byte, v any) error {
	if !isBackupObject(b) {
		if !httputil.ValidJSON(b) {
			return mxerr.NotJSON("Content not JSON")
		}
		return mxerr.BadJSON("Content must be a JSON object")
	}
	err := json.Unmarshal(b, v)
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &syntaxErr):
		return mxerr.NotJSON("Content not JSON")
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return mxerr.BadJSON("%s has the wrong type: expected %s", typeErr.Field, backupJSONKind(typeErr.Type.Kind().String()))
	}
	return mxerr.BadJSON("Malformed JSON: %v", err)
}

// backupJSONKind names a Go kind as the JSON type it decodes.
func backupJSONKind(kind string) string {
	switch kind {
	case "map", "struct", "ptr":
		return "an object"
	case "slice":
		return "an array"
	}
	return "a string"
}

// backupMissing reports whether an uploaded field is absent or null.
func backupMissing(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }

// backupIndex reads first_message_index or forwarded_count: a
// non-negative integer (10.0 is one).
func backupIndex(raw json.RawMessage, name string) (int64, error) {
	if backupMissing(raw) {
		return 0, mxerr.MissingParam("Missing %s", name)
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, mxerr.BadJSON("%s must be an integer", name)
	}
	n := json.Number(raw)
	i, err := n.Int64()
	if err != nil {
		fl, ferr := n.Float64()
		if ferr != nil || fl != float64(int64(fl)) {
			return 0, mxerr.InvalidParam("%s must be an integer", name)
		}
		i = int64(fl)
	}
	if i < 0 || i > maxKeyIndex {
		return 0, mxerr.InvalidParam("%s must be between 0 and %d", name, int64(maxKeyIndex))
	}
	return i, nil
}

// roomKeyOf checks an uploaded KeyBackupData; name says where it is in
// the body.
func roomKeyOf(u *uploadKey, roomID, sessionID, name string) (userapi.RoomKey, error) {
	k := userapi.RoomKey{RoomID: roomID, SessionID: sessionID}
	if err := checkBackupIDs(roomID, sessionID); err != nil {
		return k, err
	}
	if u == nil {
		return k, mxerr.BadJSON("%s must be an object", name)
	}
	var err error
	if k.FirstMessageIndex, err = backupIndex(u.FirstMessageIndex, name+".first_message_index"); err != nil {
		return k, err
	}
	if k.ForwardedCount, err = backupIndex(u.ForwardedCount, name+".forwarded_count"); err != nil {
		return k, err
	}
	switch string(u.IsVerified) {
	case "true":
		k.IsVerified = true
	case "false":
	case "", "null":
		return k, mxerr.MissingParam("Missing %s.is_verified", name)
	default:
		return k, mxerr.InvalidParam("%s.is_verified must be a boolean", name)
	}
	if backupMissing(u.SessionData) {
		return k, mxerr.MissingParam("Missing %s.session_data", name)
	}
	if !isBackupObject(u.SessionData) {
		return k, mxerr.BadJSON("%s.session_data must be an object", name)
	}
	k.SessionData = u.SessionData
	return k, nil
}

// roomKeysOf checks the uploaded keys of a room and appends them to keys.
func roomKeysOf(room *uploadRoom, roomID, name string, keys []userapi.RoomKey) ([]userapi.RoomKey, error) {
	if err := checkBackupIDs(roomID, "-"); err != nil {
		return nil, err
	}
	if room == nil || room.Sessions == nil {
		return nil, mxerr.MissingParam("Missing %s.sessions", name)
	}
	for sessionID, u := range room.Sessions {
		k, err := roomKeyOf(u, roomID, sessionID, name+".sessions."+sessionID)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// roomKeysUpload reads the body of PUT /room_keys/keys[/{roomId}[/{sessionId}]].
func roomKeysUpload(r *http.Request, roomID, sessionID string) ([]userapi.RoomKey, error) {
	b, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		var u uploadKey
		if err := decodeBackupUpload(b, &u); err != nil {
			return nil, err
		}
		k, err := roomKeyOf(&u, roomID, sessionID, "body")
		if err != nil {
			return nil, err
		}
		return []userapi.RoomKey{k}, nil
	case roomID != "":
		var room uploadRoom
		if err := decodeBackupUpload(b, &room); err != nil {
			return nil, err
		}
		return roomKeysOf(&room, roomID, "body", nil)
	}
	var body uploadBody
	if err := decodeBackupUpload(b, &body); err != nil {
		return nil, err
	}
	if body.Rooms == nil {
		return nil, mxerr.MissingParam("Missing rooms")
	}
	n := 0
	for _, room := range body.Rooms {
		if room != nil {
			n += len(room.Sessions)
		}
	}
	keys := make([]userapi.RoomKey, 0, n)
	for id, room := range body.Rooms {
		if keys, err = roomKeysOf(room, id, "rooms."+id, keys); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// PUT /_matrix/client/v3/room_keys/keys (also /{roomId} and /{roomId}/{sessionId})
func (c *ClientAPI) putRoomKeys(r *http.Request) (any, error) {
	userID, version, roomID, sessionID, err := roomKeysTarget(r)
	if err != nil {
		return nil, err
	}
	keys, err := roomKeysUpload(r, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	counts, err := c.users.PutRoomKeys(r.Context(), userID, version, keys)
	if err != nil {
		return nil, backupError(err)
	}
	return counts, nil
}

// keyBackupData is a stored key as GET /room_keys/keys returns it.
type keyBackupData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// roomKeyBackup is the keys of a room as GET /room_keys/keys returns them.
type roomKeyBackup struct {
	Sessions map[string]keyBackupData `json:"sessions"`
}

// GET /_matrix/client/v3/room_keys/keys (also /{roomId} and /{roomId}/{sessionId})
func (c *ClientAPI) getRoomKeys(r *http.Request) (any, error) {
	userID, version, roomID, sessionID, err := roomKeysTarget(r)
	if err != nil {
		return nil, err
	}
	keys, err := c.users.QueryRoomKeys(r.Context(), userID, version, roomID, sessionID)
	if err != nil {
		return nil, backupError(err)
	}
	rooms := map[string]roomKeyBackup{}
	for _, k := range keys {
		room, ok := rooms[k.RoomID]
		if !ok {
			room = roomKeyBackup{Sessions: map[string]keyBackupData{}}
			rooms[k.RoomID] = room
		}
		room.Sessions[k.SessionID] = keyBackupData{
			FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified, SessionData: k.SessionData,
		}
	}
	switch {
	case sessionID != "":
		k, ok := rooms[roomID].Sessions[sessionID]
		if !ok {
			return nil, mxerr.NotFound("No room key found")
		}
		return k, nil
	case roomID != "":
		if room, ok := rooms[roomID]; ok {
			return room, nil
		}
		return roomKeyBackup{Sessions: map[string]keyBackupData{}}, nil
	}
	return map[string]any{"rooms": rooms}, nil
}

// DELETE /_matrix/client/v3/room_keys/keys (also /{roomId} and /{roomId}/{sessionId})
func (c *ClientAPI) deleteRoomKeys(r *http.Request) (any, error) {
	userID, version, roomID, sessionID, err := roomKeysTarget(r)
	if err != nil {
		return nil, err
	}
	counts, err := c.users.DeleteRoomKeys(r.Context(), userID, version, roomID, sessionID)
	if err != nil {
		return nil, backupError(err)
	}
	return counts, nil
}
