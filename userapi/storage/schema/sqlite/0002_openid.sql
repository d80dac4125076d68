-- OpenID tokens (/user/{userId}/openid/request_token) that other servers
-- check through /_matrix/federation/v1/openid/userinfo. Only the SHA-256
-- of a token is stored.
CREATE TABLE user_openid_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX user_openid_tokens_expiry ON user_openid_tokens (expires_ts);
