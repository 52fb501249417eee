//! The WebSocket gateway under clients that misbehave (issue 11, holes 4 and 5, and the
//! questions-per-minute limit across nodes): a client that stops reading, sockets from another
//! origin, a token that expires on an open socket, an erased learner, several nodes sharing
//! one database; and `resume` after a lost connection (issue 15). Each shows that what was
//! accepted is stored.
use std::time::{Duration, Instant};

use companion::auth::{Role, claims_for};
use companion::http::ws::protocol::{ClientFrame, ErrorCode, ServerFrame};
use futures::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Polls the conversation (as `token`) until the answer to the question acked as
/// `question_id` is no longer streaming, or `deadline` passes; the answer's row.
async fn stored_answer(
    app: &TestApp,
    token: &str,
    conversation: &str,
    question_id: &str,
    deadline: Duration,
) -> Option<Value> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < deadline {
        let (status, body) = app.conversation(token, conversation).await;
        if status == 200 {
            last = body["messages"]
                .as_array()
                .and_then(|messages| {
                    messages
                        .iter()
                        .find(|m| m["reply_to"].as_str() == Some(question_id))
                })
                .cloned();
            if last
                .as_ref()
                .is_some_and(|m| m["status"].as_str() != Some("streaming"))
            {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

fn long_answer() -> FakeScript {
    // 12 MB in 6,000 deltas: more than a socket's kernel buffers and the queues in front
    // of them hold, so a client that reads nothing makes the server's writes wait.
    let chunks = (0..6000)
        .map(|i| format!("{i:05} {}\n", "x".repeat(1993)))
        .collect();
    FakeScript {
        chunks,
        delay: Duration::ZERO,
        fail_status: None,
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_freeze_its_answer_nor_delay_another_learner() {
    let script = long_answer();
    let expected = script.chunks.concat();
    let llm = FakeLlm::start(script).await;
    let app = spawn_app_with(|s| {
        use_fake_llm(s, &llm);
        // The answer is far longer than any real one (to fill the socket's buffers); the cap
        // on an answer's tokens, which would cut it, is not what this test is about.
        s.llm.as_mut().unwrap().max_answer_tokens = 50_000_000;
    })
    .await;

    // A raw client: reads `ready`, sends `ask`, and never reads again.
    let token = app.learner_token("sloth");
    let (mut raw, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", app.addr))
            .await
            .unwrap();
    let ready = {
        use futures::StreamExt;
        raw.next().await.unwrap().unwrap()
    };
    let ready: ServerFrame = serde_json::from_str(ready.to_text().unwrap()).unwrap();
    let ServerFrame::Ready {
        conversation_id, ..
    } = ready
    else {
        panic!("expected ready, got {ready:?}");
    };
    raw.send(Message::Text(
        serde_json::to_string(&ask_frame("slow-1", "how do while loops stop?"))
            .unwrap()
            .into(),
    ))
    .await
    .unwrap();

    // Meanwhile another learner asks and reads as usual: not held up by the first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let mut ws = app.connect(&app.learner_token("ada")).await;
    ws.ready().await;
    let answer = ws.ask("fast-1", "what is a for loop?").await;
    let took = started.elapsed();
    assert_eq!(answer.done().status, "complete");
    assert!(
        took < Duration::from_secs(30),
        "another learner's answer took {took:?} while a client was not reading"
    );

    // The question the slow client sent is stored, and so is its whole answer.
    let (status, body) = app.conversation(&token, &conversation_id).await;
    assert_eq!(status, 200, "{body}");
    let question = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "learner")
        .unwrap_or_else(|| panic!("the slow client's question is stored: {body}"))
        .clone();
    let question_id = question["id"].as_str().unwrap();
    let stored = stored_answer(
        &app,
        &token,
        &conversation_id,
        question_id,
        Duration::from_secs(90),
    )
    .await
    .expect("an answer row exists");
    assert_eq!(
        stored["status"],
        "complete",
        "the answer of a client that stopped reading is still {} after 90 s with {} of {} bytes",
        stored["status"],
        stored["text"].as_str().map_or(0, str::len),
        expected.len()
    );
    assert_eq!(stored["text"].as_str().unwrap(), expected);
    drop(raw);
}

#[tokio::test]
async fn a_page_of_another_origin_cannot_open_a_socket_but_the_demo_site_and_scripts_can() {
    let app = spawn_app().await;
    let token = app.learner_token("ada");
    let query = format!("token={token}");

    let refused = WsClient::try_connect(app.addr, &query, &[("origin", "https://evil.example")])
        .await
        .err();
    assert_eq!(refused, Some(403), "a foreign origin is refused");

    // The demo pages are served by Companion itself: same origin.
    let own = format!("http://{}", app.addr);
    let mut ws = WsClient::try_connect(app.addr, &query, &[("origin", &own)])
        .await
        .unwrap_or_else(|status| panic!("same origin refused with {status}"));
    ws.ready().await;
    // No Origin at all: not a browser.
    let mut ws = WsClient::try_connect(app.addr, &query, &[])
        .await
        .unwrap_or_else(|status| panic!("no origin refused with {status}"));
    ws.ready().await;
}

#[tokio::test]
async fn a_token_that_expires_on_an_open_socket_closes_it_with_a_clear_error() {
    let app = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    let token = keys()
        .mint(&claims_for(Role::Learner, "ada", None, None, 2))
        .unwrap();
    let mut ws = app.connect(&token).await;
    ws.ready().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;

    ws.send(companion::http::ws::protocol::ClientFrame::Ping { nonce: None })
        .await;
    let frame = serde_json::to_value(ws.next_frame().await).unwrap();
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{frame}"
    );
    assert!(
        frame["message"].as_str().unwrap().contains("token expired"),
        "{frame}"
    );
    assert!(ws.closed_within(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn an_erased_learner_cannot_keep_chatting_nor_bring_the_profile_back_by_reconnecting() {
    let app = spawn_app().await;
    let token = app.learner_token("gone");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    let first = ws.ask("q-1", "what is a loop?").await;
    assert_eq!(first.done().status, "complete");

    let admin = app.token(Role::Admin, "root");
    let (status, body) = app
        .call("DELETE", "/api/v1/learners/gone", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");

    // The open socket: the next question is refused and the socket closes.
    ws.send(ask_frame("q-2", "and a while loop?")).await;
    let frame = serde_json::to_value(ws.next_frame().await).unwrap();
    assert_eq!(
        (
            frame["type"].as_str(),
            frame["id"].as_str(),
            frame["code"].as_str()
        ),
        (Some("error"), Some("q-2"), Some("learner_erased")),
        "{frame}"
    );
    assert!(ws.closed_within(Duration::from_secs(10)).await);

    // Reconnecting with the same token is refused and re-creates nothing.
    let refused = WsClient::try_connect(app.addr, &format!("token={token}"), &[])
        .await
        .err();
    assert_eq!(refused, Some(403));
    let (status, body) = app.get("/api/v1/learners/gone", &admin).await;
    assert_eq!(status, 404, "the profile came back: {body}");
    let (status, _) = app.conversation(&admin, &conversation).await;
    assert_eq!(status, 404, "nothing of the erased learner is stored");
}

#[tokio::test]
async fn a_learner_past_the_connection_cap_is_refused_until_a_socket_closes() {
    // The default: 5 sockets per learner on a node.
    let app = spawn_app().await;
    let token = app.learner_token("ada");
    let query = format!("token={token}");
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut ws = app.connect(&token).await;
        ws.ready().await;
        open.push(ws);
    }
    let refused = WsClient::try_connect(app.addr, &query, &[]).await.err();
    assert_eq!(
        refused,
        Some(429),
        "a sixth socket of one learner is refused"
    );
    // Another learner is not affected.
    let mut bob = app.connect(&app.learner_token("bob")).await;
    bob.ready().await;

    open.pop().unwrap().close().await;
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(ws) = WsClient::try_connect(app.addr, &query, &[]).await {
            admitted = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admitted
        .expect("a closed socket gives its place back")
        .ready()
        .await;
}

#[tokio::test]
async fn a_repeated_mentor_request_joins_the_open_flag_instead_of_adding_one() {
    let app = spawn_app().await;
    let mut ws = app.connect(&app.learner_token("ada")).await;
    ws.ready().await;
    ws.ask("q-1", "I am stuck on loops").await;
    let mut flag_ids = Vec::new();
    for _ in 0..3 {
        ws.send(companion::http::ws::protocol::ClientFrame::RequestMentor { text: None })
            .await;
        match ws.next_frame().await {
            ServerFrame::MentorRequested { flag_id } => flag_ids.push(flag_id),
            other => panic!("expected mentor_requested, got {other:?}"),
        }
    }
    assert!(
        flag_ids.iter().all(|id| *id == flag_ids[0]),
        "one flag for repeated requests: {flag_ids:?}"
    );
    let flags = app
        .wait_flags("ada", |flags| {
            flags.iter().any(|f| f["kind"] == "human_requested")
        })
        .await;
    let requested = flags
        .iter()
        .filter(|f| f["kind"] == "human_requested")
        .count();
    assert_eq!(requested, 1, "{flags:?}");
}

/// Waits until the current minute has at least 20 s left, so that a test counting questions
/// per minute does not straddle two windows.
async fn away_from_a_minute_boundary() {
    let into_minute = chrono::Utc::now().timestamp_millis() % 60_000;
    if into_minute > 40_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into_minute + 200) as u64)).await;
    }
}

#[tokio::test]
async fn two_nodes_sharing_one_sqlite_file_enforce_one_learners_questions_per_minute_together() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        shared.path().join("shared.db").display()
    );
    questions_per_minute_on_two_nodes(url).await;
}

#[tokio::test]
async fn two_nodes_sharing_one_postgres_schema_enforce_one_learners_questions_per_minute_together()
{
    let Some(url) = crate::pg::fresh_schema_url(
        "gateway_rate",
        "questions per minute on two nodes sharing PostgreSQL",
    )
    .await
    else {
        return;
    };
    questions_per_minute_on_two_nodes(url).await;
}

/// Two nodes on the database at `url`; one learner asks on both, 3 questions a minute allowed.
async fn questions_per_minute_on_two_nodes(url: String) {
    let configure = |s: &mut companion::config::Settings| {
        s.database.url = url.clone();
        s.limits.asks_per_minute = 3;
    };
    let node_a = spawn_app_with(configure).await;
    let node_b = spawn_app_with(configure).await;
    away_from_a_minute_boundary().await;

    let token = node_a.learner_token("ada");
    let mut on_a = node_a.connect(&token).await;
    let conversation_a = on_a.ready().await.conversation_id;
    let mut on_b = node_b.connect(&token).await;
    let conversation_b = on_b.ready().await.conversation_id;

    let mut acked = Vec::new();
    for (on, id) in [('a', "a-1"), ('a', "a-2"), ('b', "b-1")] {
        let ws = if on == 'a' { &mut on_a } else { &mut on_b };
        let answer = ws.ask(id, "what is a loop?").await;
        assert_eq!(answer.done().status, "complete", "{id}");
        acked.push(answer.ack().0.to_string());
    }
    // The fourth question of the minute is refused whichever node gets it.
    for (on, id) in [('b', "b-2"), ('a', "a-3")] {
        let ws = if on == 'a' { &mut on_a } else { &mut on_b };
        ws.send(ask_frame(id, "and a while loop?")).await;
        let frame = serde_json::to_value(ws.next_frame().await).unwrap();
        assert_eq!(
            (
                frame["type"].as_str(),
                frame["id"].as_str(),
                frame["code"].as_str()
            ),
            (Some("error"), Some(id), Some("rate_limited")),
            "{frame}"
        );
        let message = frame["message"].as_str().unwrap();
        assert!(message.contains("3 questions per minute"), "{message}");
        let retry_after = frame["retry_after"].as_u64();
        assert!(
            retry_after.is_some_and(|s| (1..=60).contains(&s)),
            "retry_after: {frame}"
        );
    }

    // Every acknowledged question is stored, with its answer; no refused one is.
    let mut stored = Vec::new();
    for conversation in [&conversation_a, &conversation_b] {
        let (status, body) = node_b.conversation(&token, conversation).await;
        assert_eq!(status, 200, "{body}");
        for m in body["messages"].as_array().unwrap() {
            if m["role"] == "learner" {
                stored.push(m["id"].as_str().unwrap().to_string());
            } else {
                assert_eq!(m["status"], "complete", "{m}");
            }
        }
    }
    stored.sort();
    acked.sort();
    assert_eq!(stored, acked);
}

/// The `(seq, text)` of the `delta` frames among `frames`.
fn deltas_of(frames: &[ServerFrame]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Delta { seq, text, .. } => Some((*seq, text.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_resumed_answer_gets_exactly_the_deltas_it_missed_on_a_new_socket_then_done() {
    let script = FakeScript {
        chunks: (0..40)
            .map(|i| format!("part {i} of the answer. "))
            .collect(),
        delay: Duration::from_millis(60),
        fail_status: None,
    };
    let llm = FakeLlm::start(script).await;
    let app = spawn_app_with(|settings| use_fake_llm(settings, &llm)).await;
    let token = app.learner_token("ada");
    let mut first = app.connect(&token).await;
    let conversation = first.ready().await.conversation_id;
    first.send(ask_frame("c1", "What is a while loop?")).await;
    // Five deltas, then the connection is lost.
    let seen = first
        .until(|f| matches!(f, ServerFrame::Delta { seq: 4, .. }))
        .await;
    let question = seen
        .iter()
        .find_map(|f| match f {
            ServerFrame::Ack { message_id, .. } => Some(message_id.clone()),
            _ => None,
        })
        .expect("an ack before the deltas");
    let before = deltas_of(&seen);
    drop(first);
    // A checkpoint passes; the answer goes on without the client.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut second = WsClient::connect(
        app.addr,
        &format!("token={token}&conversation={conversation}"),
    )
    .await;
    second.ready().await;
    second
        .send(ClientFrame::Resume {
            id: "c1".into(),
            conversation: conversation.clone(),
            message_id: question.clone(),
            last_seq: Some(4),
        })
        .await;
    let answer = second.collect_answer().await;
    let after = deltas_of(&answer.frames);
    let seqs: Vec<u64> = after.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (5..5 + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every missed delta once, in order");
    let ServerFrame::Done {
        status, message_id, ..
    } = answer.frames.last().unwrap()
    else {
        panic!("no done: {:?}", answer.frames);
    };
    assert_eq!(status, "complete");
    let text: String = before
        .iter()
        .chain(&after)
        .map(|(_, t)| t.as_str())
        .collect();
    let stored = stored_text(&app, &conversation, message_id).await;
    assert_eq!(
        text, stored,
        "what the client put together is the stored answer"
    );
    assert!(text.contains("part 39 of the answer."), "{text}");

    // Somebody else's question, or another conversation's, is not resumed.
    second
        .send(ClientFrame::Resume {
            id: "c2".into(),
            conversation: "another".into(),
            message_id: question,
            last_seq: None,
        })
        .await;
    let (id, code, _) = second.next_error().await;
    assert_eq!(id.as_deref(), Some("c2"));
    assert_eq!(code, ErrorCode::UnknownMessage);
}

/// The stored text of the answer `message_id` of `conversation`, read as the learner.
async fn stored_text(app: &TestApp, conversation: &str, message_id: &str) -> String {
    let (status, view) = app
        .conversation(&app.learner_token("ada"), conversation)
        .await;
    assert_eq!(status, 200, "{view}");
    view["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == message_id))
        .and_then(|m| m["text"].as_str())
        .unwrap_or_else(|| panic!("no answer {message_id} in {view}"))
        .to_string()
}
