-- The prompt inspector and replays (issue 13). Portable SQL: SQLite and PostgreSQL run it as is.
--
-- What the model received for an answer: every chat message with its role, text and tokens,
-- each part's tokens, what the budget left out, the values the system template was rendered
-- with and the blocks of the user message (the passages and learner context as they went in).
-- One JSON document per answer, written with the answer's final row. Bounded: the prompt is
-- already cut to the model window minus the answer's reserve, and the blocks are the same
-- text, so a row holds at most about twice that. Gone with its message (erasure, retention).
-- `course_id`: the course the turn was about (the ask's, else the learner's), which decides
-- who may read it and which replays may choose it.
CREATE TABLE IF NOT EXISTS answer_prompts (
    message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    course_id TEXT,
    record TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS answer_prompts_course ON answer_prompts (course_id, created_at);

-- A replay: past answers of a course, chosen by a filter (JSON), answered again from their
-- stored prompts with a candidate version, in the background. `status`: running | done |
-- cancelled | failed. `done_turns` grows as turns are answered, for progress on any node;
-- cancelling is a write of `status` that the worker reads before each turn.
CREATE TABLE IF NOT EXISTS prompt_replays (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL,
    template TEXT NOT NULL,
    candidate TEXT NOT NULL,
    filter TEXT NOT NULL,
    status TEXT NOT NULL,
    total_turns BIGINT NOT NULL,
    done_turns BIGINT NOT NULL,
    model TEXT NOT NULL,
    offline BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS prompt_replays_course ON prompt_replays (course_id, created_at);

-- One replayed turn: the original question and answer beside the candidate's. Never a message:
-- the candidate's answer is not in any conversation, never shown to the learner and never
-- read as their history. Gone with the original answer (erasure, retention) and the replay.
CREATE TABLE IF NOT EXISTS prompt_replay_turns (
    replay_id TEXT NOT NULL REFERENCES prompt_replays (id) ON DELETE CASCADE,
    n BIGINT NOT NULL,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    question TEXT NOT NULL,
    original TEXT NOT NULL,
    original_version TEXT,
    candidate TEXT,
    -- pending | done | failed | cancelled
    status TEXT NOT NULL,
    tokens_in BIGINT,
    tokens_out BIGINT,
    error TEXT,
    PRIMARY KEY (replay_id, n)
);
CREATE INDEX IF NOT EXISTS prompt_replay_turns_message ON prompt_replay_turns (message_id);
