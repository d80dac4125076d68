package federationapi

import (
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
)

// Bounds of the EDUs of a transaction (beyond the 100 EDUs a transaction
// carries at most). An EDU past them is dropped whole, as a malformed one
// is: another server's EDU costs work (a write per presence state, per
// receipt, per device) in proportion to what it lists, so one EDU listing
// 20,000 users must not be taken.
const (
	// maxEDUBytes bounds any EDU's content. Myelin's own to-device EDUs
	// hold at most 1 MiB of messages (syncapi's maxToDeviceEDU), with
	// their user and device IDs on top.
	maxEDUBytes = 2 << 20
	// maxEDUIDBytes bounds the IDs an EDU names (users, rooms, devices,
	// events), as the spec bounds IDs.
	maxEDUIDBytes = 255
	// maxPresencePerEDU: Synapse sends at most 50 presence states in an
	// EDU, Myelin one. maxPresencePerTxn bounds them over a transaction.
	maxPresencePerEDU = 100
	maxPresencePerTxn = 500
	// maxReceiptRooms, maxReceiptsPerEDU (room, type and user entries)
	// and maxReceiptEventIDs (per receipt: servers send one) bound a
	// receipt EDU.
	maxReceiptRooms    = 100
	maxReceiptsPerEDU  = 1000
	maxReceiptEventIDs = 10
	// maxDevicePrevIDs bounds the prev_id of a device list update
	// (servers send the one update before it, or a few).
	maxDevicePrevIDs = 100
	// maxToDeviceMessages bounds the (user, device) messages of one
	// to-device EDU; a "*" device counts once.
	maxToDeviceMessages = fedapi.MaxToDeviceMessagesPerEDU
)

// eduBudget is what is left of a transaction's bounds.
type eduBudget struct {
	presence int
}

func newEDUBudget() *eduBudget { return &eduBudget{presence: maxPresencePerTxn} }

// checkBounds reports how an EDU breaks the bounds above (nil: within
// them), and takes what it uses from the transaction's budget.
func (b *eduBudget) checkBounds(edu gomatrixserverlib.EDU) error {
	if len(edu.Content) > maxEDUBytes {
		return fmt.Errorf("content of %d bytes, more than %d", len(edu.Content), maxEDUBytes)
	}
	c := gjson.ParseBytes(edu.Content)
	longID := func(ids ...gjson.Result) error {
		for _, id := range ids {
			if len(id.Str) > maxEDUIDBytes {
				return fmt.Errorf("an ID of more than %d bytes", maxEDUIDBytes)
			}
		}
		return nil
	}
	switch edu.Type {
	case fedapi.EDUTyping:
		return longID(c.Get("room_id"), c.Get("user_id"))
	case fedapi.EDUPresence:
		push := c.Get("push").Array()
		if len(push) > maxPresencePerEDU {
			return fmt.Errorf("%d presence states, more than %d", len(push), maxPresencePerEDU)
		}
		if len(push) > b.presence {
			return fmt.Errorf("%d presence states, more than the %d left of the transaction's %d", len(push), b.presence, maxPresencePerTxn)
		}
		for _, p := range push {
			if err := longID(p.Get("user_id")); err != nil {
				return err
			}
		}
		b.presence -= len(push)
	case fedapi.EDUReceipt:
		rooms, receipts := 0, 0
		var err error
		c.ForEach(func(roomID, types gjson.Result) bool {
			if rooms++; rooms > maxReceiptRooms {
				err = fmt.Errorf("receipts in more than %d rooms", maxReceiptRooms)
			} else if err = longID(roomID); err == nil {
				types.ForEach(func(_, users gjson.Result) bool {
					users.ForEach(func(userID, r gjson.Result) bool {
						if receipts++; receipts > maxReceiptsPerEDU {
							err = fmt.Errorf("more than %d receipts", maxReceiptsPerEDU)
						} else if ids := r.Get("event_ids").Array(); len(ids) > maxReceiptEventIDs {
							err = fmt.Errorf("a receipt of %d events, more than %d", len(ids), maxReceiptEventIDs)
						} else {
							err = longID(append(ids, userID)...)
						}
						return err == nil
					})
					return err == nil
				})
			}
			return err == nil
		})
		return err
	case fedapi.EDUDeviceList:
		if n := len(c.Get("prev_id").Array()); n > maxDevicePrevIDs {
			return fmt.Errorf("a device list update with %d prev_id, more than %d", n, maxDevicePrevIDs)
		}
		return longID(c.Get("user_id"), c.Get("device_id"))
	case fedapi.EDUSigningKey:
		return longID(c.Get("user_id"))
	case fedapi.EDUDirectToDevice:
		if err := longID(c.Get("sender"), c.Get("message_id")); err != nil {
			return err
		}
		n := 0
		var err error
		c.Get("messages").ForEach(func(userID, devices gjson.Result) bool {
			if err = longID(userID); err != nil {
				return false
			}
			devices.ForEach(func(deviceID, _ gjson.Result) bool {
				if n++; n > maxToDeviceMessages {
					err = fmt.Errorf("more than %d to-device messages", maxToDeviceMessages)
				} else {
					err = longID(deviceID)
				}
				return err == nil
			})
			return err == nil
		})
		return err
	}
	return nil
}
