-- The relations of the events stored before sync_relations existed. An
-- event whose JSON PostgreSQL cannot read as jsonb (a \u0000 escape) is
-- skipped rather than failing the migration.
DO $$
DECLARE
    r RECORD;
    c jsonb;
BEGIN
    FOR r IN SELECT event_id, room_id, sender, type, state_key, pos, event_json FROM sync_events
        WHERE NOT redacted AND event_json LIKE '%m.relates_to%' LOOP
        BEGIN
            c := r.event_json::jsonb -> 'content';
        EXCEPTION WHEN others THEN
            CONTINUE;
        END;
        IF jsonb_typeof(c -> 'm.relates_to' -> 'rel_type') = 'string'
            AND jsonb_typeof(c -> 'm.relates_to' -> 'event_id') = 'string' THEN
            INSERT INTO sync_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key, sender, type, pos, edit_ok)
            VALUES (r.event_id, r.room_id, c -> 'm.relates_to' ->> 'event_id', c -> 'm.relates_to' ->> 'rel_type',
                CASE WHEN jsonb_typeof(c -> 'm.relates_to' -> 'key') = 'string' THEN c -> 'm.relates_to' ->> 'key' END,
                r.sender, r.type, r.pos,
                (c -> 'm.relates_to' ->> 'rel_type') = 'm.replace' AND jsonb_typeof(c -> 'm.new_content') = 'object'
                    AND r.state_key IS NULL)
            ON CONFLICT (event_id) DO NOTHING;
        END IF;
    END LOOP;
END $$;

INSERT INTO sync_threads (room_id, thread_id, latest_event_id, latest_pos)
SELECT room_id, relates_to_id, event_id, pos FROM (
    SELECT room_id, relates_to_id, event_id, pos,
        ROW_NUMBER() OVER (PARTITION BY room_id, relates_to_id ORDER BY pos DESC) AS n
    FROM sync_relations WHERE rel_type = 'm.thread') t
WHERE n = 1;
