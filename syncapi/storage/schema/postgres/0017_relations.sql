-- Relations between events (content."m.relates_to", client-server API
-- "Forming relationships between events"): one row per related event,
-- written as it joins the timeline and deleted when it is redacted (a
-- redacted event relates to nothing, as in Synapse). sender, type and pos
-- are the child's, copied from sync_events so that aggregations and
-- /relations pages read this table alone. edit_ok: the child is a
-- candidate replacement (m.replace with m.new_content, not a state event).
CREATE TABLE sync_relations (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    relates_to_id   TEXT NOT NULL,
    rel_type        TEXT NOT NULL,
    aggregation_key TEXT,
    sender          TEXT NOT NULL,
    type            TEXT NOT NULL,
    pos             BIGINT NOT NULL,
    edit_ok         BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sync_relations_parent ON sync_relations (relates_to_id, pos);

-- The threads of a room (m.thread relations) by their latest reply, for
-- GET /rooms/{roomId}/threads.
CREATE TABLE sync_threads (
    room_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_pos      BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX sync_threads_latest ON sync_threads (room_id, latest_pos);

-- Thread subscriptions (MSC4306): a user's subscription to a thread,
-- manual or automatic (caused by an event of the thread); an unsubscribe
-- keeps the row, unsubscribed, with the timeline position it happened at,
-- so that an automatic subscription caused by an earlier event is refused.
CREATE TABLE sync_thread_subscriptions (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    subscribed      BOOLEAN NOT NULL,
    automatic       BOOLEAN NOT NULL,
    unsubscribed_at BIGINT,
    PRIMARY KEY (user_id, room_id, thread_id)
);
