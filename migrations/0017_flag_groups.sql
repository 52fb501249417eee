-- A learner's repeated signals of one kind join one open flag (issue 17), and two messages read
-- at the same moment must not both open one: a flag raised from the learner's words carries its
-- group (`<kind>:<severity>`), and a learner has at most one open flag per group. Flags raised
-- otherwise (the button, repeats, thumbs-down, moderation, the guard) have none and stack as
-- before. Portable SQL (SQLite and PostgreSQL both have partial unique indexes).
ALTER TABLE flags ADD COLUMN group_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS flags_open_group ON flags (learner_id, group_key)
    WHERE resolved_at IS NULL AND group_key IS NOT NULL;
