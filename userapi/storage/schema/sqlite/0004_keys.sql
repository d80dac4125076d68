-- End-to-end encryption keys of local users.

-- Device keys (DeviceKeys objects, canonical JSON as uploaded, without the
-- signatures uploaded later: those are in user_key_signatures).
CREATE TABLE user_device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    added_ts  BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys, claimed (deleted) oldest first: seq is the upload order.
CREATE TABLE user_one_time_keys (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    UNIQUE (user_id, device_id, algorithm, key_id)
);
CREATE INDEX user_one_time_keys_claim ON user_one_time_keys (user_id, device_id, algorithm, seq);

-- Fallback keys: one per device and algorithm; used once claimed (and
-- still handed out until replaced).
CREATE TABLE user_fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys (key_type master, self_signing or user_signing) as
-- uploaded; public_key is the unpadded base64 public key, which stands for
-- the key where a device ID would (signatures, /keys/signatures/upload).
CREATE TABLE user_cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload: by signer_user_id's
-- key signer_key_id ("ed25519:<device ID or public key>") over
-- target_user_id's device or cross-signing key target_key_id (device ID or
-- public key).
CREATE TABLE user_key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- The per-user stream of device-list and cross-signing changes
-- (api.KeyChange): the last stream ID assigned, the last one of a device
-- change and the device change before that (the prev_id chain).
CREATE TABLE user_key_streams (
    user_id               TEXT PRIMARY KEY,
    stream_id             BIGINT NOT NULL,
    device_stream_id      BIGINT NOT NULL,
    prev_device_stream_id BIGINT NOT NULL
);

-- Messages for UserOutput written in the transaction of their change and
-- published after commit, in id order.
CREATE TABLE user_outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    msg_id  TEXT NOT NULL,
    payload TEXT NOT NULL
);
