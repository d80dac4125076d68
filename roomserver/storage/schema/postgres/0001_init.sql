-- Rooms, with their current state snapshot and forward extremities.
CREATE TABLE rs_rooms (
    room_nid           BIGSERIAL PRIMARY KEY,
    room_id            TEXT NOT NULL UNIQUE,
    room_version       TEXT NOT NULL,
    state_snapshot_nid BIGINT NOT NULL DEFAULT 0,
    latest_event_nids  BYTEA NOT NULL,
    joined_members     BIGINT NOT NULL DEFAULT 0
);

-- Numeric IDs of event types and state keys.
CREATE TABLE rs_event_types (
    type_nid   BIGSERIAL PRIMARY KEY,
    event_type TEXT NOT NULL UNIQUE
);
CREATE TABLE rs_state_keys (
    state_key_nid BIGSERIAL PRIMARY KEY,
    state_key     TEXT NOT NULL UNIQUE
);

-- Every event the server stores. kind: 1 normal (in the DAG, with state),
-- 2 outlier (no state computed), 3 rejected (stored so it is never fetched
-- again, never applied). state_key_nid 0 means not a state event.
CREATE TABLE rs_events (
    event_nid        BIGSERIAL PRIMARY KEY,
    room_nid         BIGINT NOT NULL,
    event_id         TEXT NOT NULL UNIQUE,
    type_nid         BIGINT NOT NULL,
    state_key_nid    BIGINT NOT NULL DEFAULT 0,
    depth            BIGINT NOT NULL,
    kind             SMALLINT NOT NULL,
    soft_failed      BOOLEAN NOT NULL DEFAULT FALSE,
    state_before_nid BIGINT NOT NULL DEFAULT 0,
    state_after_nid  BIGINT NOT NULL DEFAULT 0,
    sender           TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    redacted         BOOLEAN NOT NULL DEFAULT FALSE,
    event_json       TEXT NOT NULL
);
CREATE INDEX rs_events_room ON rs_events (room_nid, event_nid);

-- Which events name which prev_events (forward extremities, backfill).
CREATE TABLE rs_prev_events (
    prev_event_id TEXT NOT NULL,
    event_nid     BIGINT NOT NULL,
    PRIMARY KEY (prev_event_id, event_nid)
);

-- State snapshots as lists of deduplicated blocks (see roomserver/state).
CREATE TABLE rs_state_blocks (
    block_nid BIGSERIAL PRIMARY KEY,
    hash      BYTEA NOT NULL UNIQUE,
    entries   BYTEA NOT NULL
);
CREATE TABLE rs_state_snapshots (
    snapshot_nid BIGSERIAL PRIMARY KEY,
    hash         BYTEA NOT NULL UNIQUE,
    blocks       BYTEA NOT NULL
);

-- Current membership of every user of every room, and the history of
-- membership events (for history visibility).
CREATE TABLE rs_membership (
    room_nid   BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_nid  BIGINT NOT NULL,
    forgotten  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX rs_membership_user ON rs_membership (user_id, membership);
CREATE TABLE rs_member_events (
    room_nid   BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    event_nid  BIGINT NOT NULL,
    membership TEXT NOT NULL,
    PRIMARY KEY (room_nid, user_id, event_nid)
);

-- Client transaction IDs, per device.
CREATE TABLE rs_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_key    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_key)
);

-- Redactions, applied once their target is known and the redaction allowed.
CREATE TABLE rs_redactions (
    redaction_event_id TEXT PRIMARY KEY,
    redacts_event_id   TEXT NOT NULL,
    applied            BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX rs_redactions_target ON rs_redactions (redacts_event_id);

CREATE TABLE rs_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX rs_aliases_room ON rs_aliases (room_id);

CREATE TABLE rs_published_rooms (
    room_id      TEXT PRIMARY KEY,
    published_ts BIGINT NOT NULL
);

-- The last RoomInput sequence applied per partition, and the RoomOutput
-- messages committed but not yet published.
CREATE TABLE rs_input_positions (
    partition_id INTEGER PRIMARY KEY,
    last_seq     BIGINT NOT NULL
);
CREATE TABLE rs_outbox (
    id      BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    msg_id  TEXT NOT NULL,
    payload TEXT NOT NULL
);
