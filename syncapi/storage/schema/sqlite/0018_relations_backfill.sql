-- The relations of the events stored before sync_relations existed.
INSERT INTO sync_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key, sender, type, pos, edit_ok)
SELECT event_id, room_id,
    json_extract(event_json, '$.content."m.relates_to".event_id'),
    json_extract(event_json, '$.content."m.relates_to".rel_type'),
    CASE WHEN json_type(event_json, '$.content."m.relates_to".key') = 'text'
        THEN json_extract(event_json, '$.content."m.relates_to".key') END,
    sender, type, pos,
    json_extract(event_json, '$.content."m.relates_to".rel_type') = 'm.replace'
        AND json_type(event_json, '$.content."m.new_content"') = 'object' AND state_key IS NULL
FROM sync_events
WHERE NOT redacted AND event_json LIKE '%m.relates_to%' AND json_valid(event_json)
    AND json_type(event_json, '$.content."m.relates_to".rel_type') = 'text'
    AND json_type(event_json, '$.content."m.relates_to".event_id') = 'text'
ON CONFLICT (event_id) DO NOTHING;

INSERT INTO sync_threads (room_id, thread_id, latest_event_id, latest_pos)
SELECT room_id, relates_to_id, event_id, pos FROM (
    SELECT room_id, relates_to_id, event_id, pos,
        ROW_NUMBER() OVER (PARTITION BY room_id, relates_to_id ORDER BY pos DESC) AS n
    FROM sync_relations WHERE rel_type = 'm.thread') t
WHERE n = 1;
