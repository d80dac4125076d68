package syncapi

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// The create event of a room version 12 room stays whole in stripped state
// only when it is the one whose hash is the room ID: a remote server's
// stripped state (a knock's) is unverified.
func TestWholeCreate(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV12)
	proto := gomatrixserverlib.ProtoEvent{SenderID: "@bob:remote", Type: spec.MRoomCreate, StateKey: ftStr(""),
		Content: spec.RawJSON(`{"room_version":"12"}`), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1}
	create, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "remote", "ed25519:t", key)
	if err != nil {
		t.Fatal(err)
	}
	roomID := "!" + create.EventID()[1:]
	withUnsigned, _ := sjson.SetBytes(create.JSON(), "unsigned.age", 5)

	got, ok := wholeCreate(roomID, gomatrixserverlib.RoomVersionV12, withUnsigned)
	if !ok || !gjson.GetBytes(got, "origin_server_ts").Exists() || !gjson.GetBytes(got, "signatures").Exists() ||
		gjson.GetBytes(got, "unsigned").Exists() {
		t.Fatalf("the room's create event: %v %s, want it whole without unsigned", ok, got)
	}
	forged, _ := sjson.SetBytes(create.JSON(), "content.room_version", "11")
	other := "!" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	for name, c := range map[string]struct {
		roomID  string
		version gomatrixserverlib.RoomVersion
		js      []byte
	}{
		"forged content":       {roomID, gomatrixserverlib.RoomVersionV12, forged},
		"another room":         {other, gomatrixserverlib.RoomVersionV12, create.JSON()},
		"room with a domain":   {"!x:remote", gomatrixserverlib.RoomVersionV12, create.JSON()},
		"earlier room version": {roomID, gomatrixserverlib.RoomVersionV11, create.JSON()},
		"not JSON":             {roomID, gomatrixserverlib.RoomVersionV12, []byte(`{"type":"m.room.create"`)},
	} {
		if got, ok := wholeCreate(c.roomID, c.version, c.js); ok {
			t.Errorf("%s: kept whole: %s", name, got)
		}
	}
}
