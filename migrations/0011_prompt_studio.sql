-- The prompt studio (issue 13): course teams' prompt versions, labels and A/B experiments, in the
-- database so that every node sees the same. Portable SQL: SQLite and PostgreSQL run it as is.
--
-- A version is immutable. The versions of one course's template form one line: each names the
-- version it was edited from (`parent_key`, '' for the first), and no two share a parent, so of
-- two editors saving on the same parent the second is refused by this constraint, whatever the
-- timing, and nothing is overwritten. `course_id` is a course id, or '*' for every course.
CREATE TABLE IF NOT EXISTS prompt_versions (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL,
    template TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    parent_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS prompt_versions_parent
    ON prompt_versions (course_id, template, parent_key);

-- Which version a label (`production`, `candidate`, any name) points to, per course and template.
-- A version id is a stored one or a shipped default's (`default:system@<sha>`).
CREATE TABLE IF NOT EXISTS prompt_labels (
    course_id TEXT NOT NULL,
    template TEXT NOT NULL,
    label TEXT NOT NULL,
    version_id TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (course_id, template, label)
);

-- Every move of a label, so that a rollback puts it back where it was: a rollback undoes the
-- newest move not yet undone (`undone_at`). `from_version` NULL: the label did not exist.
CREATE TABLE IF NOT EXISTS prompt_label_moves (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL,
    template TEXT NOT NULL,
    label TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT,
    moved_by TEXT NOT NULL,
    moved_at BIGINT NOT NULL,
    undone_at BIGINT
);
CREATE INDEX IF NOT EXISTS prompt_label_moves_label
    ON prompt_label_moves (course_id, template, label, moved_at);

-- A/B experiments: arms as JSON (`[{"version": ..., "percent": ...}]`), at most one running per
-- course and template (checked in the transaction that starts one).
CREATE TABLE IF NOT EXISTS prompt_experiments (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL,
    template TEXT NOT NULL,
    arms TEXT NOT NULL,
    -- running | stopped
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    stopped_at BIGINT
);
CREATE INDEX IF NOT EXISTS prompt_experiments_course ON prompt_experiments (course_id, status);

-- Bumped in the same transaction as every change of what a turn uses (a label moved, an
-- experiment started or stopped): a node compares it with the one it loaded, once per turn.
CREATE TABLE IF NOT EXISTS prompt_generation (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO prompt_generation (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- The experiment an answer was written under, if any (its arm is its `prompt_version`).
ALTER TABLE messages ADD COLUMN prompt_experiment TEXT;
CREATE INDEX IF NOT EXISTS messages_prompt_experiment ON messages (prompt_experiment);
