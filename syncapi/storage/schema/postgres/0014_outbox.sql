-- Messages for FederationOut (local users' public read receipts) written in
-- the transaction that stores them and published after commit, in id order;
-- a crash in between leaves them to the relay at the next start.
CREATE TABLE sync_outbox (
    id      BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    msg_id  TEXT NOT NULL,
    payload TEXT NOT NULL
);
