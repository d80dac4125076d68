-- Reports of events, rooms and users (report_content.md), for the
-- server's administrators (the admin API's event_reports).
CREATE TABLE cs_reports (
    id             BIGSERIAL PRIMARY KEY,
    kind           TEXT NOT NULL,
    received_ts    BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    room_id        TEXT NOT NULL DEFAULT '',
    event_id       TEXT NOT NULL DEFAULT '',
    event_sender   TEXT NOT NULL DEFAULT '',
    target_user_id TEXT NOT NULL DEFAULT '',
    reason         TEXT,
    score          BIGINT
);
CREATE INDEX cs_reports_kind_ts ON cs_reports (kind, received_ts);
