-- The learner's mentor as the platform names them (the widget's "who can read this" panel names
-- the mentor, not their id). Portable SQL (SQLite and PostgreSQL).
ALTER TABLE learners ADD COLUMN mentor_name TEXT;
