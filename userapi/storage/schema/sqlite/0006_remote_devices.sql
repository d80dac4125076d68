-- The remote device cache: the device lists and cross-signing keys of
-- remote users who share a room with local users. stream_id is the
-- stream ID of the last update applied (the remote server's), seen_id the
-- highest one received. A stale list (updates were missed, or the user was
-- never fetched) is not served until a resync replaces it.
CREATE TABLE user_remote_device_lists (
    user_id          TEXT PRIMARY KEY,
    stream_id        BIGINT NOT NULL,
    seen_id          BIGINT NOT NULL,
    stale            BOOLEAN NOT NULL,
    master_key       TEXT,
    self_signing_key TEXT
);
CREATE INDEX user_remote_device_lists_stale ON user_remote_device_lists (stale);

CREATE TABLE user_remote_devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    keys         TEXT,
    PRIMARY KEY (user_id, device_id)
);
