//! Conversations and messages: the question committed first, the answer row from `streaming`
//! through checkpoints (each a heartbeat of its owner node) to its final status; orphaned
//! answers found by their stale heartbeat; conversations read a window or a page at a time.
use async_trait::async_trait;
use sqlx::Row;

use super::rows::{self, MESSAGE_COLUMNS};
use super::{Store, StoreError, search_text};
use crate::review::{Cursor, MessagePage, PageAt};
use crate::transcript::{
    AnswerRecord, Conversation, MessageStatus, NewQuestion, QuestionInsert, StoredMessage,
    TranscriptStore, now_ms,
};

/// When a row's node last proved it alive: rows older than the heartbeat column have only
/// `updated_at`.
const HEARTBEAT: &str = "COALESCE(heartbeat_at, updated_at)";

impl Store {
    /// Answers still `streaming` whose heartbeat is older than `stale_before_ms` were orphaned
    /// by a node that died: they become `interrupted`. A live node's answers, whose heartbeat
    /// is fresh, are left alone. Returns how many changed.
    pub async fn interrupt_stale(&self, stale_before_ms: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 \
             WHERE status = 'streaming' AND {HEARTBEAT} < $2"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(stale_before_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// Answers still `streaming` that `node` owned become `interrupted`: for a node starting
    /// under a stable id, whose earlier run cannot still be writing them. Returns how many.
    pub async fn interrupt_node(&self, node: &str) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 \
             WHERE status = 'streaming' AND owner_node = $2",
        )
        .bind(now_ms())
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// A page of a conversation's messages in (created_at, id) order, `limit` at most.
    pub async fn conversation_messages(
        &self,
        conversation_id: &str,
        at: &PageAt,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let limit = limit.max(1);
        // One more than asked tells whether a next page exists.
        let fetch = (limit + 1) as i64;
        let query = match at {
            PageAt::First => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
                 ORDER BY created_at, id LIMIT $2"
            )))
            .bind(conversation_id)
            .bind(fetch),
            PageAt::After(cursor) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
                 AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
                 ORDER BY created_at, id LIMIT $4"
            )))
            .bind(conversation_id)
            .bind(cursor.created_at)
            .bind(&cursor.id)
            .bind(fetch),
            PageAt::Before(cursor) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
                 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            )))
            .bind(conversation_id)
            .bind(cursor.created_at)
            .bind(&cursor.id)
            .bind(fetch),
        };
        let rows = query.fetch_all(&self.pool).await?;
        let mut messages = rows
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        if !matches!(at, PageAt::Before(_)) {
            return Ok(MessagePage::of(messages, limit));
        }
        // Read newest first; the page is given oldest first, and continues before its oldest.
        let more = messages.len() > limit;
        messages.truncate(limit);
        messages.reverse();
        let next = more.then(|| messages.first()).flatten().map(|m| Cursor {
            created_at: m.created_at,
            id: m.id.clone(),
        });
        Ok(MessagePage { messages, next })
    }

    /// The learner's earlier question with this client id: (message id, conversation id).
    async fn question_by_client_id(
        &self,
        executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
        q: &NewQuestion,
    ) -> Result<Option<QuestionInsert>, StoreError> {
        let row = sqlx::query(
            "SELECT id, conversation_id FROM messages WHERE learner_id = $1 AND client_id = $2",
        )
        .bind(&q.learner_id)
        .bind(&q.client_id)
        .fetch_optional(executor)
        .await?;
        row.map(|row| {
            Ok(QuestionInsert::Duplicate {
                message_id: row.try_get("id")?,
                conversation_id: row.try_get("conversation_id")?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl TranscriptStore for Store {
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT id, learner_id, course_id, created_at, updated_at FROM conversations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::conversation).transpose()
    }

    async fn insert_question(&self, q: &NewQuestion) -> Result<QuestionInsert, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if let Some(duplicate) = self.question_by_client_id(&mut *tx, q).await? {
            // Release the write lock now rather than whenever the dropped transaction's
            // rollback gets to run.
            tx.rollback().await?;
            return Ok(duplicate);
        }
        // Ownership is decided by this one statement: a conversation another learner created
        // (even a moment ago, in a racing transaction) is not touched, and nothing is stored.
        let owned = sqlx::query(
            "INSERT INTO conversations (id, learner_id, course_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at \
             WHERE conversations.learner_id = excluded.learner_id",
        )
        .bind(&q.conversation_id)
        .bind(&q.learner_id)
        .bind(&q.course_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if owned.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(QuestionInsert::ForeignConversation);
        }
        let inserted = sqlx::query(
            "INSERT INTO messages (id, conversation_id, learner_id, client_id, role, text, status, \
             page_url, created_at, updated_at, search_text) \
             VALUES ($1, $2, $3, $4, 'learner', $5, 'complete', $6, $7, $7, $8) \
             ON CONFLICT (learner_id, client_id) DO NOTHING",
        )
        .bind(&q.id)
        .bind(&q.conversation_id)
        .bind(&q.learner_id)
        .bind(&q.client_id)
        .bind(&q.text)
        .bind(&q.page_url)
        .bind(now)
        .bind(search_text(&q.text))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // A concurrent insert of the same client id won the race.
            tx.rollback().await?;
            return self
                .question_by_client_id(&self.pool, q)
                .await?
                .ok_or(StoreError::Database(sqlx::Error::RowNotFound));
        }
        tx.commit().await?;
        Ok(QuestionInsert::Inserted)
    }

    async fn start_answer(
        &self,
        id: &str,
        question_id: &str,
        conversation_id: &str,
        learner_id: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, learner_id, role, text, status, reply_to, \
             created_at, updated_at, search_text, owner_node, heartbeat_at) \
             VALUES ($1, $2, $3, 'assistant', '', 'streaming', $4, $5, $5, '', $6, $5)",
        )
        .bind(id)
        .bind(conversation_id)
        .bind(learner_id)
        .bind(question_id)
        .bind(now)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn checkpoint_answer(
        &self,
        id: &str,
        text: &str,
        delta_ends: &[usize],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE messages SET text = $1, search_text = $2, updated_at = $3, heartbeat_at = $3, \
             delta_ends = $4 WHERE id = $5 AND status = 'streaming'",
        )
        .bind(text)
        .bind(search_text(text))
        .bind(now)
        .bind(rows::to_json(&delta_ends))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn heartbeat_answer(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET heartbeat_at = $1 WHERE id = $2 AND status = 'streaming'")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn interrupt_if_stale(&self, id: &str, stale_before_ms: i64) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 \
             WHERE id = $2 AND status = 'streaming' AND {HEARTBEAT} < $3"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(id)
            .bind(stale_before_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn finish_answer(
        &self,
        id: &str,
        status: MessageStatus,
        r: &AnswerRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET text = $1, status = $2, sources = $3, prompt_version = $4, \
             model = $5, offline = $6, tokens_in = $7, tokens_out = $8, retrieval_ms = $9, \
             first_token_ms = $10, total_ms = $11, updated_at = $12, search_text = $13, \
             guard = $14, retrieval = $15, failure = $16, prompt_experiment = $17, \
             delta_ends = $18 WHERE id = $19",
        )
        .bind(&r.text)
        .bind(status.as_str())
        .bind(rows::to_json(&r.sources))
        .bind(&r.prompt_version)
        .bind(&r.model)
        .bind(i32::from(r.offline))
        .bind(r.tokens_in)
        .bind(r.tokens_out)
        .bind(r.retrieval_ms)
        .bind(r.first_token_ms)
        .bind(r.total_ms)
        .bind(now_ms())
        .bind(search_text(&r.text))
        .bind(r.guard.as_ref().map(rows::to_json))
        .bind(r.retrieval.map(|s| s.as_str()))
        .bind(&r.failure)
        .bind(&r.prompt_experiment)
        .bind(rows::to_json(&r.delta_ends))
        .bind(id)
        .execute(&self.pool)
        .await?;
        if let Some(prompt) = &r.prompt {
            // Idempotent like the update above: a retried final write writes the same.
            sqlx::query(
                "INSERT INTO answer_prompts (message_id, course_id, record, created_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (message_id) DO UPDATE SET record = excluded.record",
            )
            .bind(id)
            .bind(prompt["course_id"].as_str())
            .bind(rows::to_json(prompt))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn answer_to(&self, question_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = $1 ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(question_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::message).transpose()
    }

    async fn messages(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::message).collect()
    }

    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut messages = rows
            .iter()
            .map(rows::message)
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(messages)
    }
}
