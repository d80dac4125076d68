-- The device-list stream: per user (local or remote), the position of the
-- latest change to their devices or cross-signing keys (pos), and of the
-- latest one the users sharing a room with them see (shared_pos: a change
-- of one's user-signing key concerns one's own devices alone). Positions
-- are assigned by the sync API's single consumer of key changes.
CREATE TABLE sync_device_lists (
    user_id    TEXT PRIMARY KEY,
    pos        BIGINT NOT NULL,
    shared_pos BIGINT NOT NULL
);
CREATE INDEX sync_device_lists_pos ON sync_device_lists (pos);

-- Who joined or left the rooms a user is in since a sync token.
CREATE INDEX sync_memberships_room_pos ON sync_memberships (room_id, pos);
