use crate::helpers::*;
use companion::auth::{Role, claims_for, unix_now};
use companion::http::ws::protocol::{ClientFrame, ErrorCode, ServerFrame};

async fn upgrade_status(app: &TestApp, query: &str) -> String {
    let url = format!("ws://{}/ws?{query}", app.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => "101".to_string(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_missing_and_expired_tokens_are_refused_with_401_on_upgrade() {
    let app = spawn_app().await;
    assert!(upgrade_status(&app, "").await.contains("401"));
    assert!(
        upgrade_status(&app, "token=not-a-jwt")
            .await
            .contains("401")
    );
    let mut expired = claims_for(Role::Learner, "ada", None, None, 60);
    expired.exp = unix_now() - 3600;
    let expired = keys().mint(&expired).unwrap();
    assert!(
        upgrade_status(&app, &format!("token={expired}"))
            .await
            .contains("401")
    );
    let mentor = app.token(Role::Mentor, "m1");
    assert!(
        upgrade_status(&app, &format!("token={mentor}"))
            .await
            .contains("403")
    );
    let good = app.learner_token("ada");
    assert_eq!(upgrade_status(&app, &format!("token={good}")).await, "101");
}

#[tokio::test]
async fn the_token_can_come_as_a_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let token = app.learner_token("ada");
    let mut request = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("companion.v1, bearer.{token}").parse().unwrap(),
    );
    let (_, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "companion.v1");
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let token = app.learner_token("gus");
    let mut ws = app.connect(&token).await;
    let conversation = ws.ready().await.conversation_id;

    // Raw text: these frames are malformed on purpose.
    let cases = [
        ("{this is not json", ErrorCode::BadJson),
        (r#"{"id":"x","text":"hi"}"#, ErrorCode::MissingField),
        (r#"{"type":"shout","id":"x"}"#, ErrorCode::UnknownType),
        (r#"{"type":"ask","id":"x"}"#, ErrorCode::MissingField),
        (
            r#"{"type":"ask","id":"x","text":42}"#,
            ErrorCode::InvalidField,
        ),
        (
            r#"{"type":"ask","id":"e1","text":"   "}"#,
            ErrorCode::EmptyQuestion,
        ),
        (
            r#"{"type":"ask","id":"","text":"hello"}"#,
            ErrorCode::InvalidField,
        ),
        (
            r#"{"type":"cancel","id":"nothing-streaming"}"#,
            ErrorCode::UnknownAsk,
        ),
    ];
    for (text, code) in cases {
        ws.send_text(text).await;
        let (_, got, message) = ws.next_error().await;
        assert_eq!(got, code, "{text} -> {message}");
        assert!(!message.is_empty());
    }
    ws.send(ask_frame("long", &"a".repeat(4001))).await;
    let (_, code, message) = ws.next_error().await;
    assert_eq!(code, ErrorCode::QuestionTooLong, "{message}");
    assert!(message.contains("4000"));

    // Still usable, and none of the refused questions was stored.
    ws.send(ClientFrame::Ping { nonce: None }).await;
    assert!(matches!(ws.next_frame().await, ServerFrame::Pong { .. }));
    let (status, _) = app.conversation(&token, &conversation).await;
    assert_eq!(status, 404, "no conversation was created by refused frames");
    let answer = ws.ask("ok-1", "what is a list?").await;
    assert_eq!(answer.done().status, "complete");
    let (_, body) = app.conversation(&token, &conversation).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_frame_sent_before_ready_is_answered_after_ready_and_never_lost() {
    let app = spawn_app().await;
    let token = app.learner_token("hal");
    let url = format!("ws://{}/ws?token={token}", app.addr);
    let (mut stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::{SinkExt, StreamExt};
    // Sent at once, without waiting for `ready`.
    stream
        .send(tokio_tungstenite::tungstenite::Message::Text(
            serde_json::to_string(&ClientFrame::Ping {
                nonce: Some("early".into()),
            })
            .unwrap()
            .into(),
        ))
        .await
        .unwrap();
    let first: ServerFrame =
        serde_json::from_str(stream.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let second: ServerFrame =
        serde_json::from_str(stream.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert!(matches!(first, ServerFrame::Ready { .. }), "{first:?}");
    assert_eq!(
        second,
        ServerFrame::Pong {
            nonce: Some("early".into())
        }
    );
}

#[tokio::test]
async fn binary_frames_and_a_second_ask_while_streaming_are_refused() {
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..20).map(|i| format!("{i} ")).collect(),
        delay: std::time::Duration::from_millis(50),
        fail_status: None,
    })
    .await;
    let app = spawn_app_with(|s| use_fake_llm(s, &llm)).await;
    let mut ws = app.connect(&app.learner_token("ivy")).await;
    ws.ready().await;
    ws.send(ask_frame("a1", "what is scope?")).await;
    ws.until(|f| matches!(f, ServerFrame::Ack { .. })).await;
    ws.send(ask_frame("a2", "and recursion?")).await;
    let frames = ws.until(|f| matches!(f, ServerFrame::Error { .. })).await;
    let ServerFrame::Error { id, code, .. } = frames.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(*code, ErrorCode::Busy);
    assert_eq!(id.as_deref(), Some("a2"));
    assert_eq!(ws.collect_answer().await.done().id, "a1");
}
