-- The user directory (POST /user_directory/search): each user's profile as
-- the directory shows it, and the rooms whose members anyone may find.
CREATE TABLE sync_user_directory (
    user_id      TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url   TEXT
);
CREATE TABLE sync_public_rooms (
    room_id TEXT PRIMARY KEY
);
INSERT INTO sync_public_rooms (room_id)
    SELECT room_id FROM sync_state
    WHERE type = 'm.room.join_rules' AND state_key = '' AND to_pos IS NULL
        AND (event_json::jsonb)->'content'->>'join_rule' = 'public'
    ON CONFLICT (room_id) DO NOTHING;
INSERT INTO sync_user_directory (user_id, display_name, avatar_url)
    SELECT state_key, (event_json::jsonb)->'content'->>'displayname', (event_json::jsonb)->'content'->>'avatar_url'
    FROM sync_state
    WHERE type = 'm.room.member' AND membership = 'join' AND to_pos IS NULL
    ON CONFLICT (user_id) DO NOTHING;
