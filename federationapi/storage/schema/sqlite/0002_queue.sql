-- Outgoing queues: one row per (destination, PDU or EDU), the payload
-- stored once however many servers it goes to.
CREATE TABLE fed_queue_payloads (
	payload_nid INTEGER PRIMARY KEY AUTOINCREMENT,
	payload     TEXT NOT NULL
);
CREATE TABLE fed_queue (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	destination TEXT NOT NULL,
	edu_type    TEXT,
	payload_nid BIGINT NOT NULL,
	queued_ts   BIGINT NOT NULL
);
CREATE INDEX fed_queue_destination ON fed_queue (destination, seq);
CREATE INDEX fed_queue_payload ON fed_queue (payload_nid);

-- Backoff of destinations that failed.
CREATE TABLE fed_destinations (
	server_name TEXT PRIMARY KEY,
	failures    INTEGER NOT NULL,
	retry_at    BIGINT NOT NULL,
	updated_ts  BIGINT NOT NULL
);

-- Responses to received transactions, so that a retried transaction gets
-- the same answer and is not applied twice.
CREATE TABLE fed_received_txns (
	origin      TEXT NOT NULL,
	txn_id      TEXT NOT NULL,
	response    TEXT NOT NULL,
	received_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
CREATE INDEX fed_received_txns_ts ON fed_received_txns (received_ts);

-- Last stream sequence each consumer applied.
CREATE TABLE fed_consumers (
	name TEXT PRIMARY KEY,
	seq  BIGINT NOT NULL
);
