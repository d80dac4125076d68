package tests

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// toDevicePerSyncLimit is how many to-device messages a sync carries.
const toDevicePerSyncLimit = 100

// BenchmarkSendToDevice1000 measures one PUT /sendToDevice to 1,000 local
// devices (the target is under 100 ms), each with its own 400-byte
// content as Olm messages have, on SQLite: the devices of one user, of
// 100 users with 10 each, and of 1,000 users with one each (one device
// lookup per recipient user); and the first on PostgreSQL.
func BenchmarkSendToDevice1000(b *testing.B) {
	for _, shape := range []struct {
		users, devices int
		postgres       bool
	}{{1, 1000, false}, {100, 10, false}, {1000, 1, false}, {1, 1000, true}} {
		name := fmt.Sprintf("users=%d,devices=%d", shape.users, shape.devices)
		if shape.postgres {
			name += ",postgres"
		}
		b.Run(name, func(b *testing.B) {
			srv := testserver.Start(b, testserver.Options{Postgres: shape.postgres})
			sender := srv.Client().Register("sender", "password1")
			var mu sync.Mutex
			var recipients []*testutil.Client
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			for u := range shape.users {
				name := fmt.Sprintf("r%d", u)
				first := srv.Client().Register(name, "password1")
				recipients = append(recipients, first)
				for range shape.devices - 1 {
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer func() { <-sem; wg.Done() }()
						d := srv.Client().Login(name, "password1")
						mu.Lock()
						recipients = append(recipients, d)
						mu.Unlock()
					}()
				}
			}
			wg.Wait()
			if len(recipients) != 1000 {
				b.Fatalf("%d recipient devices", len(recipients))
			}
			body := func(n int) map[string]any {
				messages := map[string]any{}
				for i, r := range recipients {
					byDevice, _ := messages[r.UserID].(map[string]any)
					if byDevice == nil {
						byDevice = map[string]any{}
						messages[r.UserID] = byDevice
					}
					byDevice[r.DeviceID] = map[string]any{"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "abc",
						"ciphertext": map[string]any{"key": map[string]any{"type": 0, "body": fmt.Sprintf("%d.%d.%s", n, i, strings.Repeat("A", 300))}}}
				}
				return map[string]any{"messages": messages}
			}
			bodies := make([]map[string]any, b.N)
			for i := range bodies {
				bodies[i] = body(i)
			}
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				sender.MustDo("PUT", testutil.Path("/_matrix/client/v3/sendToDevice/m.room.encrypted/%s", fmt.Sprintf("bench%d", i)), bodies[i], http.StatusOK)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(elapsed.Microseconds())/1000/float64(b.N), "ms/request")
			// The devices got the messages.
			for _, r := range []*testutil.Client{recipients[0], recipients[len(recipients)-1]} {
				if evs, _ := tdSync(b, r, "", 0); len(evs) != min(b.N, toDevicePerSyncLimit) {
					b.Fatalf("%s got %d to-device events, want %d", r.DeviceID, len(evs), min(b.N, toDevicePerSyncLimit))
				}
			}
		})
	}
}
