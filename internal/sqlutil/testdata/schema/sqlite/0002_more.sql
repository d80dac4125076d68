ALTER TABLE t_items ADD COLUMN note TEXT NOT NULL DEFAULT '';
CREATE INDEX t_items_n ON t_items (n);
