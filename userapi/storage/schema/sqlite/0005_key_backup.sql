-- Server-side key backups (/room_keys).
--
-- user_key_backup_owners: one row per user who ever created a backup; it
-- numbers the user's versions (never reused) and is the lock that orders
-- every write to the user's backups.
CREATE TABLE user_key_backup_owners (
    user_id      TEXT PRIMARY KEY,
    last_version BIGINT NOT NULL
);

-- A backup version. A deleted version keeps its row (deleted, no keys) so
-- that deleting it again succeeds. etag is bumped whenever the version's
-- keys change; key_count is the number of its sessions.
CREATE TABLE user_key_backups (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL DEFAULT 0,
    key_count BIGINT NOT NULL DEFAULT 0,
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- The backed-up megolm sessions of a version; session_data is the client's
-- encrypted JSON object.
CREATE TABLE user_key_backup_sessions (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
