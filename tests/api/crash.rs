//! Durability: SIGKILL the server while an answer streams, restart it on the same data, and
//! find the question and the partial answer, marked interrupted. On SQLite and on PostgreSQL.
//! The process is the point here, so the first run is the `companion` binary; the restart only
//! needs the same data and runs in-process.
use std::time::{Duration, Instant};

use companion::http::ws::protocol::ServerFrame;

use crate::helpers::{FakeLlm, FakeScript, SpawnedApp, TestApp, ask_frame, test_settings};
use crate::pg;

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
    let base_url = llm.base_url();
    // The node restarts under the same stable id: it knows at once that what it left
    // streaming is orphaned (other nodes' answers are only marked once their heartbeat is
    // stale; see durability.rs).
    let mut env = vec![
        ("COMPANION__LLM__BASE_URL", base_url.as_str()),
        ("COMPANION__LLM__API_KEY", "test-key"),
        ("COMPANION__LLM__MODEL", "fake-model"),
        ("COMPANION__TRANSCRIPTS__NODE_ID", "node-crash"),
    ];
    if let Some(url) = &database {
        env.push(("COMPANION__DATABASE__URL", url.as_str()));
    }
    let app = SpawnedApp::start(&env).await;
    let token = app.learner_token("ada");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    ws.send(ask_frame("crash-1", "Why does my while loop never stop?"))
        .await;
    // Wait for some deltas and at least one checkpoint (about a second after the first delta).
    let mut first_delta: Option<Instant> = None;
    let mut deltas = 0;
    let mut streamed = String::new();
    loop {
        let frame = ws.next_frame().await;
        assert!(
            !matches!(frame, ServerFrame::Done { .. }),
            "the answer finished before the kill: {frame:?}"
        );
        if let ServerFrame::Delta { text, .. } = &frame {
            deltas += 1;
            streamed.push_str(text);
            first_delta.get_or_insert_with(Instant::now);
        }
        if first_delta.is_some_and(|t| t.elapsed() >= Duration::from_millis(1600)) && deltas >= 5 {
            break;
        }
    }
    let (dir, temp) = app.kill().await;

    let mut settings = test_settings(&dir);
    settings.use_llm(&base_url, "test-key", "fake-model");
    settings.transcripts.node_id = Some("node-crash".into());
    if let Some(url) = database {
        settings.database.url = url;
    }
    let app = TestApp::start(settings, Some(temp)).await;
    let (status, body) = app.conversation(&token, &conversation).await;
    assert_eq!(status, 200, "{body}");
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
}

#[tokio::test]
async fn a_killed_server_leaves_an_interrupted_partial_answer_on_sqlite() {
    killed_mid_answer_leaves_question_and_partial_answer_interrupted(None).await;
}

#[tokio::test]
async fn a_killed_server_leaves_an_interrupted_partial_answer_on_postgres() {
    if let Some(url) = pg::fresh_schema_url("crash", "PostgreSQL crash test").await {
        killed_mid_answer_leaves_question_and_partial_answer_interrupted(Some(url)).await;
    }
}
