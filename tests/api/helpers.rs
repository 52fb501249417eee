//! Test harness: the real `companion` binary on a free port with its own data dir, a fake
//! OpenAI-compatible server that streams SSE like the real API, and a typed WebSocket client.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use companion::auth::{Role, TokenKeys, claims_for};
use futures::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-for-companion";
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How to start the app.
#[derive(Default, Clone)]
pub struct AppOptions {
    pub llm_url: Option<String>,
    /// Extra TOML appended to the test config.
    pub extra_toml: String,
    /// Reuse this data dir (for restarts).
    pub data_dir: Option<PathBuf>,
    pub content_dir: Option<PathBuf>,
    /// The `[embedding]` section; BM25 only (`provider = "none"`) when unset.
    pub embedding_toml: Option<String>,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub child: Child,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let (temp, data_dir) = match &options.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir().expect("temp dir");
            let dir = temp.path().to_path_buf();
            (Some(temp), dir)
        }
    };
    let content = options
        .content_dir
        .clone()
        .unwrap_or_else(|| repo_root().join("course-content"));
    let config_path = data_dir.join("test-config.toml");
    let llm = options
        .llm_url
        .as_deref()
        .map(|url| {
            format!("[llm]\nbase_url = \"{url}\"\napi_key = \"test-key\"\nmodel = \"fake-model\"\n")
        })
        .unwrap_or_default();
    let embedding = options
        .embedding_toml
        .clone()
        .unwrap_or_else(|| "[embedding]\nprovider = \"none\"\n".to_string());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nshutdown_grace_secs = 2\n\
         [auth]\nsecret = \"{SECRET}\"\n\
         [content]\ndir = \"{}\"\n\
         {embedding}\n\
         {llm}\n{}",
        data_dir.display(),
        content.display(),
        options.extra_toml
    );
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(&config_path, config).unwrap();
    let child = start_process(&config_path);
    let (child, addr) = wait_listening(child).await;
    let app = TestApp {
        addr,
        child,
        data_dir,
        _temp: temp,
    };
    app.wait_ready().await;
    app
}

fn start_process(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_companion"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("RUST_LOG", "companion=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start companion")
}

async fn wait_listening(mut child: Child) -> (Child, SocketAddr) {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.strip_prefix("companion listening on http://") {
                return url.parse::<SocketAddr>().expect("address");
            }
        }
        panic!("companion exited before listening");
    })
    .await
    .expect("companion did not start listening within 60 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("companion never became ready");
    }

    pub fn token(&self, role: Role, id: &str) -> String {
        keys()
            .mint(&claims_for(role, id, Some(format!("{id} name")), None, 600))
            .unwrap()
    }

    pub fn learner_token(&self, id: &str) -> String {
        self.token(Role::Learner, id)
    }

    pub async fn connect(&self, token: &str) -> WsClient {
        self.connect_query(&format!("token={token}")).await
    }

    pub async fn connect_query(&self, query: &str) -> WsClient {
        let url = format!("ws://{}/ws?{query}", self.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        WsClient { stream }
    }

    /// The conversation as the REST API returns it.
    pub async fn conversation(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(self.url(&format!("/api/v1/conversations/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// SIGKILL, no chance to clean up; keeps the data dir for a restart.
    pub async fn kill(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.child.kill().await.unwrap();
        let _ = self.child.wait().await;
        (self.data_dir.clone(), self._temp.take())
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        let pid = self.child.id().expect("running");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
    }

    /// Waits for the process to exit; keeps the data dir for a restart.
    pub async fn wait_exit(
        mut self,
    ) -> (std::process::ExitStatus, PathBuf, Option<tempfile::TempDir>) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("companion exits within 30 s")
            .unwrap();
        (status, self.data_dir.clone(), self._temp.take())
    }
}

pub fn keys() -> TokenKeys {
    TokenKeys::new(&SecretString::from(SECRET.to_string()), 0)
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send frame");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn next_frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.stream.next())
                .await
                .expect("a frame within the timeout")
                .expect("socket open")
                .expect("frame");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("JSON frame");
                }
                Message::Close(_) => panic!("socket closed"),
                _ => continue,
            }
        }
    }

    /// Reads frames until one of `kind` arrives; returns all read, that one last.
    pub async fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_frame().await;
            let done = frame["type"] == kind;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    pub async fn ready(&mut self) -> Value {
        let frame = self.next_frame().await;
        assert_eq!(frame["type"], "ready", "{frame}");
        frame
    }

    /// Asks and returns every frame up to `done`.
    pub async fn ask(&mut self, id: &str, text: &str) -> Vec<Value> {
        self.send_json(json!({"type": "ask", "id": id, "text": text}))
            .await;
        self.until("done").await
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

pub fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

pub fn answer_text(frames: &[Value]) -> String {
    of_type(frames, "delta")
        .iter()
        .map(|f| f["text"].as_str().unwrap_or_default())
        .collect()
}

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
