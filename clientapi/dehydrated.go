package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// Dehydrated devices (MSC3814, unstable prefix org.matrix.msc3814.v1, as
// Synapse serves it): a user uploads one device with its keys and opaque
// data, which a later client rehydrates after reading the device's
// to-device messages (served by the sync API, which owns the inboxes).
// Errors follow Synapse's request validation: a missing field is
// M_MISSING_PARAM, a field of the wrong type M_BAD_JSON.

// dehydratedDevicePath is the unstable endpoint of the dehydrated device.
const dehydratedDevicePath = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"

func (c *ClientAPI) registerDehydrated(srv *httputil.Server) {
	auth := httputil.Auth()
	srv.Handle(http.MethodPut, dehydratedDevicePath, c.putDehydratedDevice, auth)
	srv.Handle(http.MethodGet, dehydratedDevicePath, c.getDehydratedDevice, auth)
	srv.Handle(http.MethodDelete, dehydratedDevicePath, c.deleteDehydratedDevice, auth)
}

// isNull reports whether a field is absent or null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device
func (c *ClientAPI) putDehydratedDevice(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		DeviceID                 *string                    `json:"device_id"`
		DeviceData               json.RawMessage            `json:"device_data"`
		InitialDeviceDisplayName *string                    `json:"initial_device_display_name"`
		DeviceKeys               json.RawMessage            `json:"device_keys"`
		OneTimeKeys              map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys             map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.DeviceID == nil {
		return nil, mxerr.MissingParam("Missing device_id")
	}
	if *req.DeviceID == "" {
		return nil, mxerr.InvalidParam("device_id must not be empty")
	}
	if err := checkDeviceID(*req.DeviceID); err != nil {
		return nil, err
	}
	if isNull(req.DeviceData) {
		return nil, mxerr.MissingParam("Missing device_data")
	}
	var data struct {
		Algorithm json.RawMessage `json:"algorithm"`
	}
	if err := httputil.UnmarshalObject(req.DeviceData, &data); err != nil {
		return nil, mxerr.BadJSON("device_data must be an object")
	}
	if isNull(data.Algorithm) {
		return nil, mxerr.MissingParam("Missing device_data.algorithm")
	}
	var alg string
	if err := json.Unmarshal(data.Algorithm, &alg); err != nil {
		return nil, mxerr.BadJSON("device_data.algorithm must be a string")
	}
	// Synapse refuses a dehydrated device without keys (with M_UNKNOWN;
	// the more precise code here).
	if isNull(req.DeviceKeys) {
		return nil, mxerr.MissingParam("Device key(s) not found, these must be provided.")
	}
	err := c.users.StoreDehydratedDevice(r.Context(), api.StoreDehydratedDevice{
		DehydratedDevice: api.DehydratedDevice{UserID: dev.UserID, DeviceID: *req.DeviceID, DeviceData: req.DeviceData},
		DisplayName:      req.InitialDeviceDisplayName,
		DeviceKeys:       req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: req.FallbackKeys,
	})
	if err != nil {
		return nil, keysError(err, mxerr.CodeBadJSON)
	}
	return map[string]string{"device_id": *req.DeviceID}, nil
}

// GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device
func (c *ClientAPI) getDehydratedDevice(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	d, err := c.users.QueryDehydratedDevice(r.Context(), dev.UserID)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("No dehydrated device available")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": d.DeviceID, "device_data": d.DeviceData}, nil
}

// DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device
func (c *ClientAPI) deleteDehydratedDevice(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	id, err := c.users.DeleteDehydratedDevice(r.Context(), dev.UserID)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("No dehydrated device available")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}
