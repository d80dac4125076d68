-- MSC3814 dehydrated devices: at most one per user. The device itself is a
-- row of user_devices (with no access token); this holds its data.
CREATE TABLE user_dehydrated_devices (
    user_id     TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    device_data TEXT NOT NULL
);
