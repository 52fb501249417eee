//! A fake OpenAI-compatible chat completions server: streams SSE chunks like the real API (so
//! the real async-openai client is exercised) and records every request. It is also the
//! fault-injection harness for the model: each request can be given a [`Behaviour`] (stall
//! before the first token or mid-stream, drop the connection, answer 429 with `Retry-After` or
//! a 5xx, stream forever), one by one ([`FakeLlm::push`]) or at random rates ([`Chaos`], the
//! soak run's). Shared with `examples/soak.rs`.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
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
    faults: Arc<Faults>,
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

/// What the fake does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Streams the script's chunks (or fails with its `fail_status`).
    Script,
    /// Answers `status` with an OpenAI-style error body whose message is `message`, and a
    /// `Retry-After` of that many seconds when given.
    Status {
        status: u16,
        retry_after: Option<u64>,
        message: String,
    },
    /// Sends the headers and the role chunk, then nothing for this long, then the script.
    StallBeforeFirstToken(Duration),
    /// Streams `after` chunks, then nothing for `stall`, then the rest.
    StallMidStream { after: usize, stall: Duration },
    /// Streams `after` chunks (0: only the role chunk), then drops the connection.
    DropMidStream { after: usize },
    /// Streams chunks forever, one every `delay`, ignoring `max_tokens`.
    Endless,
    /// Streams these chunks instead of the script's.
    Reply(Vec<String>),
}

impl Behaviour {
    /// A name for reports: `stream`, `429`, `500`, `stall_first`, `stall_mid`, `drop`, `endless`.
    pub fn kind(&self) -> String {
        match self {
            Self::Script | Self::Reply(_) => "stream".into(),
            Self::Status { status, .. } => status.to_string(),
            Self::StallBeforeFirstToken(_) => "stall_first".into(),
            Self::StallMidStream { .. } => "stall_mid".into(),
            Self::DropMidStream { .. } => "drop".into(),
            Self::Endless => "endless".into(),
        }
    }
}

/// Faults drawn at random for every request that no pushed behaviour claims.
#[derive(Clone, Debug)]
pub struct Chaos {
    /// Share of requests that fail: a 429 (with `Retry-After: 1`), a 500 or 503, or a stream
    /// dropped before or after its first token, in equal parts.
    pub fail: f64,
    /// Share of requests that stall for `stall_for` (before the first token or mid-stream).
    pub stall: f64,
    pub stall_for: Duration,
    pub seed: u64,
}

/// What one request got, for the tests and the soak report.
#[derive(Clone, Debug)]
pub struct Served {
    /// The text after `[ask:` in the last message, if any (the soak tags its questions).
    pub tag: Option<String>,
    pub behaviour: Behaviour,
    /// How long the fake itself waited before its first content chunk (its own latency).
    pub own_first_token_delay: Duration,
}

#[derive(Default)]
struct Faults {
    queue: Mutex<VecDeque<Behaviour>>,
    chaos: Mutex<Option<(Chaos, u64)>>,
    served: Mutex<Vec<Served>>,
}

#[derive(Clone)]
struct FakeState {
    script: FakeScript,
    requests: Arc<Mutex<Vec<Value>>>,
    faults: Arc<Faults>,
}

impl FakeLlm {
    pub async fn start(script: FakeScript) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Faults::default());
        let state = FakeState {
            script,
            requests: requests.clone(),
            faults: faults.clone(),
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            requests,
            faults,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The next requests get these behaviours, in order; later ones follow the script.
    pub fn push(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.faults.queue.lock().unwrap().extend(behaviours);
    }

    /// Requests no pushed behaviour claims draw their faults at random.
    pub fn set_chaos(&self, chaos: Chaos) {
        let seed = chaos.seed.max(1);
        *self.faults.chaos.lock().unwrap() = Some((chaos, seed));
    }

    /// Every request served so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.faults.served.lock().unwrap().clone()
    }

    /// How many requests got each kind of behaviour.
    pub fn served_by_kind(&self) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for served in self.faults.served.lock().unwrap().iter() {
            *kinds.entry(served.behaviour.kind()).or_insert(0) += 1;
        }
        kinds
    }
}

impl Faults {
    fn next(&self, chunks: usize) -> Behaviour {
        if let Some(behaviour) = self.queue.lock().unwrap().pop_front() {
            return behaviour;
        }
        let mut chaos = self.chaos.lock().unwrap();
        let Some((chaos, state)) = chaos.as_mut() else {
            return Behaviour::Script;
        };
        let mut draw = || {
            // xorshift64: reproducible for a seed, no dependency.
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 11) as f64 / (1u64 << 53) as f64
        };
        let roll = draw();
        let pick = draw();
        if roll < chaos.fail {
            match (pick * 5.0) as usize {
                0 => Behaviour::Status {
                    status: 429,
                    retry_after: Some(1),
                    message: "rate limit reached for requests".into(),
                },
                1 => Behaviour::Status {
                    status: 500,
                    retry_after: None,
                    message: "the server had an error".into(),
                },
                2 => Behaviour::Status {
                    status: 503,
                    retry_after: None,
                    message: "the engine is overloaded".into(),
                },
                3 => Behaviour::DropMidStream { after: 0 },
                _ => Behaviour::DropMidStream {
                    after: 1 + (draw() * chunks.saturating_sub(1) as f64) as usize,
                },
            }
        } else if roll < chaos.fail + chaos.stall {
            if pick < 0.5 {
                Behaviour::StallBeforeFirstToken(chaos.stall_for)
            } else {
                Behaviour::StallMidStream {
                    after: 1,
                    stall: chaos.stall_for,
                }
            }
        } else {
            Behaviour::Script
        }
    }
}

/// The text after `[ask:` (up to `]`) in the request's last message.
fn tag_of(request: &Value) -> Option<String> {
    let content = request["messages"].as_array()?.last()?["content"].as_str()?;
    let start = content.find("[ask:")? + "[ask:".len();
    let end = content[start..].find(']')? + start;
    Some(content[start..end].to_string())
}

/// One piece of the response body, sent after its pause.
enum Piece {
    Bytes(Duration, Bytes),
    /// Cut the connection after this pause.
    Drop(Duration),
}

async fn completions(State(state): State<FakeState>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(request.clone());
    let script = &state.script;
    let mut behaviour = state.faults.next(script.chunks.len());
    if behaviour == Behaviour::Script
        && let Some(status) = script.fail_status
    {
        behaviour = Behaviour::Status {
            status,
            retry_after: None,
            message: "fake failure".into(),
        };
    }
    let delay = script.delay;
    let own_first_token_delay = match &behaviour {
        Behaviour::StallBeforeFirstToken(stall) => *stall + delay * 2,
        _ => delay * 2,
    };
    state.faults.served.lock().unwrap().push(Served {
        tag: tag_of(&request),
        behaviour: behaviour.clone(),
        own_first_token_delay,
    });
    if let Behaviour::Status {
        status,
        retry_after,
        message,
    } = &behaviour
    {
        let mut response = (
            StatusCode::from_u16(*status).unwrap(),
            axum::Json(
                json!({"error": {"message": message, "type": "server_error", "code": null}}),
            ),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return response;
    }
    let model = request["model"].as_str().unwrap_or("fake").to_string();
    let chunk = move |delta: Value, finish: Value| {
        let body = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        Bytes::from(format!("data: {body}\n\n"))
    };
    let role = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    if behaviour == Behaviour::Endless {
        let texts: Vec<String> = script.chunks.clone();
        let first = futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(role)
        });
        let rest = futures::stream::iter(texts.into_iter().cycle()).then(move |text| {
            let bytes = chunk(json!({"content": text}), Value::Null);
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::convert::Infallible>(bytes)
            }
        });
        return sse(Body::from_stream(first.chain(rest)));
    }
    let mut pieces = vec![Piece::Bytes(delay, role)];
    let texts = match &behaviour {
        Behaviour::Reply(chunks) => chunks,
        _ => &script.chunks,
    };
    for (i, text) in texts.iter().enumerate() {
        let pause = match &behaviour {
            Behaviour::StallBeforeFirstToken(stall) if i == 0 => *stall + delay,
            Behaviour::StallMidStream { after, stall } if i == *after => *stall + delay,
            _ => delay,
        };
        if matches!(&behaviour, Behaviour::DropMidStream { after } if i == *after) {
            pieces.push(Piece::Drop(delay));
            break;
        }
        pieces.push(Piece::Bytes(
            pause,
            chunk(json!({"content": text}), Value::Null),
        ));
    }
    if !matches!(pieces.last(), Some(Piece::Drop(_))) {
        pieces.push(Piece::Bytes(delay, chunk(json!({}), json!("stop"))));
        let usage = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": request["model"], "choices": [],
            "usage": {"prompt_tokens": 321, "completion_tokens": script.chunks.len(), "total_tokens": 321 + script.chunks.len()}
        });
        pieces.push(Piece::Bytes(
            delay,
            Bytes::from(format!("data: {usage}\n\n")),
        ));
        pieces.push(Piece::Bytes(delay, Bytes::from("data: [DONE]\n\n")));
    }
    let stream = futures::stream::iter(pieces).then(|piece| async move {
        match piece {
            Piece::Bytes(pause, bytes) => {
                tokio::time::sleep(pause).await;
                Ok(bytes)
            }
            Piece::Drop(pause) => {
                tokio::time::sleep(pause).await;
                // An error in the body makes the server abort the connection mid-response.
                Err(std::io::Error::other("fake connection drop"))
            }
        }
    });
    sse(Body::from_stream(stream))
}

fn sse(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}
