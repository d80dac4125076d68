-- Events of a room by timestamp, for timestamp_to_event.
CREATE INDEX rs_events_room_ts ON rs_events (room_nid, origin_server_ts);
