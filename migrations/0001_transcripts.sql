-- Conversations and messages. Portable SQL: the same file migrates SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    learner_id TEXT NOT NULL,
    course_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_learner ON conversations (learner_id, updated_at);

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    learner_id TEXT NOT NULL,
    -- The id the client chose for a question; NULL for answers.
    client_id TEXT,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    -- complete | streaming | cancelled | interrupted | failed
    status TEXT NOT NULL,
    reply_to TEXT,
    sources TEXT,
    prompt_version TEXT,
    model TEXT,
    offline INTEGER NOT NULL DEFAULT 0,
    tokens_in BIGINT,
    tokens_out BIGINT,
    retrieval_ms BIGINT,
    first_token_ms BIGINT,
    total_ms BIGINT,
    page_url TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id ON messages (learner_id, client_id);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, created_at);
CREATE INDEX IF NOT EXISTS messages_reply_to ON messages (reply_to);
CREATE INDEX IF NOT EXISTS messages_status ON messages (status);
