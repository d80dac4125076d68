-- The application service component's tables (prefix as_).

-- The last stream sequence each consumer applied (bus.PositionTable).
CREATE TABLE as_consumers (
    consumer TEXT PRIMARY KEY,
    seq      BIGINT NOT NULL
);

-- What each service is owed and has not acknowledged, in order: events
-- (kind 'event'), ephemeral events ('ephemeral') and to-device messages
-- ('to_device') in client format, and users whose device list changed
-- ('device_list', MSC3202). IDs are assigned by the component's
-- single writer, in the order the rows are queued.
CREATE TABLE as_queue (
    id         BIGINT PRIMARY KEY,
    service_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL
);
CREATE INDEX as_queue_service ON as_queue (service_id, id);

-- Each service's transactions: the ID of the last one built and, while it
-- is not acknowledged, its body (resent as is until the service answers
-- 2xx) and the last as_queue row it carries.
CREATE TABLE as_services (
    service_id  TEXT PRIMARY KEY,
    last_txn_id BIGINT NOT NULL,
    txn_body    TEXT,
    txn_last_id BIGINT NOT NULL
);
