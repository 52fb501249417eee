//! Conversations and messages: the question committed first, the answer row from `streaming`
//! through checkpoints to its final status.
use async_trait::async_trait;
use sqlx::Row;

use super::rows::{self, MESSAGE_COLUMNS};
use super::{Store, StoreError, search_text};
use crate::transcript::{
    AnswerRecord, Conversation, MessageStatus, NewQuestion, QuestionInsert, StoredMessage,
    TranscriptStore, now_ms,
};

impl Store {
    /// Answers left `streaming` by a crash become `interrupted`; returns how many.
    pub async fn mark_interrupted(&self) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming'",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
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
        sqlx::query(
            "INSERT INTO conversations (id, learner_id, course_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(&q.conversation_id)
        .bind(&q.learner_id)
        .bind(&q.course_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
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
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, learner_id, role, text, status, reply_to, \
             created_at, updated_at, search_text) \
             VALUES ($1, $2, $3, 'assistant', '', 'streaming', $4, $5, $5, '')",
        )
        .bind(id)
        .bind(conversation_id)
        .bind(learner_id)
        .bind(question_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn checkpoint_answer(&self, id: &str, text: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET text = $1, search_text = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'streaming'",
        )
        .bind(text)
        .bind(search_text(text))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
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
             guard = $14, retrieval = $15, failure = $16 WHERE id = $17",
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
        .bind(id)
        .execute(&self.pool)
        .await?;
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
}
