package api

import (
	"encoding/json"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
)

// Partitions is the number of RoomInput and RoomOutput partitions: rooms
// are hashed onto them, so events of a room are ordered while rooms proceed
// in parallel.
const Partitions = 16

// Partition returns the partition of a room.
func Partition(roomID string) int {
	h := fnv.New32a()
	h.Write([]byte(roomID))
	return int(h.Sum32() % Partitions)
}

// RoomInputStream carries events into the roomserver. Ordering: total order
// per partition subject (RoomInput.<n>), hence per room; the roomserver
// handles each partition strictly in order.
var RoomInputStream = bus.StreamSpec{
	Name:            "RoomInput",
	Description:     "Events for the roomserver to build, check and store",
	Subjects:        []string{"RoomInput.>"},
	MaxAge:          24 * time.Hour,
	DuplicateWindow: 2 * time.Minute,
}

// RoomOutputStream carries what the roomserver stored. Ordering: total
// order per partition subject (RoomOutput.<n>), hence per room, in the order
// the roomserver committed.
var RoomOutputStream = bus.StreamSpec{
	Name:            "RoomOutput",
	Description:     "New events, state changes and redactions of rooms",
	Subjects:        []string{"RoomOutput.>"},
	MaxAge:          14 * 24 * time.Hour,
	DuplicateWindow: 10 * time.Minute,
}

// Streams lists the streams the roomserver produces, for setup.
func Streams() []bus.StreamSpec { return []bus.StreamSpec{RoomInputStream, RoomOutputStream} }

// InputSubject is the RoomInput subject of a room's partition.
func InputSubject(partition int) string { return "RoomInput." + strconv.Itoa(partition) }

// OutputSubject is the RoomOutput subject of a room's partition.
func OutputSubject(roomID string) string { return "RoomOutput." + strconv.Itoa(Partition(roomID)) }

// InputMessage is a RoomInput message (version 1).
type InputMessage struct {
	V int `json:"v"`
	// ID identifies the input, for publish deduplication and logs.
	ID string `json:"id"`
	// RoomID of the room; empty when Local creates a room whose ID derives
	// from its create event (room version 12).
	RoomID string `json:"room_id,omitempty"`
	// Local events, built and signed by the roomserver in order.
	Local *LocalInput `json:"local,omitempty"`
	// Events are complete events (from federation, or tests), stored in
	// order. Their signatures and hashes must have been checked. Each is
	// authorised against its auth events and the state before it (a
	// failure stores it as rejected) and against the current state (a
	// failure soft-fails it); InputResult.Events says which.
	Events []json.RawMessage `json:"events,omitempty"`
	// Outliers are events stored outside the DAG, without state: the auth
	// chain and state of a room being joined, state fetched to close a
	// gap. Each is authorised against its own auth events, which must be
	// stored or among the outliers (they are sorted); failures are stored
	// as rejected. Outliers are stored before Events, and an outlier that
	// later arrives in Events joins the DAG.
	Outliers []json.RawMessage `json:"outliers,omitempty"`
	// StatesBefore gives the state before those of Events whose prev
	// events are not all in the DAG (event ID -> IDs of state events,
	// stored or among Outliers; of IDs of one type and state key, the last
	// wins; rejected ones are left out): a join over federation, a gap that
	// get_missing_events could not close, the oldest events of a
	// backfill. When some prev events are known, their state is resolved
	// with the given one. Without it, an event with unknown prev events is
	// refused (M_NOT_FOUND).
	StatesBefore map[string][]string `json:"states_before,omitempty"`
	// Backfilled marks Events as history older than the room's timeline:
	// stored with their state, they move neither the forward extremities
	// nor the current state, and come out as OutputBackfilled.
	Backfilled bool `json:"backfilled,omitempty"`
	// SendAsServer is the server that sends Events on to the room's other
	// servers: this server's name for events it takes in on behalf of
	// remote users (send_join, send_leave, send_knock, invites it
	// co-signed); empty for events that came from the room's servers.
	SendAsServer string `json:"send_as_server,omitempty"`
	// OutOfBand is a membership event of a local user in a room this
	// server may not be in: an invite from another server, a knock, or
	// the leave that rejects or withdraws them.
	OutOfBand *OutOfBandInput `json:"out_of_band,omitempty"`
	// ReplyTo is the subject the result goes to (empty: no reply).
	ReplyTo string `json:"reply_to,omitempty"`
}

// LocalInput describes events from local users.
type LocalInput struct {
	Events []ProtoEvent `json:"events"`
	// CreateVersion is set when the first event creates the room.
	CreateVersion string `json:"create_version,omitempty"`
	// TxnKey and DeviceID make a single event idempotent: a second input
	// with the same key from the same device returns the first event.
	TxnKey   string `json:"txn_key,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	// SkipUnchangedState returns the current event instead of sending a
	// state event whose sender and content equal the current ones.
	SkipUnchangedState bool `json:"skip_unchanged_state,omitempty"`
	// MaxPrevEvents caps prev_events; 0 uses the default.
	MaxPrevEvents int `json:"max_prev_events,omitempty"`
}

// OutOfBandInput is a local user's membership event received or made
// outside the room's DAG: stored as an outlier (with a stub room when the
// room is unknown) and announced as OutputMembership.
type OutOfBandInput struct {
	RoomVersion string          `json:"room_version"`
	Event       json.RawMessage `json:"event"`
	// StrippedState is what the user sees of the room (invites, knocks).
	StrippedState []json.RawMessage `json:"stripped_state,omitempty"`
}

// InputResult is the reply to an InputMessage.
type InputResult struct {
	RoomID   string      `json:"room_id,omitempty"`
	EventIDs []string    `json:"event_ids,omitempty"`
	Error    *InputError `json:"error,omitempty"`
	// Events reports, for complete events (InputMessage.Events), how
	// each entered the room, in order.
	Events []EventResult `json:"events,omitempty"`
}

// EventResult is the fate of one complete event.
type EventResult struct {
	EventID string `json:"event_id"`
	// Rejected says why the event failed the auth rules (empty: it passed).
	Rejected string `json:"rejected,omitempty"`
	// SoftFailed: it passed at its place in the DAG but not against the
	// current state, so it is kept out of clients' view and of the
	// forward extremities.
	SoftFailed bool `json:"soft_failed,omitempty"`
	// Existed: it was already stored in the DAG.
	Existed bool `json:"existed,omitempty"`
}

// InputError is why an input was refused, as a Matrix error code.
type InputError struct {
	Code    string `json:"errcode"`
	Message string `json:"error"`
}

func (e *InputError) Error() string { return e.Code + ": " + e.Message }

// OutputMessage is a RoomOutput message (version 1): exactly one of its
// parts is set.
type OutputMessage struct {
	V          int               `json:"v"`
	NewEvent   *OutputNewEvent   `json:"new_event,omitempty"`
	Redaction  *OutputRedaction  `json:"redaction,omitempty"`
	Backfilled *OutputBackfilled `json:"backfilled,omitempty"`
	Membership *OutputMembership `json:"membership,omitempty"`
	Forget     *OutputForget     `json:"forget,omitempty"`
}

// OutputNewEvent: an event joined the room's timeline.
type OutputNewEvent struct {
	RoomID      string          `json:"room_id"`
	RoomVersion string          `json:"room_version"`
	Event       json.RawMessage `json:"event"`
	// The current state changes this event caused (event IDs).
	AddsState    []string `json:"adds_state,omitempty"`
	RemovesState []string `json:"removes_state,omitempty"`
	// LatestEvents are the forward extremities after the event.
	LatestEvents []string `json:"latest_events"`
	// TxnID and DeviceID identify the request of the sender's device that
	// sent it (for unsigned.transaction_id).
	TxnID    string `json:"txn_id,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	// SendAsServer is the server that sends the event to the room's
	// other servers (this server for its users' events and for those it
	// took in for remote users); empty when it came from them.
	SendAsServer string `json:"send_as_server,omitempty"`
	// AfterGap: some of the event's prev events are not in the room's
	// DAG (it came with the state before it: a join over federation, a
	// gap get_missing_events did not close), so the history between it
	// and the events before it in the timeline is missing.
	AfterGap bool `json:"after_gap,omitempty"`
}

// OutputBackfilled: history older than the room's timeline was stored.
type OutputBackfilled struct {
	RoomID      string `json:"room_id"`
	RoomVersion string `json:"room_version"`
	// Events, oldest first, with the history visibility each was sent
	// under.
	Events []BackfilledEvent `json:"events"`
}

// BackfilledEvent is one event of OutputBackfilled.
type BackfilledEvent struct {
	Event             json.RawMessage `json:"event"`
	HistoryVisibility string          `json:"history_visibility"`
}

// OutputMembership: a local user's membership changed outside the room's
// DAG (see OutOfBandInput): an invite or knock this server holds without
// being in the room, or the leave that ended it.
type OutputMembership struct {
	RoomID        string            `json:"room_id"`
	RoomVersion   string            `json:"room_version"`
	Event         json.RawMessage   `json:"event"`
	StrippedState []json.RawMessage `json:"stripped_state,omitempty"`
}

// OutputForget: a local user forgot a room they had left (POST /forget).
// The room stays forgotten until the user's next membership event.
type OutputForget struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	// EventID is the user's member event (a leave or a ban) that was
	// current when they forgot the room.
	EventID string `json:"event_id"`
}

// OutputRedaction: an event was redacted.
type OutputRedaction struct {
	RoomID           string `json:"room_id"`
	RedactionEventID string `json:"redaction_event_id"`
	RedactsEventID   string `json:"redacts_event_id"`
}
