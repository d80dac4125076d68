-- The servers with a user joined to each room, with how many of their users
-- are, kept with rs_membership in the same transaction: the servers of a room
-- (federation fanout, "is this server in the room") are read without reading
-- its member list.
CREATE TABLE rs_joined_servers (
    room_nid BIGINT NOT NULL,
    server_name TEXT NOT NULL,
    joined BIGINT NOT NULL,
    PRIMARY KEY (room_nid, server_name)
);
INSERT INTO rs_joined_servers (room_nid, server_name, joined)
    SELECT room_nid, substr(user_id, instr(user_id, ':') + 1), COUNT(*) FROM rs_membership
    WHERE membership = 'join' AND user_id LIKE '@%:%'
    GROUP BY room_nid, substr(user_id, instr(user_id, ':') + 1);
