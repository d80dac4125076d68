-- Push rules: one row per user who changed anything, holding the user's
-- own rules and the changes to server-default rules as JSON
-- (pushrules.UserRules). Edits read and write the row in one transaction.
CREATE TABLE user_push_rules (
    user_id TEXT PRIMARY KEY,
    rules   TEXT NOT NULL
);

-- Pushers (POST /pushers/set). A pusher is identified by its user, app ID
-- and push key; it belongs to the device whose access token created it
-- and is deleted with that device.
CREATE TABLE user_pushers (
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT NOT NULL DEFAULT '',
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,
    created_ts          BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX user_pushers_key ON user_pushers (app_id, pushkey);
CREATE INDEX user_pushers_device ON user_pushers (user_id, device_id);
