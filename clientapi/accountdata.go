package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// msc3391Prefix is the unstable prefix of account data deletion (MSC3391).
const msc3391Prefix = "/_matrix/client/unstable/org.matrix.msc3391"

// serverManagedAccountData are types clients may not set through the
// account data API.
var serverManagedAccountData = map[string]bool{"m.fully_read": true, "m.push_rules": true}

// accountDataTarget checks the caller and returns the room ID ("" for
// global account data) and type of an account data route.
func accountDataTarget(r *http.Request) (userID, roomID, dataType string, err error) {
	dev := httputil.DeviceFrom(r.Context())
	vars := httputil.Vars(r)
	if vars["userId"] != dev.UserID {
		return "", "", "", mxerr.Forbidden("Cannot access the account data of other users")
	}
	if rid, ok := vars["roomId"]; ok {
		if _, err := spec.NewRoomID(rid); err != nil {
			return "", "", "", mxerr.InvalidParam("%q is not a valid room ID", rid)
		}
		roomID = rid
	}
	return dev.UserID, roomID, vars["type"], nil
}

// GET /_matrix/client/v3/user/{userId}/account_data/{type} and the room variant
func (c *ClientAPI) getAccountData(r *http.Request) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	content, err := c.users.QueryAccountData(r.Context(), userID, roomID, dataType)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("Account data not found")
	}
	return content, err
}

// PUT /_matrix/client/v3/user/{userId}/account_data/{type} and the room variant.
// Content {} deletes the item (MSC3391, as Synapse with it enabled): an
// empty object is what clients wrote to clear an item before deletion
// existed, and a deleted item reads as {} in incremental syncs.
func (c *ClientAPI) putAccountData(r *http.Request) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	if serverManagedAccountData[dataType] {
		return nil, mxerr.BadJSON("Cannot set %s through this API", dataType).WithStatus(http.StatusMethodNotAllowed)
	}
	var content json.RawMessage
	if err := httputil.DecodeJSON(r, &content); err != nil {
		return nil, err
	}
	if len(content) > api.MaxAccountDataBytes {
		return nil, mxerr.TooLarge("Account data is limited to %d bytes", api.MaxAccountDataBytes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(content, &fields); err == nil && len(fields) == 0 {
		return struct{}{}, c.users.DeleteAccountData(r.Context(), userID, roomID, dataType)
	}
	return struct{}{}, c.users.PutAccountData(r.Context(), userID, roomID, dataType, content)
}

// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/account_data/{type}
// and the room variant (MSC3391).
func (c *ClientAPI) deleteAccountData(r *http.Request) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	if serverManagedAccountData[dataType] {
		return nil, mxerr.BadJSON("Cannot delete %s through this API", dataType).WithStatus(http.StatusMethodNotAllowed)
	}
	return struct{}{}, c.users.DeleteAccountData(r.Context(), userID, roomID, dataType)
}

// maxTagBytes is the longest tag name the spec allows.
const maxTagBytes = 255

// tagTarget checks the caller, the room ID and the tag of a tag route.
func tagTarget(r *http.Request) (userID, roomID, tag string, err error) {
	if userID, roomID, _, err = accountDataTarget(r); err != nil {
		return "", "", "", err
	}
	tag = httputil.Vars(r)["tag"]
	if len(tag) > maxTagBytes {
		return "", "", "", mxerr.InvalidParam("A tag is at most %d bytes", maxTagBytes)
	}
	return userID, roomID, tag, nil
}

// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags: the tags of
// the user's m.tag room account data, {} when none are set.
func (c *ClientAPI) getRoomTags(r *http.Request) (any, error) {
	userID, roomID, _, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	content, err := c.users.QueryAccountData(r.Context(), userID, roomID, api.RoomTagType)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return nil, err
	}
	var item struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if content != nil {
		_ = json.Unmarshal(content, &item) // a malformed m.tag has no tags
	}
	if item.Tags == nil {
		item.Tags = map[string]json.RawMessage{}
	}
	return item, nil
}

// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}: the body
// is the tag's object, kept whole as Synapse does; its order, when given,
// must be a number.
func (c *ClientAPI) putRoomTag(r *http.Request) (any, error) {
	userID, roomID, tag, err := tagTarget(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body == nil {
		return nil, mxerr.BadJSON("The tag must be a JSON object")
	}
	if order, ok := body["order"]; ok {
		var f float64
		if json.Unmarshal(order, &f) != nil {
			return nil, mxerr.BadJSON("order must be a number")
		}
	}
	content, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return c.updateRoomTag(r, userID, roomID, tag, content)
}

// DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
func (c *ClientAPI) deleteRoomTag(r *http.Request) (any, error) {
	userID, roomID, tag, err := tagTarget(r)
	if err != nil {
		return nil, err
	}
	return c.updateRoomTag(r, userID, roomID, tag, nil)
}

func (c *ClientAPI) updateRoomTag(r *http.Request, userID, roomID, tag string, content json.RawMessage) (any, error) {
	err := c.users.UpdateRoomTag(r.Context(), userID, roomID, tag, content)
	if errors.Is(err, api.ErrAccountDataTooLarge) {
		return nil, mxerr.TooLarge("The room's tags are limited to %d bytes", api.MaxAccountDataBytes)
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
