-- Verify keys of other servers, fetched directly or through notaries: the
-- keyring's cache. valid_until_ts bounds what a current key may verify
-- (0 for old keys); expired_ts is set for old keys (old_verify_keys), which
-- verify only what was signed before it (0 for current keys).
CREATE TABLE fed_server_keys (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	public_key     TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts     BIGINT NOT NULL DEFAULT 0,
	fetched_ts     BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);

-- The last key response (GET /_matrix/key/v2/server) fetched directly from
-- each server that listed a key, as the server signed it, for the notary
-- endpoints (/_matrix/key/v2/query). One row per key ID of the response, so
-- a key that a later response no longer lists is still answered.
CREATE TABLE fed_server_key_responses (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	fetched_ts     BIGINT NOT NULL,
	response       TEXT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
