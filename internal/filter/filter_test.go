package filter

import (
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	f, err := Parse([]byte(`{"event_fields":["type","content.body"],"event_format":"client",
		"presence":{"types":["m.presence"],"limit":5},
		"room":{"rooms":["!a:b"],"include_leave":true,
		"timeline":{"limit":10,"types":["m.room.message"],"not_senders":["@x:y"],"contains_url":true,"lazy_load_members":true},
		"state":{"lazy_load_members":true,"include_redundant_members":true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if *f.Room.Timeline.Limit != 10 || !f.Room.State.LazyLoadMembers || !*f.Room.Timeline.ContainsURL || !f.Room.IncludeLeave {
		t.Fatalf("parsed %+v", f)
	}
	if f.Room.Ephemeral != nil || f.AccountData != nil {
		t.Fatal("absent sections must stay nil")
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"event_format":"xml"}`, "event_format"},
		{`{"room":{"timeline":{"limit":-1}}}`, "room.timeline.limit"},
		{`{"room":{"timeline":{"limit":"ten"}}}`, "limit"},
		{`{"room":{"rooms":["#alias:b"]}}`, "room.rooms"},
		{`{"presence":{"senders":["bob"]}}`, "presence.senders"},
		{`{"room":{"state":{"types":"m.room.name"}}}`, "types"},
		{`{"event_fields":[1]}`, "event_fields"},
		{`[]`, "filter"},
		{`{"room":null}`, "room"},
		{`{"event_format":null}`, "event_format"},
		{`{"room":{"timeline":{"types":[null]}}}`, "room.timeline.types"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want mention of %s", tc.in, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"room":{"timeline":{"limit":10}}}`))
	f.Add([]byte(`{"event_fields":["a.b"],"presence":{"senders":["@a:b"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		flt, err := Parse(b)
		if err == nil && flt == nil {
			t.Fatal("nil filter without error")
		}
	})
}
