//! Faults of every dependency, black-box: the model (through the fake LLM's scripted faults),
//! the vector index (a real Qdrant server behind a proxy that goes down) and the database (a
//! real PostgreSQL behind the same kind of proxy). Each shows the clear error the learner gets
//! and that nothing accepted was lost.
use std::time::{Duration, Instant};

use companion::config::{IndexSettings, Settings};
use companion::http::ws::protocol::{ErrorCode, ServerFrame};
use companion::transcript::RetrievalStatus;
use serde_json::Value;

use crate::helpers::{
    Answer, Behaviour, FakeLlm, FakeScript, FaultProxy, QdrantServer, ask_frame, spawn_app_with,
    use_fake_llm,
};

/// The fake LLM, with bounds short enough for a test: a silent attempt is abandoned after 2 s,
/// retries wait 50 ms and up, 5 attempts at most, the whole answer ends within 10 s.
fn fast_llm(settings: &mut Settings, llm: &FakeLlm) {
    use_fake_llm(settings, llm);
    let bounds = settings.llm.as_mut().unwrap();
    bounds.first_token_timeout = Duration::from_secs(2);
    bounds.max_attempts = 5;
    bounds.retry_backoff = Duration::from_millis(50);
    bounds.answer_deadline = Duration::from_secs(10);
}

/// An answer collected within `limit`, however many frames it streams.
async fn answer_within(ws: &mut crate::helpers::WsClient, limit: Duration) -> Answer {
    tokio::time::timeout(limit, ws.collect_answer())
        .await
        .unwrap_or_else(|_| panic!("the answer did not end within {limit:?}"))
}

fn stored_messages(body: &Value) -> Vec<Value> {
    body["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn faults_before_the_first_token_are_retried_and_the_answer_streams_once() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    llm.push([
        Behaviour::Status {
            status: 429,
            retry_after: Some(1),
            message: "rate limit reached".into(),
        },
        Behaviour::Status {
            status: 503,
            retry_after: None,
            message: "overloaded".into(),
        },
        Behaviour::DropMidStream { after: 0 },
        Behaviour::StallBeforeFirstToken(Duration::from_secs(60)),
    ]);
    let app = spawn_app_with(|s| fast_llm(s, &llm)).await;
    let token = app.learner_token("rita");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    let started = Instant::now();
    ws.send(ask_frame("r-1", "how do I stop a while loop?"))
        .await;
    let answer = answer_within(&mut ws, Duration::from_secs(30)).await;

    assert!(answer.errors().is_empty(), "{:?}", answer.frames);
    assert_eq!(answer.done().status, "complete", "{:?}", answer.frames);
    // The text of the one attempt that streamed, once: the failed ones had sent none.
    assert_eq!(answer.text(), FakeScript::default().chunks.concat());
    assert_eq!(llm.requests().len(), 5, "four failed attempts, then one");
    // The 429's Retry-After (1 s) was waited for.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (_, body) = app.conversation(&token, &conversation).await;
    let messages = stored_messages(&body);
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[1]["text"], FakeScript::default().chunks.concat());
}

#[tokio::test]
async fn a_stream_dropped_after_the_first_token_is_not_retried_and_keeps_its_text_as_failed() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    llm.push([Behaviour::DropMidStream { after: 2 }]);
    let app = spawn_app_with(|s| fast_llm(s, &llm)).await;
    let token = app.learner_token("sam");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    ws.send(ask_frame("s-1", "how do I stop a while loop?"))
        .await;
    let answer = answer_within(&mut ws, Duration::from_secs(30)).await;

    let partial = FakeScript::default().chunks[..2].concat();
    assert_eq!(answer.text(), partial, "never any text twice");
    let errors = answer.errors();
    assert_eq!(errors.len(), 1, "{:?}", answer.frames);
    assert_eq!(errors[0].1, ErrorCode::LlmUnavailable);
    assert_eq!(answer.done().status, "failed");
    assert_eq!(llm.requests().len(), 1, "no retry once text has streamed");
    let (_, body) = app.conversation(&token, &conversation).await;
    let messages = stored_messages(&body);
    assert_eq!(messages[0]["text"], "how do I stop a while loop?");
    assert_eq!(messages[1]["status"], "failed");
    assert_eq!(messages[1]["text"], partial.as_str());
    assert_eq!(messages[1]["failure"], "llm_unavailable", "{body}");
}

#[tokio::test]
async fn an_llm_that_keeps_failing_gets_a_generic_error_frame_and_the_question_is_kept() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    let leaky = "upstream http://10.20.30.40:8443/v1 rejected key sk-live-abc123";
    llm.push((0..10).map(|_| Behaviour::Status {
        status: 500,
        retry_after: None,
        message: leaky.into(),
    }));
    let app = spawn_app_with(|s| fast_llm(s, &llm)).await;
    let token = app.learner_token("tom");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    ws.send(ask_frame("t-1", "what is recursion?")).await;
    let answer = answer_within(&mut ws, Duration::from_secs(30)).await;

    let errors = answer.errors();
    assert_eq!(errors.len(), 1, "{:?}", answer.frames);
    let (id, code, message) = errors[0];
    for secret in ["10.20.30.40", "sk-live", "http", "rejected"] {
        assert!(
            !message.contains(secret),
            "the learner saw {secret:?}: {message}"
        );
    }
    assert_eq!((id, code), (Some("t-1"), ErrorCode::LlmUnavailable));
    assert_eq!(answer.done().status, "failed");
    assert_eq!(llm.requests().len(), 5, "llm.max_attempts attempts");
    let (_, body) = app.conversation(&token, &conversation).await;
    let messages = stored_messages(&body);
    assert_eq!(messages[0]["text"], "what is recursion?");
    assert_eq!(messages[1]["status"], "failed");
}

#[tokio::test]
async fn an_llm_that_streams_forever_is_cut_at_the_token_cap_and_kept_as_failed() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    llm.push([Behaviour::Endless]);
    let app = spawn_app_with(|s| {
        s.llm_max_answer_tokens = 40;
        fast_llm(s, &llm);
    })
    .await;
    let token = app.learner_token("uma");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    ws.send(ask_frame("u-1", "tell me everything")).await;
    let answer = answer_within(&mut ws, Duration::from_secs(30)).await;

    let errors = answer.errors();
    assert_eq!(errors.len(), 1, "{:?}", answer.frames);
    assert_eq!(errors[0].1, ErrorCode::AnswerTooLong);
    assert_eq!(answer.done().status, "failed");
    let text = answer.text();
    assert!(!text.is_empty());
    let tokens = companion::retrieval::chunk::count_tokens(&text);
    assert!(tokens <= 50, "{tokens} tokens passed the cap of 50");
    let (_, body) = app.conversation(&token, &conversation).await;
    let messages = stored_messages(&body);
    assert_eq!(messages[1]["status"], "failed");
    assert_eq!(messages[1]["text"], text.as_str());
    assert_eq!(messages[1]["failure"], "answer_too_long");
}

#[tokio::test]
async fn with_the_vector_index_down_the_answer_comes_without_sources_and_says_so() {
    let Some(qdrant) = QdrantServer::start("the vector-index-down test").await else {
        return;
    };
    let index = FaultProxy::start(qdrant.grpc).await;
    let llm = FakeLlm::start(FakeScript::default()).await;
    let collection = format!("faults_{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(|s| {
        fast_llm(s, &llm);
        s.index = IndexSettings::Qdrant {
            url: format!("http://{}", index.addr),
            api_key: None,
            collection: collection.clone(),
            layout: Default::default(),
        };
        s.retrieval.timeout = Duration::from_secs(3);
    })
    .await;
    let token = app.learner_token("vic");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    let question = "How do I stop a while loop?";

    let before = ws.ask("v-1", question).await;
    assert!(!before.sources().is_empty(), "{:?}", before.frames);
    assert_eq!(before.done().retrieval, RetrievalStatus::Ok);

    index.down();
    ws.send(ask_frame("v-2", question)).await;
    let down = answer_within(&mut ws, Duration::from_secs(30)).await;

    assert!(down.errors().is_empty(), "not an error: {:?}", down.frames);
    assert_eq!(down.done().status, "complete");
    assert!(down.sources().is_empty());
    assert_eq!(down.done().retrieval, RetrievalStatus::Unavailable);
    let prompt = llm.requests().last().unwrap()["messages"].to_string();
    assert!(prompt.contains("course search is unavailable"), "{prompt}");
    let (_, body) = app.conversation(&token, &conversation).await;
    let messages = stored_messages(&body);
    assert_eq!(messages.len(), 4, "{body}");
    assert_eq!(messages[3]["status"], "complete");
    assert_eq!(messages[3]["retrieval"], "unavailable", "{body}");
    assert_eq!(messages[1]["retrieval"], "ok", "{body}");

    // Back up: the course is searched again (the client may need a request to reconnect).
    index.up().await;
    let mut sources = Vec::new();
    for i in 0..5 {
        let again = ws.ask(&format!("v-back-{i}"), question).await;
        if again.done().retrieval == RetrievalStatus::Ok {
            sources = again.sources().to_vec();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!sources.is_empty(), "retrieval never came back");
}

#[tokio::test]
async fn with_the_database_down_a_question_is_refused_unacknowledged_and_taken_once_it_is_back() {
    let Some(url) = crate::pg::fresh_schema_url("faults_db", "the database-down test").await else {
        return;
    };
    let mut url = url::Url::parse(&url).unwrap();
    let upstream = tokio::net::lookup_host((
        url.host_str().unwrap().to_string(),
        url.port().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let database = FaultProxy::start(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(database.addr.port())).unwrap();
    let app = spawn_app_with(|s| {
        s.database.url = url.to_string();
        s.database.acquire_timeout = Duration::from_secs(2);
    })
    .await;
    let token = app.learner_token("dora");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    let first = ws.ask("d-1", "what is a while loop?").await;
    assert_eq!(first.done().status, "complete");

    database.down();
    ws.send(ask_frame("d-2", "what is a for loop?")).await;
    let refused = ws
        .until(|f| matches!(f, ServerFrame::Error { .. } | ServerFrame::Done { .. }))
        .await;
    assert!(
        !refused.iter().any(|f| matches!(f, ServerFrame::Ack { .. })),
        "a question that could not be stored was acknowledged: {refused:?}"
    );
    match refused.last() {
        Some(ServerFrame::Error {
            id, code, message, ..
        }) => {
            assert_eq!(id.as_deref(), Some("d-2"));
            assert_eq!(*code, ErrorCode::StoreUnavailable, "{message}");
            assert!(message.contains("not saved"), "{message}");
        }
        other => panic!("expected an error frame, got {other:?}"),
    }

    database.up().await;
    let again = ws.ask("d-2", "what is a for loop?").await;
    assert!(!again.ack().1, "never stored, so not a duplicate");
    assert_eq!(again.done().status, "complete");

    // Nothing accepted was lost, and the refused question is stored once, when taken.
    let (status, body) = app.conversation(&token, &conversation).await;
    assert_eq!(status, 200, "{body}");
    let messages = stored_messages(&body);
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{body}");
    assert_eq!(texts[0], "what is a while loop?");
    assert_eq!(texts[2], "what is a for loop?");
    assert!(messages.iter().all(|m| m["status"] == "complete"), "{body}");
}
