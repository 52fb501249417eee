-- Learner profiles, mentor sessions and learners' project files. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE IF NOT EXISTS learners (
    id TEXT PRIMARY KEY,
    name TEXT,
    -- BCP 47 language tag the answers follow ("en", "fr").
    locale TEXT NOT NULL DEFAULT 'en',
    program TEXT,
    course_id TEXT,
    chapter TEXT,
    project TEXT,
    -- JSON array of chapter ids.
    chapters_completed TEXT NOT NULL DEFAULT '[]',
    mentor_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS learners_mentor ON learners (mentor_id);

CREATE TABLE IF NOT EXISTS mentor_sessions (
    id TEXT PRIMARY KEY,
    learner_id TEXT NOT NULL,
    mentor_id TEXT NOT NULL,
    -- The day the session was held, YYYY-MM-DD.
    held_on TEXT NOT NULL,
    notes TEXT NOT NULL,
    -- JSON array of strings: what the learner should do before the next session.
    goals TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS mentor_sessions_learner ON mentor_sessions (learner_id, held_on);

CREATE TABLE IF NOT EXISTS project_files (
    learner_id TEXT NOT NULL,
    project TEXT NOT NULL,
    path TEXT NOT NULL,
    content TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    -- api | archive | chat | git
    origin TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (learner_id, project, path)
);
