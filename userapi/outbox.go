package userapi

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/userapi/storage"
)

// flushOutbox publishes committed UserOutput messages of the outbox
// (user_outbox) in commit order and deletes them. Publishing is idempotent
// (message IDs), so a crash between publish and delete only repeats what
// consumers drop. Without a bus (the create-account command) the messages
// wait for the server.
func (u *UserAPI) flushOutbox(ctx context.Context) error {
	if u.bus == nil {
		return nil
	}
	u.outboxMu.Lock()
	defer u.outboxMu.Unlock()
	for {
		msgs, err := storage.SelectOutbox(ctx, u.store.DB(), outboxBatch)
		if err != nil || len(msgs) == 0 {
			return err
		}
		ids := make([]int64, 0, len(msgs))
		for _, m := range msgs {
			if _, err := u.bus.Publish(ctx, m.Subject, json.RawMessage(m.Payload), m.MsgID, nil); err != nil {
				_ = storage.DeleteOutbox(ctx, u.store.DB(), ids)
				return err
			}
			ids = append(ids, m.ID)
		}
		if err := storage.DeleteOutbox(ctx, u.store.DB(), ids); err != nil || len(msgs) < outboxBatch {
			return err
		}
	}
}

// outboxBatch is how many messages a flush reads at a time.
const outboxBatch = 200
