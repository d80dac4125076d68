package api

import (
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestSupportedRoomVersions(t *testing.T) {
	vs := SupportedRoomVersions()
	want := []gomatrixserverlib.RoomVersion{"1", "10", "11", "12", "2", "3", "4", "5", "6", "7", "8", "9"}
	if !slices.Equal(vs, want) {
		t.Fatalf("supported versions %v, want %v", vs, want)
	}
	for _, v := range []gomatrixserverlib.RoomVersion{"org.matrix.msc4242.12", gomatrixserverlib.RoomVersionPseudoIDs, "13", ""} {
		if SupportedRoomVersion(v) {
			t.Errorf("%q is supported", v)
		}
	}
}
