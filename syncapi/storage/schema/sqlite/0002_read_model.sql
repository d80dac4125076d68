-- The timeline: every event of the rooms this server is in, in the order
-- the sync API received them (pos). Backfilled history gets negative
-- positions, before everything received live.
CREATE TABLE sync_events (
    pos            BIGINT PRIMARY KEY,
    room_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL UNIQUE,
    type           TEXT NOT NULL,
    sender         TEXT NOT NULL,
    state_key      TEXT,
    membership     TEXT,
    contains_url   BOOLEAN NOT NULL DEFAULT FALSE,
    origin_ts      BIGINT NOT NULL,
    event_json     TEXT NOT NULL,
    txn_id         TEXT,
    device_id      TEXT,
    visibility     TEXT NOT NULL,
    replaces_state TEXT,
    prev_content   TEXT,
    redacted       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sync_events_room ON sync_events (room_id, pos);
CREATE INDEX sync_events_room_ts ON sync_events (room_id, origin_ts);

-- Room state over time: a row holds its key from from_pos (inclusive)
-- until to_pos (exclusive); NULL to_pos is the current state.
CREATE TABLE sync_state (
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    membership TEXT,
    event_json TEXT NOT NULL,
    from_pos   BIGINT NOT NULL,
    to_pos     BIGINT,
    PRIMARY KEY (room_id, type, state_key, from_pos)
);
CREATE INDEX sync_state_current ON sync_state (room_id) WHERE to_pos IS NULL;
CREATE INDEX sync_state_member ON sync_state (state_key, type) WHERE to_pos IS NULL;
CREATE INDEX sync_state_event ON sync_state (event_id);

-- Every membership change of every user, for sync sections and history
-- visibility.
CREATE TABLE sync_memberships (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    pos        BIGINT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    sender     TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, pos)
);
CREATE INDEX sync_memberships_user ON sync_memberships (user_id, pos);

-- The stripped state of invites and knocks, as the invitee sees it.
CREATE TABLE sync_stripped_state (
    user_id  TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    pos      BIGINT NOT NULL,
    state    TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, pos)
);

CREATE TABLE sync_receipts (
    room_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    pos          BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX sync_receipts_pos ON sync_receipts (room_id, pos);

CREATE TABLE sync_account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    pos     BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX sync_account_data_pos ON sync_account_data (user_id, pos);

CREATE TABLE sync_presence (
    user_id          TEXT PRIMARY KEY,
    presence         TEXT NOT NULL,
    status_msg       TEXT,
    last_active_ts   BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL DEFAULT FALSE,
    pos              BIGINT NOT NULL
);
CREATE INDEX sync_presence_pos ON sync_presence (pos);

-- The last sequence each stream consumer applied.
CREATE TABLE sync_consumers (
    name     TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
