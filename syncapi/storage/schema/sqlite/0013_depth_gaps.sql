-- The depth of timeline events (initial syncs order a room's latest events
-- by it, as Synapse, so that a late event on a fork of the DAG does not
-- hide the state change of a newer one), and the events that follow a gap
-- in the room's history (their prev events were missing: incremental syncs
-- start the timeline there and mark it limited).
ALTER TABLE sync_events ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sync_events ADD COLUMN after_gap BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE sync_events SET depth = COALESCE(CAST(json_extract(event_json, '$.depth') AS BIGINT), 0);
CREATE INDEX sync_events_gap ON sync_events (room_id, pos) WHERE after_gap;
