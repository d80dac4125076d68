-- Notifications: one row per event that notified local users (as their
-- push rules decided), with the users it notified in one column, written
-- in the same transaction as the event. users is "\n" then, per user,
-- "<user_id>\t<highlight 0|1>\t<index into actions>\n", so that a user's
-- entry is found by a substring search; actions is a JSON array of the
-- distinct actions arrays of the rules that matched.
CREATE TABLE sync_notification_events (
    event_pos BIGINT PRIMARY KEY,
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    ts        BIGINT NOT NULL,
    users     TEXT NOT NULL,
    actions   TEXT NOT NULL
);
CREATE INDEX sync_notification_events_room ON sync_notification_events (room_id, event_pos);

-- Unread notification counts per user, room and thread ("main" for the
-- main timeline), kept in memory and saved in batches: the rows reflect
-- every notification event up to the position saved as the consumer
-- 'syncapi-unread' in sync_consumers. last_pos is the newest notification
-- counted. Rows with no unread notification are deleted.
CREATE TABLE sync_unread (
    user_id       TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    thread_id     TEXT NOT NULL,
    notifications BIGINT NOT NULL,
    highlights    BIGINT NOT NULL,
    last_pos      BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);

-- How far each pusher has been delivered: the event_pos of the last
-- notification event it handled.
CREATE TABLE sync_pusher_progress (
    user_id  TEXT NOT NULL,
    app_id   TEXT NOT NULL,
    pushkey  TEXT NOT NULL,
    last_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
