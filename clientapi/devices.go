package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// maxDeviceNameLength bounds device display names, as Synapse does.
const maxDeviceNameLength = 100

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d *api.DeviceInfo) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// GET /_matrix/client/v3/devices
func (c *ClientAPI) getDevices(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	ds, err := c.users.QueryDevices(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, len(ds))
	for i := range ds {
		out[i] = toDeviceJSON(&ds[i])
	}
	return map[string]any{"devices": out}, nil
}

// GET /_matrix/client/v3/devices/{deviceId}
func (c *ClientAPI) getDevice(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	d, err := c.users.QueryDevice(r.Context(), dev.UserID, httputil.Vars(r)["deviceId"])
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("Unknown device")
	}
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(d), nil
}

// PUT /_matrix/client/v3/devices/{deviceId}
func (c *ClientAPI) putDevice(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	deviceID := httputil.Vars(r)["deviceId"]
	if req.DisplayName != nil && utf8.RuneCountInString(*req.DisplayName) > maxDeviceNameLength {
		return nil, mxerr.InvalidParam("Device display name is too long (%d characters at most)", maxDeviceNameLength)
	}
	if dev.AppServiceID != "" {
		// MSC4190: a service creates its users' devices itself (they get
		// no access token; the service acts as them with device_id),
		// 201 when created. Synapse allows every service this.
		if err := checkDeviceID(deviceID); err != nil {
			return nil, err
		}
		created, err := c.users.UpsertDevice(r.Context(), dev.UserID, deviceID, req.DisplayName)
		if err != nil {
			return nil, err
		}
		if created {
			return &httputil.Response{Status: http.StatusCreated, Body: struct{}{}}, nil
		}
		return struct{}{}, nil
	}
	if req.DisplayName == nil {
		// Nothing to change; the device must still exist.
		_, err := c.users.QueryDevice(r.Context(), dev.UserID, deviceID)
		if errors.Is(err, api.ErrNotFound) {
			return nil, mxerr.NotFound("Unknown device")
		}
		return struct{}{}, err
	}
	err := c.users.UpdateDevice(r.Context(), dev.UserID, deviceID, *req.DisplayName)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("Unknown device")
	}
	return struct{}{}, err
}

// DELETE /_matrix/client/v3/devices/{deviceId}
func (c *ClientAPI) deleteDevice(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	del := func() (any, error) {
		return struct{}{}, c.users.DeleteDevices(r.Context(), dev.UserID, []string{httputil.Vars(r)["deviceId"]})
	}
	if dev.AppServiceID != "" {
		// MSC4190: services delete their users' devices without
		// User-Interactive Auth.
		return del()
	}
	return c.withUIA(r, req.Auth, c.passwordUIA(r, dev.UserID), del)
}

// POST /_matrix/client/v3/delete_devices
func (c *ClientAPI) postDeleteDevices(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices *[]string       `json:"devices"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxerr.MissingParam("Missing devices")
	}
	del := func() (any, error) {
		return struct{}{}, c.users.DeleteDevices(r.Context(), dev.UserID, *req.Devices)
	}
	if dev.AppServiceID != "" {
		return del()
	}
	return c.withUIA(r, req.Auth, c.passwordUIA(r, dev.UserID), del)
}

// checkDeviceID refuses a client-chosen device ID longer than the 255 bytes
// of the spec's identifiers (400 M_INVALID_PARAM).
func checkDeviceID(id string) error {
	if len(id) > httputil.MaxIDBytes {
		return mxerr.InvalidParam("device_id is longer than %d bytes", httputil.MaxIDBytes)
	}
	return nil
}
