-- The current members of a room in the order their membership took effect:
-- a room summary's heroes are its first few members, found without reading
-- every member of a big room.
CREATE INDEX sync_state_members ON sync_state (room_id, type, from_pos) WHERE to_pos IS NULL;
