//! The prompt inspector's and replays' SQL (migration 0014): the prompt kept beside each model
//! answer, and replays with their turns. A replayed answer is a row of `prompt_replay_turns`,
//! never a message: no conversation, history or learner read ever sees it.
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, rows};
use crate::prompt::PromptRecord;
use crate::prompt::replay::{Replay, ReplayFilter, ReplayStatus, ReplayTurn};
use crate::transcript::now_ms;

/// A model answer's stored prompt, with what decides who may read it.
#[derive(Debug, Clone)]
pub struct StoredPrompt {
    pub message_id: String,
    pub learner_id: String,
    /// The course the turn was about, else its conversation's.
    pub course_id: Option<String>,
    pub prompt_version: Option<String>,
    pub model: Option<String>,
    pub created_at: i64,
    pub record: PromptRecord,
}

/// The newest replays a course lists.
const REPLAY_LIST_LIMIT: i64 = 50;
const REPLAY_COLUMNS: &str = "id, course_id, candidate, filter, status, total_turns, done_turns, \
     model, offline, created_by, created_at, finished_at, error";
const TURN_COLUMNS: &str = "n, message_id, question, original, original_version, candidate, \
     status, tokens_in, tokens_out, error";

fn replay(row: &AnyRow) -> Result<Replay, StoreError> {
    let status: String = row.try_get("status")?;
    let filter: String = row.try_get("filter")?;
    Ok(Replay {
        id: row.try_get("id")?,
        course: row.try_get("course_id")?,
        candidate: row.try_get("candidate")?,
        filter: serde_json::from_str(&filter).map_err(|source| StoreError::Json {
            column: "filter",
            source,
        })?,
        status: ReplayStatus::parse(&status).ok_or(StoreError::Decode {
            column: "status",
            value: status,
        })?,
        total_turns: row.try_get("total_turns")?,
        done_turns: row.try_get("done_turns")?,
        model: row.try_get("model")?,
        offline: row.try_get::<i64, _>("offline")? != 0,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
    })
}

fn turn(row: &AnyRow) -> Result<ReplayTurn, StoreError> {
    Ok(ReplayTurn {
        n: row.try_get("n")?,
        message_id: row.try_get("message_id")?,
        question: row.try_get("question")?,
        original: row.try_get("original")?,
        original_version: row.try_get("original_version")?,
        candidate: row.try_get("candidate")?,
        status: row.try_get("status")?,
        tokens_in: row.try_get("tokens_in")?,
        tokens_out: row.try_get("tokens_out")?,
        error: row.try_get("error")?,
    })
}

impl Store {
    /// The prompt kept with answer `message_id`; `None` when there is none (an offline reply,
    /// a question, an answer written before prompts were kept, or no such message).
    pub async fn answer_prompt(
        &self,
        message_id: &str,
    ) -> Result<Option<StoredPrompt>, StoreError> {
        let row = sqlx::query(
            "SELECT a.message_id, a.course_id, a.record, m.learner_id, m.prompt_version, m.model, \
             m.created_at, c.course_id AS conversation_course FROM answer_prompts a \
             JOIN messages m ON m.id = a.message_id \
             JOIN conversations c ON c.id = m.conversation_id WHERE a.message_id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record: String = row.try_get("record")?;
        let course: Option<String> = row.try_get("course_id")?;
        let conversation_course: Option<String> = row.try_get("conversation_course")?;
        Ok(Some(StoredPrompt {
            message_id: row.try_get("message_id")?,
            learner_id: row.try_get("learner_id")?,
            course_id: course.or(conversation_course),
            prompt_version: row.try_get("prompt_version")?,
            model: row.try_get("model")?,
            created_at: row.try_get("created_at")?,
            record: serde_json::from_str(&record).map_err(|source| StoreError::Json {
                column: "record",
                source,
            })?,
        }))
    }

    /// The newest `limit` answers of `course` with a kept prompt that match `filter`, newest
    /// first.
    pub async fn replay_candidates(
        &self,
        course: &str,
        filter: &ReplayFilter,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = String::from(
            "SELECT a.message_id FROM answer_prompts a JOIN messages m ON m.id = a.message_id \
             WHERE a.course_id = $1",
        );
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.from_ms.is_some() {
            sql.push_str(&format!(" AND m.created_at >= {}", next()));
        }
        if filter.to_ms.is_some() {
            sql.push_str(&format!(" AND m.created_at < {}", next()));
        }
        if filter.prompt_version.is_some() {
            sql.push_str(&format!(" AND m.prompt_version = {}", next()));
        }
        if filter.thumbs_down {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM feedback f WHERE f.message_id = m.id \
                 AND f.rating = 'down')",
            );
        }
        if filter.flagged {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM flags g WHERE g.message_id = m.id \
                 OR g.message_id = m.reply_to)",
            );
        }
        sql.push_str(&format!(
            " ORDER BY m.created_at DESC, m.id DESC LIMIT {}",
            next()
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(course);
        if let Some(from) = filter.from_ms {
            query = query.bind(from);
        }
        if let Some(to) = filter.to_ms {
            query = query.bind(to);
        }
        if let Some(version) = &filter.prompt_version {
            query = query.bind(version.clone());
        }
        let rows = query.bind(limit as i64).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("message_id")?))
            .collect()
    }

    /// Stores a new running replay and its turns (the original question and answer copied
    /// beside each), in one transaction.
    pub async fn create_replay(
        &self,
        replay: &Replay,
        message_ids: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO prompt_replays (id, course_id, template, candidate, filter, status, \
             total_turns, done_turns, model, offline, created_by, created_at) \
             VALUES ($1, $2, 'system', $3, $4, $5, $6, 0, $7, $8, $9, $10)",
        )
        .bind(&replay.id)
        .bind(&replay.course)
        .bind(&replay.candidate)
        .bind(rows::to_json(&replay.filter))
        .bind(replay.status.as_str())
        .bind(message_ids.len() as i64)
        .bind(&replay.model)
        .bind(i64::from(replay.offline))
        .bind(&replay.created_by)
        .bind(replay.created_at)
        .execute(&mut *tx)
        .await?;
        for (n, id) in message_ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO prompt_replay_turns (replay_id, n, message_id, question, original, \
                 original_version, status) \
                 SELECT $1, $2, m.id, COALESCE(q.text, ''), m.text, m.prompt_version, 'pending' \
                 FROM messages m LEFT JOIN messages q ON q.id = m.reply_to WHERE m.id = $3",
            )
            .bind(&replay.id)
            .bind(n as i64)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn replay(&self, id: &str) -> Result<Option<Replay>, StoreError> {
        let sql = format!("SELECT {REPLAY_COLUMNS} FROM prompt_replays WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(replay).transpose()
    }

    /// A course's newest replays, newest first.
    pub async fn replays(&self, course: &str) -> Result<Vec<Replay>, StoreError> {
        let sql = format!(
            "SELECT {REPLAY_COLUMNS} FROM prompt_replays WHERE course_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(course)
            .bind(REPLAY_LIST_LIMIT)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(replay).collect()
    }

    /// A page of a replay's turns: at most `limit`, those after turn `after` (all from the
    /// first when `None`), in order.
    pub async fn replay_turns(
        &self,
        id: &str,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ReplayTurn>, StoreError> {
        let sql = format!(
            "SELECT {TURN_COLUMNS} FROM prompt_replay_turns WHERE replay_id = $1 AND n > $2 \
             ORDER BY n LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(after.unwrap_or(-1))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(turn).collect()
    }

    /// The message of a replay's turn `n`.
    pub async fn replay_turn_message(
        &self,
        id: &str,
        n: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT message_id FROM prompt_replay_turns WHERE replay_id = $1 AND n = $2",
        )
        .bind(id)
        .bind(n)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("message_id")).transpose()?)
    }

    /// Stores the candidate's answer to turn `n` (or why there is none) and counts it done.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_replay_turn(
        &self,
        id: &str,
        n: i64,
        status: &str,
        candidate: Option<&str>,
        tokens: Option<(i64, i64)>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE prompt_replay_turns SET status = $1, candidate = $2, tokens_in = $3, \
             tokens_out = $4, error = $5 WHERE replay_id = $6 AND n = $7",
        )
        .bind(status)
        .bind(candidate)
        .bind(tokens.map(|t| t.0))
        .bind(tokens.map(|t| t.1))
        .bind(error)
        .bind(id)
        .bind(n)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE prompt_replays SET done_turns = done_turns + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a running replay as `status` (its turns still pending are marked cancelled); false
    /// when it was not running (already ended, or no such replay).
    pub async fn end_replay(
        &self,
        id: &str,
        status: ReplayStatus,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let ended = sqlx::query(
            "UPDATE prompt_replays SET status = $1, finished_at = $2, error = $3 \
             WHERE id = $4 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if ended {
            sqlx::query(
                "UPDATE prompt_replay_turns SET status = 'cancelled' \
                 WHERE replay_id = $1 AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ended)
    }
}
