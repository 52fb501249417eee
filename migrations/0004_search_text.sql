-- Each message's text case-folded by the application (Unicode, so "Élève" finds "élève"):
-- SQLite's lower() folds ASCII only. Rows written before this column are filled at start-up.
ALTER TABLE messages ADD COLUMN search_text TEXT;
