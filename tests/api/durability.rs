//! Durability across nodes and over time: an answer stays `streaming` while its node is alive,
//! whoever else starts on the same database, and becomes `interrupted` once nobody keeps it
//! alive; long conversations come back page by page, every message exactly once.
use std::collections::HashSet;
use std::time::Duration;

use companion::auth::Role;
use companion::http::ws::protocol::ServerFrame;
use serde_json::Value;

use crate::helpers::{
    Answer, FakeLlm, FakeScript, TestApp, WsClient, ask_frame, spawn_app, spawn_app_with,
    spawn_app_with_llm,
};
use crate::pg;

/// A slow answer: 100 parts 150 ms apart, fifteen seconds of streaming.
async fn slow_llm() -> FakeLlm {
    FakeLlm::start(FakeScript {
        chunks: (0..100).map(|i| format!("part{i} ")).collect(),
        delay: Duration::from_millis(150),
        fail_status: None,
    })
    .await
}

async fn a_node_starting_leaves_another_nodes_live_answer_streaming(database_url: &str) {
    let llm = slow_llm().await;
    let node_a = spawn_app_with_llm(&llm, Some(database_url)).await;
    let token = node_a.learner_token("ada");
    let mut ws = node_a.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    ws.send(ask_frame(
        "two-nodes-1",
        "Why does my while loop never stop?",
    ))
    .await;
    // Once a delta arrives, node A's answer row exists as `streaming`.
    let mut frames = ws.until(|f| matches!(f, ServerFrame::Delta { .. })).await;

    let node_b = spawn_app_with_llm(&llm, Some(database_url)).await;

    let (status, body) = node_b.conversation(&token, &conversation).await;
    assert_eq!(status, 200, "{body}");
    let stored = &body["messages"][1];
    assert_eq!(
        stored["status"], "streaming",
        "node B's start-up changed node A's live answer: {stored}"
    );
    frames.extend(ws.collect_answer().await.frames);
    let answer = Answer { frames };
    assert_eq!(answer.done().status, "complete");
    let (_, body) = node_b.conversation(&token, &conversation).await;
    assert_eq!(body["messages"][1]["status"], "complete", "{body}");
    assert_eq!(body["messages"][1]["text"], answer.text());
}

#[tokio::test]
async fn a_node_starting_on_the_same_sqlite_file_leaves_a_live_answer_streaming() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        shared.path().join("shared.db").display()
    );
    a_node_starting_leaves_another_nodes_live_answer_streaming(&url).await;
}

#[tokio::test]
async fn a_node_starting_on_the_same_postgres_schema_leaves_a_live_answer_streaming() {
    if let Some(url) = pg::fresh_schema_url("nodes", "PostgreSQL two-node test").await {
        a_node_starting_leaves_another_nodes_live_answer_streaming(&url).await;
    }
}

/// Every page of `path` (which takes `limit` and `after`), following `next_cursor`; the items
/// under `field` of each page.
async fn all_pages(app: &TestApp, token: &str, path: &str, field: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{path}?limit=3"),
            Some(cursor) => format!("{path}?limit=3&after={cursor}"),
        };
        let (status, body) = app.get(&url, token).await;
        assert_eq!(status, 200, "{url}: {body}");
        let items = body[field].as_array().cloned().unwrap_or_default();
        assert!(
            items.len() <= 3,
            "a page of {} {field} for limit=3",
            items.len()
        );
        pages.push(items);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 100, "paging never ends");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_conversation_comes_back_page_by_page_with_every_message_exactly_once() {
    let app = spawn_app().await;
    app.put_learner("ada", "mia").await;
    let questions: Vec<String> = (0..7)
        .map(|i| format!("What is a loop, take {i}?"))
        .collect();
    let asked = app
        .ask(
            "ada",
            &questions.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    let conversation = asked[0].conversation_id.clone();
    let token = app.learner_token("ada");
    let (status, whole) = app.conversation(&token, &conversation).await;
    assert_eq!(status, 200, "{whole}");
    let every = ids(whole["messages"].as_array().unwrap());
    assert_eq!(every.len(), 14, "{whole}");
    assert!(whole["next_cursor"].is_null(), "{whole}");

    let path = format!("/api/v1/conversations/{conversation}");
    let pages = all_pages(&app, &token, &path, "messages").await;
    assert_eq!(pages.len(), 5);
    let paged: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(paged, every, "pages in order, each message once");

    // The mentor's view of the same conversation pages the same way.
    let mentor = app.token(Role::Mentor, "mia");
    let path = format!("/api/v1/mentor/conversations/{conversation}");
    let paged: Vec<String> = all_pages(&app, &mentor, &path, "messages")
        .await
        .iter()
        .flat_map(|p| ids(p))
        .collect();
    assert_eq!(paged, every);

    // Backwards: `before` a cursor gives the messages just before the one it points at (the
    // last of the first page, every[3]).
    let (status, body) = app
        .get(
            &format!("/api/v1/conversations/{conversation}?limit=4"),
            &token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = body["next_cursor"].as_str().unwrap().to_string();
    let (status, body) = app
        .get(
            &format!("/api/v1/conversations/{conversation}?limit=2&before={first}"),
            &token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(body["messages"].as_array().unwrap()),
        every[1..3].to_vec()
    );
}

#[tokio::test]
async fn a_learners_conversations_come_back_page_by_page_each_once() {
    let app = spawn_app().await;
    app.put_learner("ada", "mia").await;
    let mut conversations = HashSet::new();
    for i in 0..7 {
        let asked = app
            .ask("ada", &[&format!("Question in conversation {i}")])
            .await;
        conversations.insert(asked[0].conversation_id.clone());
    }
    let mentor = app.token(Role::Mentor, "mia");
    let pages = all_pages(
        &app,
        &mentor,
        "/api/v1/mentor/learners/ada/conversations",
        "conversations",
    )
    .await;
    let paged: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(paged.len(), 7, "{paged:?}");
    assert_eq!(paged.iter().cloned().collect::<HashSet<_>>(), conversations);
}

#[tokio::test]
async fn a_page_size_out_of_range_or_a_bad_cursor_is_a_clear_400() {
    let app = spawn_app().await;
    let asked = app.ask("ada", &["What is a loop?"]).await;
    let token = app.learner_token("ada");
    let conversation = &asked[0].conversation_id;
    for query in [
        "limit=0",
        "limit=100000",
        "after=garbage",
        "after=1.a&before=1.b",
    ] {
        let (status, body) = app
            .get(
                &format!("/api/v1/conversations/{conversation}?{query}"),
                &token,
            )
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{query}: {body}");
    }
}

/// An answer row left `streaming` on `database_url` by node "node-gone", which then died: its
/// heartbeat is never written again. Returns (conversation id, answer id).
async fn orphan_answer(database_url: &str, learner: &str) -> (String, String) {
    use companion::store::Store;
    use companion::transcript::{NewQuestion, TranscriptStore};

    let store = Store::connect(database_url, 2).await.unwrap();
    // Ids as the service makes them: the socket takes only a UUID for a conversation, and v7
    // ids order the question before its answer within the same millisecond.
    let conversation = uuid::Uuid::new_v4().to_string();
    let question = uuid::Uuid::now_v7().to_string();
    store
        .insert_question(&NewQuestion {
            id: question.clone(),
            conversation_id: conversation.clone(),
            learner_id: learner.into(),
            course_id: None,
            client_id: format!("orphan-{learner}"),
            text: "What is a loop?".into(),
            page_url: None,
        })
        .await
        .unwrap();
    let answer = uuid::Uuid::now_v7().to_string();
    store
        .start_answer(&answer, &question, &conversation, learner, "node-gone")
        .await
        .unwrap();
    store
        .checkpoint_answer(&answer, "A loop repeats", &[14])
        .await
        .unwrap();
    store.close().await;
    (conversation, answer)
}

/// A node on a SQLite file of its own folder, with the given orphan detection; the folder and
/// the database's URL (for a second, dying "node" to write to) come back with it.
async fn node_on_sqlite(
    stale_after: Duration,
    sweep_every: Duration,
) -> (tempfile::TempDir, String, TestApp) {
    let shared = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        shared.path().join("shared.db").display()
    );
    let node_url = url.clone();
    let app = spawn_app_with(|settings| {
        settings.database.url = node_url;
        settings.transcripts.stale_after = stale_after;
        settings.transcripts.sweep_every = sweep_every;
    })
    .await;
    (shared, url, app)
}

#[tokio::test]
async fn an_answer_orphaned_by_a_dead_node_is_marked_interrupted_by_a_live_nodes_sweeper() {
    let (_shared, url, app) =
        node_on_sqlite(Duration::from_secs(2), Duration::from_millis(200)).await;
    // Left by a node that dies while this one runs: start-up saw nothing to do.
    let (conversation, _answer) = orphan_answer(&url, "ada").await;
    let token = app.learner_token("ada");
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"][1]["status"], "streaming", "{body}");

    // No heartbeat for longer than stale_after: the sweeper marks it, the text kept.
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, body) = app.conversation(&token, &conversation).await;
        status = body["messages"][1]["status"].clone();
        if status == "interrupted" {
            assert_eq!(body["messages"][1]["text"], "A loop repeats", "{body}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the orphaned answer is still {status} after 10 s");
}

#[tokio::test]
async fn a_resent_question_whose_answer_was_orphaned_is_replayed_as_interrupted_at_once() {
    // No sweep in the test's time: the resend itself finds the answer orphaned.
    let (_shared, url, app) =
        node_on_sqlite(Duration::from_secs(1), Duration::from_secs(3600)).await;
    let (conversation, answer_id) = orphan_answer(&url, "ben").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let token = app.learner_token("ben");
    let mut ws = WsClient::connect(
        app.addr,
        &format!("token={token}&conversation={conversation}"),
    )
    .await;
    ws.ready().await;
    let started = std::time::Instant::now();

    let answer = ws.ask("orphan-ben", "What is a loop?").await;

    assert!(answer.ack().1, "the resend is recognised as a duplicate");
    let done = answer.done();
    assert_eq!(done.message_id, answer_id);
    assert!(done.replayed);
    assert_eq!(done.status, "interrupted");
    assert_eq!(answer.text(), "A loop repeats");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the resend waited {:?} for a dead node",
        started.elapsed()
    );
}
