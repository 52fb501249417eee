-- What the output guard did to an answer (JSON: the blocks it withheld, as the model wrote them,
-- with the rule that fired; citations removed; whether the answer cited nothing). NULL when the
-- answer went out as the model wrote it. Never sent to the learner.
ALTER TABLE messages ADD COLUMN guard TEXT;
