package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/myelin-chat/myelin/internal/bus"
)

// Inputer submits input to the roomserver over RoomInput and waits for the
// result. One Inputer per process serves every caller.
type Inputer struct {
	bus     *bus.Bus
	prefix  string
	sub     *nats.Subscription
	mu      sync.Mutex
	waiters map[string]chan *InputResult
}

// NewInputer subscribes to the replies for this process.
func NewInputer(b *bus.Bus) (*Inputer, error) {
	var r [8]byte
	_, _ = rand.Read(r[:])
	in := &Inputer{bus: b, prefix: b.Name("_INBOX.roominput." + hex.EncodeToString(r[:]) + "."), waiters: map[string]chan *InputResult{}}
	sub, err := b.NC.Subscribe(in.prefix+"*", func(m *nats.Msg) {
		var res InputResult
		if err := json.Unmarshal(m.Data, &res); err != nil {
			return
		}
		in.mu.Lock()
		ch := in.waiters[m.Subject[len(in.prefix):]]
		in.mu.Unlock()
		if ch != nil {
			ch <- &res
		}
	})
	if err != nil {
		return nil, fmt.Errorf("roomserver input replies: %w", err)
	}
	in.sub = sub
	return in, nil
}

// Close stops receiving replies.
func (in *Inputer) Close() { _ = in.sub.Unsubscribe() }

// Input submits msg and waits for the roomserver's result. A refusal comes
// back as an *InputError.
func (in *Inputer) Input(ctx context.Context, msg *InputMessage) (*InputResult, error) {
	if msg.ID == "" {
		var r [12]byte
		_, _ = rand.Read(r[:])
		msg.ID = hex.EncodeToString(r[:])
	}
	msg.V = 1
	ch := make(chan *InputResult, 1)
	in.mu.Lock()
	in.waiters[msg.ID] = ch
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.waiters, msg.ID)
		in.mu.Unlock()
	}()
	msg.ReplyTo = in.prefix + msg.ID
	partition := Partition(msg.RoomID)
	if msg.RoomID == "" {
		partition = Partition(msg.ID)
	}
	if _, err := in.bus.Publish(ctx, InputSubject(partition), msg, msg.ID, map[string]string{"room_id": msg.RoomID}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	select {
	case res := <-ch:
		if res.Error != nil {
			return res, res.Error
		}
		return res, nil
	case <-ctx.Done():
		return nil, errors.New("roomserver: timed out waiting for the input result")
	}
}
