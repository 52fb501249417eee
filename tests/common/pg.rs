//! PostgreSQL for tests: a fresh schema on the local server (127.0.0.1:5432, database `test`,
//! or `COMPANION_TEST_DATABASE_URL`) per call, so runs and tests never share tables. Included
//! with `#[path]` by each test binary that needs it.
use sqlx::Connection;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Creates a schema named `{prefix}_{random}` and returns a URL whose connections use it, or
/// `None` (saying that `what` is skipped) when no PostgreSQL is reachable.
pub async fn fresh_schema_url(prefix: &str, what: &str) -> Option<String> {
    let base = std::env::var("COMPANION_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("SKIPPED: {what}: cannot connect to {base}: {e}");
            return None;
        }
    };
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}
