CREATE TABLE cs_uia_sessions (
    session_id         TEXT PRIMARY KEY,
    created_ts         BIGINT NOT NULL,
    method             TEXT NOT NULL,
    path               TEXT NOT NULL,
    completed          TEXT NOT NULL,
    registration_token TEXT
);
CREATE INDEX cs_uia_sessions_created ON cs_uia_sessions (created_ts);

CREATE TABLE cs_registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending      BIGINT NOT NULL DEFAULT 0,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_time  BIGINT
);

CREATE TABLE cs_register_nonces (
    nonce      TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);
