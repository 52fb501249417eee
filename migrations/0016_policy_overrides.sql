-- Course and project policies written through the API (issue 12), so that every node on one
-- database enforces the same text. Portable SQL: SQLite and PostgreSQL run it as is.
--
-- The override in force per course and project (`project` '' for the course's own policy): it
-- stands instead of the policy file until it is deleted. `version` is that of the change that
-- wrote it.
CREATE TABLE IF NOT EXISTS policy_overrides (
    course_id TEXT NOT NULL,
    project TEXT NOT NULL,
    text TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (course_id, project)
);

-- Every change, kept for the course's team to read: a text written, or the override deleted
-- (`text` NULL). Versions count the changes of one policy from 1; two writers who take the
-- same number are told apart by the key, and the second is refused.
CREATE TABLE IF NOT EXISTS policy_override_changes (
    course_id TEXT NOT NULL,
    project TEXT NOT NULL,
    version BIGINT NOT NULL,
    text TEXT,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (course_id, project, version)
);

-- Bumped in the same transaction as every change: a node compares it with the one it loaded,
-- once per turn, and reads the overrides again when it moved.
CREATE TABLE IF NOT EXISTS policy_generation (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO policy_generation (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
