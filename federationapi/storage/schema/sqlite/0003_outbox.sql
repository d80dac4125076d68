-- Messages the federation API committed for publishing (FederationIn: the
-- EDUs of a received transaction, in the transaction that stores its
-- response), published after the commit with their message IDs.
CREATE TABLE fed_outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    msg_id  TEXT NOT NULL,
    payload TEXT NOT NULL
);
