-- The mentor's review: learners' feedback on answers, flags that need a human, mentors'
-- annotations. Portable SQL (SQLite and PostgreSQL). Rows hang off messages and go with them
-- (cascade, and explicit deletes in the store for retention and a learner's deletion).
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    learner_id TEXT NOT NULL,
    -- up | down
    rating TEXT NOT NULL,
    comment TEXT,
    created_at BIGINT NOT NULL
);
-- One rating per learner and answer; a new one replaces the old.
CREATE UNIQUE INDEX IF NOT EXISTS feedback_message_learner ON feedback (message_id, learner_id);
CREATE INDEX IF NOT EXISTS feedback_learner ON feedback (learner_id, created_at);

CREATE TABLE IF NOT EXISTS flags (
    id TEXT PRIMARY KEY,
    learner_id TEXT NOT NULL,
    conversation_id TEXT,
    -- The message the flag points to (the learner's question, usually).
    message_id TEXT REFERENCES messages (id) ON DELETE CASCADE,
    -- human_requested | stuck | distress | moderation
    kind TEXT NOT NULL,
    -- normal | urgent
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT,
    resolved_by TEXT,
    resolution TEXT
);
CREATE INDEX IF NOT EXISTS flags_learner ON flags (learner_id, resolved_at);
CREATE INDEX IF NOT EXISTS flags_message ON flags (message_id);

CREATE TABLE IF NOT EXISTS annotations (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    learner_id TEXT NOT NULL,
    author_id TEXT NOT NULL,
    -- correction | comment
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_message ON annotations (message_id);
CREATE INDEX IF NOT EXISTS annotations_learner ON annotations (learner_id);

CREATE INDEX IF NOT EXISTS messages_learner ON messages (learner_id, created_at);
