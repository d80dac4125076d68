package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Component tests of send-to-device messaging: the outbox towards
// FederationOut and the m.direct_to_device EDUs from FederationIn, on a
// real bus and both databases (prefix td).

// tdUsers lists fixed devices per user.
type tdUsers struct {
	UserAPI
	devices map[string][]string
}

func (u tdUsers) QueryDevicesOfUsers(_ context.Context, userIDs []string) (map[string][]userapi.DeviceInfo, error) {
	out := map[string][]userapi.DeviceInfo{}
	for _, userID := range userIDs {
		for _, d := range u.devices[userID] {
			out[userID] = append(out[userID], userapi.DeviceInfo{DeviceID: d})
		}
	}
	return out, nil
}

type tdHarness struct {
	t   *testing.T
	ctx context.Context
	b   *bus.Bus
	db  *sqlutil.DB
	s   *SyncAPI
	srv *httputil.Server
}

func newTDHarness(t *testing.T, db *sqlutil.DB) *tdHarness {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx, append(append(rsapi.Streams(), userapi.Streams()...), fedapi.Streams()...)...); err != nil {
		t.Fatal(err)
	}
	return &tdHarness{t: t, ctx: ctx, b: b, db: db}
}

// start starts a sync API on the harness's bus and database.
func (h *tdHarness) start() {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	users := tdUsers{devices: map[string][]string{ftAlice: {"A1", "A2"}, ftCarol: {"C1"}}}
	s, err := New(h.ctx, Config{ServerName: ftLocal}, h.db, h.b, &ftRooms{}, users, log)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := s.Start(h.ctx); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(s.Close)
	h.s = s
	h.srv = httputil.NewServer(httputil.ServerOptions{Logger: log, Registry: prometheus.NewRegistry(), Authenticator: ftAuth{}})
	s.Register(h.srv)
}

func (h *tdHarness) do(user, device, method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	data, _ := json.Marshal(body)
	req := httptest.NewRequest(method, path, strings.NewReader(string(data)))
	req.Header.Set("Authorization", "Bearer "+user+"|"+device)
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	var m map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	return rec.Code, m
}

// toDevice returns the contents' "n" of a device's to-device events.
func (h *tdHarness) toDevice(user, device string) []float64 {
	h.t.Helper()
	code, m := h.do(user, device, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
	if code != http.StatusOK {
		h.t.Fatalf("sync: %d %v", code, m)
	}
	var out []float64
	td, _ := m["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	for _, e := range evs {
		out = append(out, e.(map[string]any)["content"].(map[string]any)["n"].(float64))
	}
	return out
}

// federationOut returns the EDUs published on FederationOut.
func (h *tdHarness) federationOut() []fedapi.OutboundEDU {
	h.t.Helper()
	st, err := h.b.JS.Stream(h.ctx, h.b.Name(fedapi.FederationOutStream.Name))
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []fedapi.OutboundEDU
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(h.ctx, seq)
		if err != nil {
			h.t.Fatal(err)
		}
		var edu fedapi.OutboundEDU
		if err := json.Unmarshal(m.Data, &edu); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, edu)
	}
	return out
}

func TestToDeviceOutboundEDUs(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newTDHarness(t, db)
		h.start()
		body := map[string]any{"messages": map[string]any{
			ftBob:                map[string]any{"B1": map[string]any{"n": 1}},
			ftEve:                map[string]any{"*": map[string]any{"n": 2}},
			"@zed:third.test":    map[string]any{"Z": map[string]any{"n": 3}},
			ftCarol:              map[string]any{"C1": map[string]any{"n": 4}},
			"@nobody:" + ftLocal: map[string]any{"*": map[string]any{"n": 5}},
		}}
		for range 2 { // the retry publishes nothing more
			if code, m := h.do(ftAlice, "A1", "PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", body); code != http.StatusOK {
				t.Fatalf("send: %d %v", code, m)
			}
		}
		edus := h.federationOut()
		if len(edus) != 2 {
			t.Fatalf("%d EDUs, want one per server: %+v", len(edus), edus)
		}
		byDest := map[string]directToDevice{}
		for _, e := range edus {
			if e.Type != fedapi.EDUDirectToDevice || len(e.Destinations) != 1 || e.RoomID != "" || e.UserID != "" {
				t.Fatalf("EDU %+v", e)
			}
			var c directToDevice
			if err := json.Unmarshal(e.Content, &c); err != nil {
				t.Fatal(err)
			}
			byDest[e.Destinations[0]] = c
		}
		r := byDest[ftRemote]
		if r.Sender != ftAlice || r.Type != "m.test" || r.MessageID == "" || len([]rune(r.MessageID)) > 32 || len(r.Messages) != 2 ||
			string(r.Messages[ftBob]["B1"]) != `{"n":1}` || string(r.Messages[ftEve]["*"]) != `{"n":2}` {
			t.Fatalf("EDU for %s: %+v", ftRemote, r)
		}
		if z := byDest["third.test"]; z.MessageID == "" || z.MessageID == r.MessageID || len(z.Messages) != 1 {
			t.Fatalf("EDU for third.test: %+v", z)
		}
		if got := h.toDevice(ftCarol, "C1"); len(got) != 1 || got[0] != 4 {
			t.Fatalf("carol got %v", got)
		}
		if out, _ := storage.SelectToDeviceOutbox(h.ctx, db, 10); len(out) != 0 {
			t.Fatalf("outbox not emptied: %+v", out)
		}
	})
}

func TestToDeviceOutboxPublishedAtStart(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newTDHarness(t, db)
		// What a crash between the commit and the publish leaves behind.
		st, err := storage.New(h.ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		content, _ := json.Marshal(directToDevice{Sender: ftAlice, Type: "m.test", MessageID: "m1",
			Messages: map[string]map[string]json.RawMessage{ftBob: {"B1": json.RawMessage(`{"n":1}`)}}})
		payload, _ := json.Marshal(fedapi.OutboundEDU{V: 1, Type: fedapi.EDUDirectToDevice, Content: content, Destinations: []string{ftRemote}})
		if err := st.WithTx(h.ctx, func(tx *sqlutil.Tx) error {
			if err := storage.InsertToDeviceOutbox(h.ctx, tx, []storage.ToDeviceOutbound{{Pos: 1, Destination: ftRemote, MsgID: "to-device:m1", Payload: payload}}); err != nil {
				return err
			}
			return storage.SetToDevicePos(h.ctx, tx, 1)
		}); err != nil {
			t.Fatal(err)
		}
		h.start()
		edus := h.federationOut()
		if len(edus) != 1 || string(edus[0].Content) != string(content) {
			t.Fatalf("published at start: %+v", edus)
		}
		if h.s.pos.toDevice.Load() != 1 {
			t.Fatalf("to-device position %d after start, want 1", h.s.pos.toDevice.Load())
		}
		h.s.Close()
		h.start()
		if edus := h.federationOut(); len(edus) != 1 {
			t.Fatalf("%d EDUs after a second start, want the one", len(edus))
		}
	})
}

func TestToDeviceInboundEDUs(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newTDHarness(t, db)
		h.start()
		var last uint64
		in := func(origin, sender, id string, messages string) {
			content := `{"sender":"` + sender + `","type":"m.test","message_id":"` + id + `","messages":` + messages + `}`
			seq, err := h.b.Publish(h.ctx, fedapi.InSubject(fedapi.EDUDirectToDevice),
				&fedapi.InboundEDU{V: 1, Origin: origin, Type: fedapi.EDUDirectToDevice, Content: json.RawMessage(content)}, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			last = seq
		}
		in(ftRemote, ftBob, "m1", `{"`+ftAlice+`":{"*":{"n":1}},"`+ftCarol+`":{"C1":{"n":1},"NOPE":{"n":9}}}`)
		in(ftRemote, ftBob, "m1", `{"`+ftAlice+`":{"*":{"n":2}}}`)                  // the same message ID
		in(ftRemote, "@bob:elsewhere.test", "m2", `{"`+ftAlice+`":{"A1":{"n":3}}}`) // not the origin's user
		in(ftRemote, ftBob, "m3", `{"`+ftAlice+`":{"A2":{"n":4},"A1":"not an object"},"@x:`+ftRemote+`":{"*":{"n":5}}}`)
		in(ftRemote, ftBob, "m4", `"not an object"`)
		in(ftRemote, ftBob, "m5", `{"`+ftAlice+`":{"A1":{"n":6}}}`)
		deadline := time.Now().Add(10 * time.Second)
		for h.s.applied.federationIn.Load() < last {
			if time.Now().After(deadline) {
				t.Fatalf("FederationIn applied up to %d, want %d", h.s.applied.federationIn.Load(), last)
			}
			time.Sleep(5 * time.Millisecond)
		}
		for _, c := range []struct {
			user, device string
			want         string
		}{{ftAlice, "A1", "[1 6]"}, {ftAlice, "A2", "[1 4]"}, {ftCarol, "C1", "[1]"}} {
			if got := h.toDevice(c.user, c.device); fmtFloats(got) != c.want {
				t.Errorf("%s %s got %v, want %s", c.user, c.device, got, c.want)
			}
		}
		// The position and the dedupe survive a restart.
		h.s.Close()
		h.start()
		in(ftRemote, ftBob, "m5", `{"`+ftAlice+`":{"A1":{"n":7}}}`)
		deadline = time.Now().Add(10 * time.Second)
		for h.s.applied.federationIn.Load() < last {
			if time.Now().After(deadline) {
				t.Fatal("FederationIn not applied after the restart")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got := h.toDevice(ftAlice, "A1"); fmtFloats(got) != "[1 6]" {
			t.Errorf("after a restart and a repeated EDU, A1 got %v", got)
		}
	})
}

func fmtFloats(f []float64) string {
	b, _ := json.Marshal(f)
	return strings.ReplaceAll(string(b), ",", " ")
}

// The messages for one server are split into EDUs of at most
// fedapi.MaxToDeviceMessagesPerEDU messages, the most another server's
// federation API takes in one (before, only by size: 10,001 small messages
// made one EDU that a Myelin server drops).
func TestSplitToDeviceByCount(t *testing.T) {
	byUser := map[string]map[string]json.RawMessage{}
	for i := range fedapi.MaxToDeviceMessagesPerEDU + 1 {
		byUser[fmt.Sprintf("@u%d:hs2", i)] = map[string]json.RawMessage{"*": json.RawMessage(`{}`)}
	}
	chunks := splitToDevice(byUser)
	total := 0
	for _, c := range chunks {
		n := 0
		for _, ds := range c {
			n += len(ds)
		}
		if n > fedapi.MaxToDeviceMessagesPerEDU {
			t.Fatalf("an EDU of %d messages", n)
		}
		total += n
	}
	if len(chunks) != 2 || total != fedapi.MaxToDeviceMessagesPerEDU+1 {
		t.Fatalf("%d chunks of %d messages in all", len(chunks), total)
	}
}
