//! The transcript store over SQL: SQLite (WAL, a file under the data directory) or
//! PostgreSQL, chosen by the URL. One set of portable migrations and queries through sqlx's
//! `Any` driver; where the dialects differ the code branches on [`Dialect`].
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use super::{
    AnswerRecord, Conversation, MessageStatus, NewQuestion, QuestionInsert, SourceRef,
    StoredMessage, TranscriptError, TranscriptStore, now_ms,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

impl SqlStore {
    /// Connects, applies migrations, and returns the store.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, TranscriptError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10));
        if dialect == Dialect::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        MIGRATOR.run(&pool).await?;
        let store = Self { pool, dialect };
        store.fill_search_text().await?;
        Ok(store)
    }

    /// Case-folds the text of messages written before `search_text` existed, a batch at a time
    /// (a no-op once done).
    async fn fill_search_text(&self) -> Result<(), sqlx::Error> {
        loop {
            let rows = sqlx::query(
                "SELECT id, text FROM messages WHERE search_text IS NULL ORDER BY id LIMIT 500",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = self.begin_write().await?;
            for row in &rows {
                let id: String = row.try_get("id")?;
                let text: String = row.try_get("text")?;
                sqlx::query("UPDATE messages SET search_text = $1 WHERE id = $2")
                    .bind(search_text(&text))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs each statement (with `$1` bound to `id`) in one write transaction; returns the rows
    /// they touched in all.
    pub async fn execute_all(&self, statements: &[&str], id: &str) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let mut touched = 0;
        for sql in statements {
            touched += sqlx::query(sqlx::AssertSqlSafe(*sql))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(touched)
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so concurrent writers wait on `busy_timeout` instead of failing
    /// with SQLITE_BUSY when a read lock cannot be upgraded.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }
}

/// A message's text as search compares it: Unicode lower case (see migration 0004).
pub(crate) fn search_text(text: &str) -> String {
    text.to_lowercase()
}

pub(crate) const MESSAGE_COLUMNS: &str = "id, conversation_id, learner_id, client_id, role, text, status, \
    reply_to, sources, prompt_version, model, offline, tokens_in, tokens_out, retrieval_ms, \
    first_token_ms, total_ms, page_url, created_at";

pub(crate) fn message_from_row(row: &AnyRow) -> Result<StoredMessage, TranscriptError> {
    let sources: Option<String> = row.try_get("sources")?;
    let sources = match sources {
        Some(json) if !json.is_empty() => {
            serde_json::from_str(&json).map_err(|e| TranscriptError::Corrupt(e.to_string()))?
        }
        _ => Vec::new(),
    };
    let status: String = row.try_get("status")?;
    let offline: i64 = row
        .try_get::<i32, _>("offline")
        .map(i64::from)
        .or_else(|_| row.try_get::<i64, _>("offline"))?;
    Ok(StoredMessage {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        learner_id: row.try_get("learner_id")?,
        client_id: row.try_get("client_id")?,
        role: row.try_get("role")?,
        text: row.try_get("text")?,
        status: MessageStatus::parse(&status),
        reply_to: row.try_get("reply_to")?,
        sources,
        prompt_version: row.try_get("prompt_version")?,
        model: row.try_get("model")?,
        offline: offline != 0,
        tokens_in: row.try_get("tokens_in")?,
        tokens_out: row.try_get("tokens_out")?,
        retrieval_ms: row.try_get("retrieval_ms")?,
        first_token_ms: row.try_get("first_token_ms")?,
        total_ms: row.try_get("total_ms")?,
        page_url: row.try_get("page_url")?,
        created_at: row.try_get("created_at")?,
    })
}

fn sources_json(sources: &[SourceRef]) -> String {
    serde_json::to_string(sources).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl TranscriptStore for SqlStore {
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, TranscriptError> {
        let row = sqlx::query(
            "SELECT id, learner_id, course_id, created_at, updated_at FROM conversations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Conversation {
                id: row.try_get("id")?,
                learner_id: row.try_get("learner_id")?,
                course_id: row.try_get("course_id")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn insert_question(&self, q: &NewQuestion) -> Result<QuestionInsert, TranscriptError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if let Some(row) = sqlx::query(
            "SELECT id, conversation_id FROM messages WHERE learner_id = $1 AND client_id = $2",
        )
        .bind(&q.learner_id)
        .bind(&q.client_id)
        .fetch_optional(&mut *tx)
        .await?
        {
            // Release the write lock now rather than whenever the dropped transaction's
            // rollback gets to run.
            tx.rollback().await?;
            return Ok(QuestionInsert::Duplicate {
                message_id: row.try_get("id")?,
                conversation_id: row.try_get("conversation_id")?,
            });
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
            let row = sqlx::query(
                "SELECT id, conversation_id FROM messages WHERE learner_id = $1 AND client_id = $2",
            )
            .bind(&q.learner_id)
            .bind(&q.client_id)
            .fetch_one(&self.pool)
            .await?;
            return Ok(QuestionInsert::Duplicate {
                message_id: row.try_get("id")?,
                conversation_id: row.try_get("conversation_id")?,
            });
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
    ) -> Result<(), TranscriptError> {
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

    async fn checkpoint_answer(&self, id: &str, text: &str) -> Result<(), TranscriptError> {
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
    ) -> Result<(), TranscriptError> {
        sqlx::query(
            "UPDATE messages SET text = $1, status = $2, sources = $3, prompt_version = $4, \
             model = $5, offline = $6, tokens_in = $7, tokens_out = $8, retrieval_ms = $9, \
             first_token_ms = $10, total_ms = $11, updated_at = $12, search_text = $13 \
             WHERE id = $14",
        )
        .bind(&r.text)
        .bind(status.as_str())
        .bind(sources_json(&r.sources))
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
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn answer_to(&self, question_id: &str) -> Result<Option<StoredMessage>, TranscriptError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = $1 ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(question_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    async fn messages(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, TranscriptError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conversation_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn mark_interrupted(&self) -> Result<u64, TranscriptError> {
        let result = sqlx::query(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming'",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
