CREATE TABLE user_accounts (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    created_ts    BIGINT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    user_type     TEXT NOT NULL DEFAULT ''
);

CREATE TABLE user_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO user_counters (name, value) VALUES ('generated_localpart', 0);

CREATE TABLE user_devices (
    user_id              TEXT NOT NULL,
    device_id            TEXT NOT NULL,
    display_name         TEXT,
    created_ts           BIGINT NOT NULL,
    last_seen_ts         BIGINT NOT NULL DEFAULT 0,
    last_seen_ip         TEXT NOT NULL DEFAULT '',
    last_seen_user_agent TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE user_access_tokens (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash       BLOB NOT NULL UNIQUE,
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    expires_ts       BIGINT,
    refresh_token_id BIGINT,
    used             BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX user_access_tokens_device ON user_access_tokens (user_id, device_id);

CREATE TABLE user_refresh_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash    BLOB NOT NULL UNIQUE,
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    next_token_id BIGINT
);
CREATE INDEX user_refresh_tokens_device ON user_refresh_tokens (user_id, device_id);
CREATE INDEX user_refresh_tokens_next ON user_refresh_tokens (next_token_id);

CREATE TABLE user_profiles (
    user_id TEXT NOT NULL,
    field   TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

CREATE TABLE user_account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
