use serde_json::json;

use crate::helpers::*;
use companion::auth::{Role, claims_for, unix_now};

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
    let conversation = ws.ready().await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();

    let cases = [
        ("{this is not json", "bad_json"),
        (r#"{"id":"x","text":"hi"}"#, "missing_field"),
        (r#"{"type":"shout","id":"x"}"#, "unknown_type"),
        (r#"{"type":"ask","id":"x"}"#, "missing_field"),
        (r#"{"type":"ask","id":"x","text":42}"#, "invalid_field"),
        (r#"{"type":"ask","id":"e1","text":"   "}"#, "empty_question"),
        (r#"{"type":"ask","id":"","text":"hello"}"#, "invalid_field"),
        (
            r#"{"type":"cancel","id":"nothing-streaming"}"#,
            "unknown_ask",
        ),
    ];
    for (text, code) in cases {
        ws.send_text(text).await;
        let frame = ws.next_frame().await;
        assert_eq!(frame["type"], "error", "{text} -> {frame}");
        assert_eq!(frame["code"], code, "{text} -> {frame}");
        assert!(!frame["message"].as_str().unwrap().is_empty());
    }
    let long = "a".repeat(4001);
    ws.send_json(json!({"type": "ask", "id": "long", "text": long}))
        .await;
    let frame = ws.next_frame().await;
    assert_eq!(frame["code"], "question_too_long", "{frame}");
    assert!(frame["message"].as_str().unwrap().contains("4000"));

    // Still usable, and none of the refused questions was stored.
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.next_frame().await["type"], "pong");
    let (status, _) = app.conversation(&token, &conversation).await;
    assert_eq!(status, 404, "no conversation was created by refused frames");
    let frames = ws.ask("ok-1", "what is a list?").await;
    assert_eq!(frames.last().unwrap()["status"], "complete");
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
            json!({"type": "ping", "nonce": "early"}).to_string().into(),
        ))
        .await
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(stream.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    let second: serde_json::Value =
        serde_json::from_str(stream.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "ready");
    assert_eq!(second["type"], "pong");
    assert_eq!(second["nonce"], "early");
}

#[tokio::test]
async fn binary_frames_and_a_second_ask_while_streaming_are_refused() {
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..20).map(|i| format!("{i} ")).collect(),
        delay: std::time::Duration::from_millis(50),
        fail_status: None,
    })
    .await;
    let app = spawn_app_with(AppOptions {
        llm_url: Some(llm.base_url()),
        ..Default::default()
    })
    .await;
    let mut ws = app.connect(&app.learner_token("ivy")).await;
    ws.ready().await;
    ws.send_json(json!({"type": "ask", "id": "a1", "text": "what is scope?"}))
        .await;
    ws.until("ack").await;
    ws.send_json(json!({"type": "ask", "id": "a2", "text": "and recursion?"}))
        .await;
    let frames = ws.until("error").await;
    let error = frames.last().unwrap();
    assert_eq!(error["code"], "busy");
    assert_eq!(error["id"], "a2");
    let done = ws.until("done").await;
    assert_eq!(done.last().unwrap()["id"], "a1");
}
