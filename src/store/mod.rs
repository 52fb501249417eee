//! Persistence, with one owner: the SQL pool over SQLite (WAL, a file under the data
//! directory) or PostgreSQL, chosen by the URL; the migrations in `migrations/`; the places
//! where the two dialects differ; row mapping ([`rows`]); and the one error type,
//! [`StoreError`]. One set of portable queries goes through sqlx's `Any` driver.
//!
//! [`Store`] serves transcripts ([`transcripts`]), learners ([`learners`]), the mentor's
//! review ([`review`]), the prompt studio's versions, labels and experiments ([`prompts`]), the
//! prompt kept with each model answer and replays ([`replays`]), the course policies written
//! through the API ([`policies`]), and
//! the record and lock of a shared vector index ([`index_manifest`]). The seams that an
//! in-memory fake stands in for in unit tests are the traits the domain modules define:
//! [`crate::transcript::TranscriptStore`] and [`crate::learner::LearnerStore`] (what
//! `chat::answer` reads and writes), and [`crate::review::LearnerActivity`] (what the digest
//! reads); everything else is an inherent method of [`Store`].
mod index_manifest;
mod learners;
#[cfg(test)]
pub(crate) mod memory;
mod policies;
mod prompts;
mod replays;
mod review;
mod rows;
mod transcripts;
mod usage;

pub use index_manifest::IndexLock;
pub use policies::PolicyWrite;
pub use prompts::{LivePromptRows, RolledBack, Saved};
pub use replays::StoredPrompt;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a read or a write of the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database call failed")]
    Database(#[from] sqlx::Error),
    #[error("applying the database migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored word that names no variant of the column's enum.
    #[error("column `{column}` holds {value:?}, which is not a known value")]
    Decode { column: &'static str, value: String },
    #[error("column `{column}` does not hold valid JSON")]
    Json {
        column: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The database: a pool and its dialect. Clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl Store {
    /// Connects, applies migrations, and returns the store.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, max_connections, std::time::Duration::from_secs(10)).await
    }

    /// As [`Store::connect`]; a query waits at most `acquire_timeout` for a connection (with
    /// the database down, that is how long it takes to fail).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout);
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
        if dialect == Dialect::Sqlite {
            create_private_sqlite_file(url)?;
        }
        let pool = options.connect(url).await?;
        MIGRATOR.run(&pool).await?;
        let store = Self { pool, dialect };
        store.fill_search_text().await?;
        Ok(store)
    }

    /// Case-folds the text of messages written before `search_text` existed, a batch at a time
    /// (a no-op once done).
    async fn fill_search_text(&self) -> Result<(), StoreError> {
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

    /// Closes the pool after pending writes.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs each statement (with `$1` bound to `id`) in one write transaction; returns the rows
    /// they touched in all.
    async fn execute_all(&self, statements: &[&str], id: &str) -> Result<u64, StoreError> {
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
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
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

/// The SQLite file of `url`, created empty and readable by this user only (0600) before SQLite
/// opens it (SQLite gives its `-wal` and `-shm` files the same mode); an existing file others
/// could read is made private. In-memory databases are left alone.
fn create_private_sqlite_file(url: &str) -> Result<(), StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') || url.contains("mode=memory") {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |source: std::io::Error| {
            let context = format!("cannot create the database file {path}: {source}");
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(source.kind(), context)))
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}
