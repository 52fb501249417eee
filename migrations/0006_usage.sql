-- Per-learner usage, counted here so that quotas hold across every node sharing the database.
-- Portable SQL (SQLite and PostgreSQL).

-- One row per learner, quota and window (a minute, an hour, a UTC day, by the window's start in
-- ms); `used` only grows, by an atomic upsert that refuses to pass the limit. Old windows are
-- deleted now and then.
CREATE TABLE IF NOT EXISTS usage_counters (
    learner_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (learner_id, kind, window_start)
);
CREATE INDEX IF NOT EXISTS usage_counters_window ON usage_counters (window_start);

-- Answers streaming at once per learner: slot n of a learner is held by one answer (`holder`)
-- until it ends or `expires_at` passes (a node that died mid-answer).
CREATE TABLE IF NOT EXISTS stream_slots (
    learner_id TEXT NOT NULL,
    slot BIGINT NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (learner_id, slot)
);

-- Learners erased: a token issued before `erased_at` (ms) no longer opens a socket, asks, or
-- re-creates the profile.
CREATE TABLE IF NOT EXISTS erased_learners (
    learner_id TEXT PRIMARY KEY,
    erased_at BIGINT NOT NULL
);
