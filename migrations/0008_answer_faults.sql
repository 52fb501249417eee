-- How an answer met the faults of its dependencies. `retrieval`: 'ok', or 'unavailable' when
-- the vector index failed and the answer was written without course passages (NULL for
-- questions and for answers stored before this migration). `failure`: for a failed answer,
-- the stable code the learner was given (llm_unavailable, llm_timeout, answer_too_long).
ALTER TABLE messages ADD COLUMN retrieval TEXT;
ALTER TABLE messages ADD COLUMN failure TEXT;
