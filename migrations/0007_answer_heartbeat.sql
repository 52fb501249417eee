-- Answers carry the node that streams them and when that node last said it was still writing
-- (with each checkpoint, or a heartbeat while the model is silent). Start-up and each node's
-- sweeper mark `interrupted` only answers whose heartbeat is stale, never another live node's.
-- Rows written before this migration have neither: their `updated_at` stands in.
ALTER TABLE messages ADD COLUMN owner_node TEXT;
ALTER TABLE messages ADD COLUMN heartbeat_at BIGINT;
