-- The sender of the state event a timeline event replaced, served as
-- unsigned.prev_sender next to prev_content (as Synapse).
ALTER TABLE sync_events ADD COLUMN prev_sender TEXT;
