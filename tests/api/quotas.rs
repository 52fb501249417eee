//! Per-learner quotas and the socket timeouts (issue 11, "Limits", holes 5 and 9): each refusal
//! is a clear error (an `error` frame with a stable code, or a 429) carrying `retry_after` where
//! waiting helps, and nothing accepted before it is lost.
use std::time::Duration;

use companion::http::ws::protocol::{ClientFrame, ErrorCode, ServerFrame};
use companion::review::Rating;
use serde_json::Value;

use crate::helpers::*;

/// The next frame as JSON, which must be an `error` with `code`; its `retry_after`.
async fn refused(ws: &mut WsClient, code: &str) -> (Value, Option<u64>) {
    let frame = serde_json::to_value(ws.next_frame().await).unwrap();
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some(code)),
        "{frame}"
    );
    let retry_after = frame["retry_after"].as_u64();
    (frame, retry_after)
}

/// The learner's questions stored in `conversation` (ids), each with a complete answer.
async fn stored_questions(app: &TestApp, token: &str, conversation: &str) -> Vec<String> {
    let (status, body) = app.conversation(token, conversation).await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    for m in messages.iter().filter(|m| m["role"] != "learner") {
        assert_eq!(m["status"], "complete", "{m}");
    }
    messages
        .iter()
        .filter(|m| m["role"] == "learner")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_learner_past_the_tokens_of_the_day_is_refused_until_tomorrow_and_keeps_the_answers() {
    let llm = FakeLlm::start(FakeScript::default()).await;
    // The fake model reports 321 prompt tokens: one answer uses up a 300-token day.
    let app = spawn_app_with(|s| {
        use_fake_llm(s, &llm);
        s.quotas.tokens_per_day = 300;
    })
    .await;
    let token = app.learner_token("ada");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;
    let first = ws.ask("q-1", "what is a loop?").await;
    assert_eq!(first.done().status, "complete");

    ws.send(ask_frame("q-2", "and a while loop?")).await;
    let (frame, retry_after) = refused(&mut ws, "quota_exceeded").await;
    assert_eq!(frame["id"], "q-2");
    assert!(
        frame["message"]
            .as_str()
            .unwrap()
            .contains("300 tokens per day"),
        "{frame}"
    );
    assert!(
        retry_after.is_some_and(|s| (1..=86_400).contains(&s)),
        "{frame}"
    );
    assert_eq!(
        stored_questions(&app, &token, &conversation).await,
        vec![first.ack().0.to_string()]
    );
}

#[tokio::test]
async fn a_learner_with_every_stream_slot_busy_is_refused_another_answer_until_one_ends() {
    let llm = FakeLlm::start(FakeScript {
        delay: Duration::from_millis(300),
        ..FakeScript::default()
    })
    .await;
    let app = spawn_app_with(|s| {
        use_fake_llm(s, &llm);
        s.quotas.streams_per_learner = 1;
    })
    .await;
    let token = app.learner_token("ada");
    let mut first = app.connect(&token).await;
    let conversation_1 = first.ready().await.conversation_id;
    let mut second = app.connect(&token).await;
    let conversation_2 = second.ready().await.conversation_id;

    first.send(ask_frame("q-1", "what is a loop?")).await;
    first.until(|f| matches!(f, ServerFrame::Ack { .. })).await;
    second.send(ask_frame("q-2", "what is a list?")).await;
    let (frame, _) = refused(&mut second, "quota_exceeded").await;
    assert_eq!(frame["id"], "q-2");
    assert!(
        frame["message"]
            .as_str()
            .unwrap()
            .contains("already streaming"),
        "{frame}"
    );

    let answer = first.collect_answer().await;
    assert_eq!(answer.done().status, "complete");
    // The slot is free again: the other socket may ask.
    let again = second.ask("q-3", "what is a list?").await;
    assert_eq!(again.done().status, "complete");
    assert_eq!(
        stored_questions(&app, &token, &conversation_1).await.len(),
        1
    );
    assert_eq!(
        stored_questions(&app, &token, &conversation_2).await.len(),
        1
    );
}

#[tokio::test]
async fn attachments_ratings_and_mentor_requests_past_their_rates_are_refused_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.quotas.attaches_per_minute = 2;
        s.quotas.feedback_per_minute = 1;
        s.quotas.mentor_requests_per_hour = 1;
    })
    .await;
    let token = app.learner_token("ada");
    let mut ws = app.connect(&token).await;
    ws.ready().await;
    let snippet = |n: u32| attach_frame(&format!("a-{n}"), None, &format!("x = {n}"));
    for n in 0..2 {
        ws.send(snippet(n)).await;
        assert!(
            matches!(ws.next_frame().await, ServerFrame::Attached { .. }),
            "attachment {n}"
        );
    }
    ws.send(snippet(2)).await;
    let (frame, retry_after) = refused(&mut ws, "rate_limited").await;
    assert_eq!(frame["id"], "a-2");
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{frame}"
    );

    // The two attachments accepted go with the next question.
    let answer = ws.ask("q-1", "what does my code do?").await;
    let message_id = answer.done().message_id;
    for (n, expect_ok) in [(0, true), (1, false)] {
        ws.send(ClientFrame::Feedback {
            message_id: message_id.clone(),
            rating: Rating::Up,
            comment: None,
        })
        .await;
        if expect_ok {
            assert!(
                matches!(ws.next_frame().await, ServerFrame::FeedbackSaved { .. }),
                "rating {n}"
            );
        } else {
            let (frame, retry_after) = refused(&mut ws, "rate_limited").await;
            assert!(retry_after.is_some(), "{frame}");
        }
    }
    ws.send(ClientFrame::RequestMentor {
        text: Some("please call me".into()),
    })
    .await;
    assert!(matches!(
        ws.next_frame().await,
        ServerFrame::MentorRequested { .. }
    ));
    ws.send(ClientFrame::RequestMentor {
        text: Some("please, it is about my project".into()),
    })
    .await;
    let (frame, retry_after) = refused(&mut ws, "rate_limited").await;
    assert!(
        frame["message"]
            .as_str()
            .unwrap()
            .contains("1 mentor requests per hour"),
        "{frame}"
    );
    assert!(
        retry_after.is_some_and(|s| (1..=3600).contains(&s)),
        "{frame}"
    );
}

#[tokio::test]
async fn a_quiet_socket_is_closed_after_the_idle_timeout_with_a_clear_error() {
    let app = spawn_app_with(|s| s.sockets.idle_timeout = Duration::from_secs(1)).await;
    let mut ws = app.connect(&app.learner_token("ada")).await;
    ws.ready().await;
    let (_, code, message) = ws.next_error().await;
    assert_eq!(code, ErrorCode::IdleTimeout, "{message}");
    assert!(message.contains("no frame for 1 s"), "{message}");
    assert!(ws.closed_within(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_dropped_and_one_that_does_is_kept() {
    let app = spawn_app_with(|s| {
        s.sockets.ping_every = Duration::from_secs(1);
        s.sockets.pong_timeout = Duration::from_secs(1);
    })
    .await;
    let token = app.learner_token("ada");
    // Never read: its WebSocket library cannot answer the pings.
    let mut deaf = app.connect(&token).await;
    // Reads and talks now and then: its pongs go back.
    let mut live = app.connect(&token).await;
    live.ready().await;
    for n in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        live.send(ClientFrame::Ping {
            nonce: Some(n.to_string()),
        })
        .await;
        assert!(matches!(live.next_frame().await, ServerFrame::Pong { .. }));
    }
    assert!(
        deaf.closed_within(Duration::from_secs(5)).await,
        "a client silent past ping_every + pong_timeout is dropped"
    );
}

#[tokio::test]
async fn projects_and_upload_bytes_per_learner_are_capped_with_a_429() {
    let app = spawn_app_with(|s| {
        s.quotas.projects_per_learner = 2;
        s.quotas.upload_bytes_per_day = 1000;
    })
    .await;
    app.put_learner("ada", "mentor-1").await;
    let service = app.service_token();
    for project in ["one", "two"] {
        let (status, body) = app
            .put_project_file(&service, "ada", project, "a.py", "x = 1\n")
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = app
        .put_project_file(&service, "ada", "three", "a.py", "x = 1\n")
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has 2 projects"),
        "{body}"
    );
    // An existing project still takes files.
    let (status, body) = app
        .put_project_file(&service, "ada", "one", "b.py", &"y = 2\n".repeat(100))
        .await;
    assert_eq!(status, 200, "{body}");

    // 12 + 600 bytes so far: another 600 passes the 1000 of the day.
    let response = app
        .request(
            "PUT",
            "/api/v1/learners/ada/projects/one/files/c.py",
            Some(&service),
        )
        .body("z = 3\n".repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_header: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["retry_after"].as_u64(), Some(retry_header));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 bytes of uploads per day"),
        "{body}"
    );
    // What was accepted is there.
    let (status, body) = app
        .get("/api/v1/learners/ada/projects/one/files", &service)
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("a.py") && text.contains("b.py") && !text.contains("c.py"),
        "{body}"
    );
}
