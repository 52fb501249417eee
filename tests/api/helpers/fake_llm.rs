//! A fake OpenAI-compatible chat completions server: streams SSE chunks like the real API (so
//! the real async-openai client is exercised) and records every request.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

/// A fake OpenAI-compatible chat completions server.
#[derive(Clone)]
pub struct FakeLlm {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
pub struct FakeScript {
    pub chunks: Vec<String>,
    pub delay: Duration,
    /// Answer with this HTTP status and an OpenAI-style error instead of streaming.
    pub fail_status: Option<u16>,
}

impl Default for FakeScript {
    fn default() -> Self {
        Self {
            chunks: vec![
                "A `while` loop stops ".into(),
                "when its condition ".into(),
                "becomes false [1]. ".into(),
                "What changes the condition in your loop?".into(),
            ],
            delay: Duration::from_millis(20),
            fail_status: None,
        }
    }
}

#[derive(Clone)]
struct FakeState {
    script: FakeScript,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeLlm {
    pub async fn start(script: FakeScript) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            script,
            requests: requests.clone(),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

async fn completions(State(state): State<FakeState>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(request.clone());
    if let Some(status) = state.script.fail_status {
        return (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(
                json!({"error": {"message": "fake failure", "type": "server_error", "code": null}}),
            ),
        )
            .into_response();
    }
    let model = request["model"].as_str().unwrap_or("fake").to_string();
    let chunk = |delta: Value, finish: Value| {
        let body = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        Bytes::from(format!("data: {body}\n\n"))
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for text in &state.script.chunks {
        events.push(chunk(json!({"content": text}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    let usage = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [],
        "usage": {"prompt_tokens": 321, "completion_tokens": state.script.chunks.len(), "total_tokens": 321 + state.script.chunks.len()}
    });
    events.push(Bytes::from(format!("data: {usage}\n\n")));
    events.push(Bytes::from("data: [DONE]\n\n"));
    let delay = state.script.delay;
    let stream = futures::stream::iter(events).then(move |bytes| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::convert::Infallible>(bytes)
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}
