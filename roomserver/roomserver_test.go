package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/api"
)

const testServer = "test.local"

type harness struct {
	t  testing.TB
	rs *Roomserver
	in *api.Inputer
	b  *bus.Bus
}

func newHarness(t testing.TB, db *sqlutil.DB) *harness {
	t.Helper()
	return newHarnessWith(t, db, CacheSizes{})
}

// newHarnessWith is newHarness with the given cache sizes.
func newHarnessWith(t testing.TB, db *sqlutil.DB, caches CacheSizes) *harness {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx, api.Streams()...); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	rs, err := New(ctx, Config{ServerName: testServer, KeyID: "ed25519:test", PrivateKey: key, Caches: caches}, db, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	in, err := api.NewInputer(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return &harness{t: t, rs: rs, in: in, b: b}
}

func sk(s string) *string { return &s }

func proto(sender, typ string, stateKey *string, content any) api.ProtoEvent {
	c, _ := json.Marshal(content)
	return api.ProtoEvent{Sender: sender, Type: typ, StateKey: stateKey, Content: c}
}

// createRoom creates a room as alice with the usual initial state.
func (h *harness) createRoom(version, alice string, joinRule string) string {
	h.t.Helper()
	create := map[string]any{"room_version": version}
	if v := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)); v.CreatorInCreateEvent() {
		create["creator"] = alice
	}
	pl := map[string]any{"users_default": 0, "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0}
	if !gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)).PrivilegedCreators() {
		pl["users"] = map[string]int{alice: 100}
	}
	res, err := h.in.Input(context.Background(), &api.InputMessage{Local: &api.LocalInput{
		CreateVersion: version,
		Events: []api.ProtoEvent{
			proto(alice, spec.MRoomCreate, sk(""), create),
			proto(alice, spec.MRoomMember, sk(alice), map[string]any{"membership": "join"}),
			proto(alice, spec.MRoomPowerLevels, sk(""), pl),
			proto(alice, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": joinRule}),
			proto(alice, spec.MRoomHistoryVisibility, sk(""), map[string]any{"history_visibility": "shared"}),
		},
	}})
	if err != nil {
		h.t.Fatalf("create room v%s: %v", version, err)
	}
	if len(res.EventIDs) != 5 || res.RoomID == "" {
		h.t.Fatalf("create result %+v", res)
	}
	return res.RoomID
}

func (h *harness) send(roomID string, p api.ProtoEvent) (string, error) {
	res, err := h.in.Input(context.Background(), &api.InputMessage{RoomID: roomID, Local: &api.LocalInput{Events: []api.ProtoEvent{p}}})
	if err != nil {
		return "", err
	}
	return res.EventIDs[0], nil
}

func (h *harness) mustSend(roomID string, p api.ProtoEvent) string {
	h.t.Helper()
	id, err := h.send(roomID, p)
	if err != nil {
		h.t.Fatalf("send %s: %v", p.Type, err)
	}
	return id
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	var ie *api.InputError
	if !errors.As(err, &ie) || ie.Code != code {
		t.Fatalf("err = %v, want %s", err, code)
	}
}

var allVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

func TestLocalEventsEveryVersion(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		alice, bob := "@alice:"+testServer, "@bob:"+testServer
		for _, v := range allVersions {
			t.Run("v"+v, func(t *testing.T) {
				roomID := h.createRoom(v, alice, "public")
				if v == "12" && len(roomID) != 44 {
					t.Fatalf("v12 room ID %q is not derived from the create event", roomID)
				}
				msg := h.mustSend(roomID, proto(alice, "m.room.message", nil, map[string]any{"body": "hi", "msgtype": "m.text"}))
				// bob is not in the room
				_, err := h.send(roomID, proto(bob, "m.room.message", nil, map[string]any{"body": "x"}))
				wantCode(t, err, "M_FORBIDDEN")
				h.mustSend(roomID, proto(bob, spec.MRoomMember, sk(bob), map[string]any{"membership": "join"}))
				h.mustSend(roomID, proto(bob, "m.room.message", nil, map[string]any{"body": "hello"}))
				// bob has no power to change the name
				_, err = h.send(roomID, proto(bob, spec.MRoomName, sk(""), map[string]any{"name": "bob's"}))
				wantCode(t, err, "M_FORBIDDEN")
				name := h.mustSend(roomID, proto(alice, spec.MRoomName, sk(""), map[string]any{"name": "Alice's"}))

				cur, err := h.rs.QueryCurrentState(ctx, roomID)
				if err != nil {
					t.Fatal(err)
				}
				if len(cur) != 7 { // create, 2 members, PL, join rules, history, name
					t.Fatalf("current state has %d events", len(cur))
				}
				named, _ := h.rs.QueryCurrentState(ctx, roomID, api.StateKeyTuple{EventType: spec.MRoomName})
				if len(named) != 1 || named[0].EventID() != name {
					t.Fatalf("name state %v", named)
				}
				latest, _ := h.rs.QueryLatestEvents(ctx, roomID)
				if len(latest) != 1 || latest[0] != name {
					t.Fatalf("latest = %v, want the name event", latest)
				}
				m, _ := h.rs.QueryMembership(ctx, roomID, bob)
				if m.Membership != "join" {
					t.Fatalf("bob membership %+v", m)
				}
				rooms, _ := h.rs.QueryRoomsForUser(ctx, bob, "join")
				found := false
				for _, r := range rooms {
					found = found || r.RoomID == roomID
				}
				if !found {
					t.Fatal("room not in bob's joined rooms")
				}
				// Redaction by another user needs power; alice may redact.
				_, err = h.send(roomID, api.ProtoEvent{Sender: bob, Type: spec.MRoomRedaction, Content: json.RawMessage(`{}`), Redacts: msg})
				wantCode(t, err, "M_FORBIDDEN")
				h.mustSend(roomID, api.ProtoEvent{Sender: alice, Type: spec.MRoomRedaction, Content: json.RawMessage(`{}`), Redacts: msg})
				got, _ := h.rs.QueryEvents(ctx, []string{msg})
				if len(got) != 1 || string(got[0].Content()) != "{}" || !got[0].Redacted() {
					t.Fatalf("redacted event content %s", got[0].Content())
				}
			})
		}
	})
}

func TestTransactionIDsAndUnchangedState(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		alice := "@alice:" + testServer
		roomID := h.createRoom("10", alice, "invite")
		send := func(key string) string {
			res, err := h.in.Input(ctx, &api.InputMessage{RoomID: roomID, Local: &api.LocalInput{
				TxnKey: key, DeviceID: "DEV", Events: []api.ProtoEvent{proto(alice, "m.room.message", nil, map[string]any{"body": key})},
			}})
			if err != nil {
				t.Fatal(err)
			}
			return res.EventIDs[0]
		}
		a, a2, b := send("send|t1"), send("send|t1"), send("send|t2")
		if a != a2 || a == b {
			t.Fatalf("txn dedupe: %s %s %s", a, a2, b)
		}
		topic := func() string {
			res, err := h.in.Input(ctx, &api.InputMessage{RoomID: roomID, Local: &api.LocalInput{SkipUnchangedState: true,
				Events: []api.ProtoEvent{proto(alice, "m.room.topic", sk(""), map[string]any{"topic": "x"})}}})
			if err != nil {
				t.Fatal(err)
			}
			return res.EventIDs[0]
		}
		if t1, t2 := topic(), topic(); t1 != t2 {
			t.Fatalf("unchanged state sent twice: %s %s", t1, t2)
		}
	})
}

// Events sent before a restart are all there after it, and the head is
// read back from storage.
func TestSendManyInOrder(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		alice := "@alice:" + testServer
		roomID := h.createRoom("11", alice, "public")
		var last string
		for i := range 30 {
			last = h.mustSend(roomID, proto(alice, "m.room.message", nil, map[string]any{"body": fmt.Sprint(i)}))
		}
		h.rs.heads.Delete(roomID) // force a reload from storage
		latest, err := h.rs.QueryLatestEvents(context.Background(), roomID)
		if err != nil || len(latest) != 1 || latest[0] != last {
			t.Fatalf("latest %v %v, want %s", latest, err, last)
		}
		evs, _ := h.rs.QueryEvents(context.Background(), []string{last})
		if evs[0].Depth() != 35 {
			t.Fatalf("depth %d, want 35", evs[0].Depth())
		}
	})
}

// RoomOutput carries every stored event in order, with its state delta.
func TestRoomOutput(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		alice := "@alice:" + testServer
		roomID := h.createRoom("10", alice, "public")
		name := h.mustSend(roomID, proto(alice, spec.MRoomName, sk(""), map[string]any{"name": "n"}))
		got := make(chan *api.OutputMessage, 100)
		stop, err := h.b.Consume(context.Background(), bus.ConsumerSpec{Stream: "RoomOutput", Durable: "t"}, func(_ context.Context, m *bus.Msg) error {
			var om api.OutputMessage
			if err := json.Unmarshal(m.Data, &om); err != nil {
				return err
			}
			got <- &om
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		var msgs []*api.OutputMessage
		deadline := time.After(10 * time.Second)
		for len(msgs) < 6 {
			select {
			case m := <-got:
				msgs = append(msgs, m)
			case <-deadline:
				t.Fatalf("got %d output messages, want 6", len(msgs))
			}
		}
		last := msgs[5].NewEvent
		var ev struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
		}
		_ = json.Unmarshal(last.Event, &ev)
		if last.RoomID != roomID || ev.Type != spec.MRoomName || len(last.AddsState) != 1 || last.AddsState[0] != name || len(last.LatestEvents) != 1 {
			t.Fatalf("last output %+v", last)
		}
		if first := msgs[0].NewEvent; len(first.AddsState) != 1 || len(first.RemovesState) != 0 {
			t.Fatalf("create output %+v", first)
		}
	})
}
