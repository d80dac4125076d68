-- Send-to-device messages waiting for their device: one row per
-- recipient device, at the to-device stream position of the request (or
-- federation EDU) that sent it. A row is deleted once the device syncs
-- with a token whose to-device position covers it, or when the device is
-- deleted.
CREATE TABLE sync_to_device_inbox (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    pos       BIGINT NOT NULL,
    sender    TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, pos)
);

-- The highest to-device position handed out (one row): kept apart from
-- the inbox, whose rows are deleted, so that positions never go back.
CREATE TABLE sync_to_device_stream (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    pos BIGINT NOT NULL
);

-- The /sendToDevice transactions of local devices, written with their
-- messages so that a retry (even after a restart) delivers nothing twice.
CREATE TABLE sync_to_device_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    pos        BIGINT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, event_type, txn_id)
);
CREATE INDEX sync_to_device_txns_ts ON sync_to_device_txns (ts);

-- The m.direct_to_device EDUs taken in from other servers, by origin and
-- message_id, so that one sent again is not delivered twice.
CREATE TABLE sync_to_device_federation_seen (
    origin     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);
CREATE INDEX sync_to_device_federation_seen_ts ON sync_to_device_federation_seen (ts);

-- m.direct_to_device EDUs for other servers, written with the request's
-- transaction and deleted once published on FederationOut (the request
-- returns only then; whatever a crash left here is published at start).
CREATE TABLE sync_to_device_outbox (
    pos         BIGINT NOT NULL,
    destination TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (pos, destination)
);
