package api

import (
	"context"
	"encoding/json"
)

// DehydratedDevice is a user's MSC3814 dehydrated device: a real device of
// the user (listed, with queryable and claimable keys) that has no access
// token, and the opaque data from which a client rehydrates it.
type DehydratedDevice struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	// DeviceData is the client's JSON object, stored as given.
	DeviceData json.RawMessage `json:"device_data"`
}

// StoreDehydratedDevice is what PUT /dehydrated_device takes.
type StoreDehydratedDevice struct {
	DehydratedDevice
	// DisplayName is the initial display name of a new device; nil: none.
	DisplayName *string `json:"display_name,omitempty"`
	// Keys are the device's keys, as UploadKeys takes them (their user and
	// device IDs are those of the dehydrated device).
	DeviceKeys   json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// DehydratedDevicesAPI manages dehydrated devices (MSC3814, as Synapse
// serves it). Each user has at most one; deleting the device by any means
// (DeleteDevices, logout/all, deactivation) forgets it too.
type DehydratedDevicesAPI interface {
	// StoreDehydratedDevice creates the device (or takes over an existing
	// device of that ID, as Synapse does) without an access token,
	// uploads its keys, stores its data and deletes the user's previous
	// dehydrated device with its keys and to-device inbox. It fails with
	// the errors of UploadKeys; the previous dehydrated device is then
	// kept, unless it had the same device ID (it is replaced from the
	// start, as in Synapse).
	StoreDehydratedDevice(ctx context.Context, req StoreDehydratedDevice) error
	// QueryDehydratedDevice returns the user's dehydrated device, or
	// ErrNotFound.
	QueryDehydratedDevice(ctx context.Context, userID string) (*DehydratedDevice, error)
	// DeleteDehydratedDevice deletes the user's dehydrated device as
	// DeleteDevices does and returns its ID; ErrNotFound when there is
	// none.
	DeleteDehydratedDevice(ctx context.Context, userID string) (deviceID string, err error)
}
