-- Rooms local users forgot (POST /forget): the member event (a leave or a
-- ban) that was current then. A room is forgotten while that event is
-- still the user's current membership of it.
CREATE TABLE sync_forgotten (
    user_id  TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
