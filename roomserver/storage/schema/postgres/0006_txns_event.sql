-- A device's transaction by the event it made, for unsigned.transaction_id
-- of GET /rooms/{roomId}/event/{eventId}.
CREATE INDEX rs_txns_event ON rs_txns (event_id, user_id, device_id);
