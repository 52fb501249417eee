//! Durability: SIGKILL the server while an answer streams, restart it on the same data, and
//! find the question and the partial answer, marked interrupted. On SQLite and on PostgreSQL.
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{AppOptions, FakeLlm, FakeScript, spawn_app_with};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh schema on the local PostgreSQL and a URL that uses it, or `None` (said) if none.
pub async fn postgres_url() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("COMPANION_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.into());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("SKIPPED: PostgreSQL crash test: cannot connect to {base}: {e}");
            return None;
        }
    };
    let schema = format!("crash_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

async fn killed_mid_answer_leaves_question_and_partial_answer_interrupted(
    database: Option<String>,
) {
    // 40 chunks, 150 ms apart: six seconds of streaming, checkpointed every second.
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..40).map(|i| format!("part{i} ")).collect(),
        delay: Duration::from_millis(150),
        fail_status: None,
    })
    .await;
    let extra_toml = database
        .as_ref()
        .map(|url| format!("[database]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    let options = AppOptions {
        llm_url: Some(llm.base_url()),
        extra_toml,
        ..Default::default()
    };
    let app = spawn_app_with(options.clone()).await;
    let token = app.learner_token("ada");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.send_json(
        json!({"type": "ask", "id": "crash-1", "text": "Why does my while loop never stop?"}),
    )
    .await;
    // Wait for some deltas and at least one checkpoint (about a second after the first delta).
    let mut first_delta: Option<Instant> = None;
    let mut deltas = 0;
    let mut streamed = String::new();
    loop {
        let frame = ws.next_frame().await;
        assert_ne!(
            frame["type"], "done",
            "the answer finished before the kill: {frame}"
        );
        if frame["type"] == "delta" {
            deltas += 1;
            streamed.push_str(frame["text"].as_str().unwrap());
            first_delta.get_or_insert_with(Instant::now);
        }
        if first_delta.is_some_and(|t| t.elapsed() >= Duration::from_millis(1600)) && deltas >= 5 {
            break;
        }
    }
    let (dir, temp) = app.kill().await;

    let app = spawn_app_with(AppOptions {
        data_dir: Some(dir),
        ..options
    })
    .await;
    let (status, body) = app.conversation(&token, &conversation).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[0]["role"], "learner");
    assert_eq!(messages[0]["text"], "Why does my while loop never stop?");
    let answer = &messages[1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["status"], "interrupted", "{answer}");
    let text = answer["text"].as_str().unwrap();
    assert!(!text.is_empty(), "the checkpointed text is lost: {answer}");
    assert!(text.starts_with("part0 "), "{text}");
    // What was stored is what the learner saw, at most the last second of it missing.
    assert!(
        streamed.starts_with(text),
        "stored {text:?} is not a prefix of {streamed:?}"
    );
    drop(temp);
}

#[tokio::test]
async fn a_killed_server_leaves_an_interrupted_partial_answer_on_sqlite() {
    killed_mid_answer_leaves_question_and_partial_answer_interrupted(None).await;
}

#[tokio::test]
async fn a_killed_server_leaves_an_interrupted_partial_answer_on_postgres() {
    if let Some(url) = postgres_url().await {
        killed_mid_answer_leaves_question_and_partial_answer_interrupted(Some(url)).await;
    }
}
