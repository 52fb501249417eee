-- Flags a mentor can rely on (issue 17): each flag keeps the score of the rule that raised it,
-- and every message that raised or joined a flag is one signal, so a learner's repeated signals
-- are grouped under one open flag (not stacked) and a kind's trend over the weeks can be drawn.
-- Signals go with their flag and their message (cascade) and with the learner's review rows.
ALTER TABLE flags ADD COLUMN score DOUBLE PRECISION;

CREATE TABLE IF NOT EXISTS flag_signals (
    id TEXT PRIMARY KEY,
    flag_id TEXT NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    learner_id TEXT NOT NULL,
    message_id TEXT REFERENCES messages (id) ON DELETE CASCADE,
    -- the flag's kind, so a trend is read without the flags
    kind TEXT NOT NULL,
    score DOUBLE PRECISION,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS flag_signals_learner ON flag_signals (learner_id, kind, created_at);
CREATE INDEX IF NOT EXISTS flag_signals_flag ON flag_signals (flag_id);
