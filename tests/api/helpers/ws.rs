//! [`WsClient`]: a real WebSocket (tokio-tungstenite) that sends the crate's own
//! [`ClientFrame`]s and reads [`ServerFrame`]s; raw text only where a test sends a malformed
//! frame on purpose.
use std::net::SocketAddr;

use companion::http::ws::protocol::{
    ClientFrame, ErrorCode, GuardSummary, LearnerInfo, ServerFrame, Timings, Usage,
};
use companion::transcript::{RetrievalStatus, SourceRef};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::FRAME_TIMEOUT;

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// The `ready` frame.
#[derive(Debug)]
pub struct Ready {
    pub protocol: u32,
    pub conversation_id: String,
    pub learner: LearnerInfo,
}

/// The `done` frame.
#[derive(Debug, Clone)]
pub struct Done {
    pub id: String,
    pub message_id: String,
    pub status: String,
    pub offline: bool,
    pub replayed: bool,
    pub model: String,
    pub usage: Usage,
    pub timings: Timings,
    pub guard: Option<GuardSummary>,
    pub retrieval: RetrievalStatus,
}

/// Every frame of one answer, `done` last.
#[derive(Debug)]
pub struct Answer {
    pub frames: Vec<ServerFrame>,
}

impl WsClient {
    /// Opens `/ws?{query}` on the service at `addr`.
    pub async fn connect(addr: SocketAddr, query: &str) -> WsClient {
        let url = format!("ws://{addr}/ws?{query}");
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        WsClient { stream }
    }

    /// Opens `/ws?{query}` with extra request `headers` (an `Origin`); the HTTP status when
    /// the upgrade is refused.
    pub async fn try_connect(
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws?{query}")
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(WsClient { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("websocket upgrade failed without a status: {error}"),
        }
    }

    /// Reads (and drops) frames until the server closes the socket; whether it did within
    /// `within`.
    pub async fn closed_within(&mut self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                match self.stream.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .is_ok()
    }

    pub async fn send(&mut self, frame: ClientFrame) {
        self.send_text(&serde_json::to_string(&frame).unwrap())
            .await;
    }

    /// A frame as raw text: for frames that are malformed on purpose.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send frame");
    }

    /// A frame as raw JSON: for values the typed frames cannot hold on purpose.
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn next_frame(&mut self) -> ServerFrame {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.stream.next())
                .await
                .expect("a frame within the timeout")
                .expect("socket open")
                .expect("frame");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not a server frame ({e}): {text}"));
                }
                Message::Close(_) => panic!("socket closed"),
                _ => continue,
            }
        }
    }

    /// Reads frames until one matching `last` arrives; returns all read, that one last.
    pub async fn until(&mut self, last: impl Fn(&ServerFrame) -> bool) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_frame().await;
            let done = last(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// The next frame, which must be `ready`.
    pub async fn ready(&mut self) -> Ready {
        match self.next_frame().await {
            ServerFrame::Ready {
                protocol,
                conversation_id,
                learner,
            } => Ready {
                protocol,
                conversation_id,
                learner,
            },
            other => panic!("expected ready, got {other:?}"),
        }
    }

    /// Sends `ask` (no page, no course) and collects its answer.
    pub async fn ask(&mut self, id: &str, text: &str) -> Answer {
        self.send(ask_frame(id, text)).await;
        self.collect_answer().await
    }

    /// Every frame up to and including the next `done`.
    pub async fn collect_answer(&mut self) -> Answer {
        Answer {
            frames: self.until(|f| matches!(f, ServerFrame::Done { .. })).await,
        }
    }

    /// The next frame, which must be an `error`: its id, code and message.
    pub async fn next_error(&mut self) -> (Option<String>, ErrorCode, String) {
        match self.next_frame().await {
            ServerFrame::Error {
                id, code, message, ..
            } => (id, code, message),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

impl Answer {
    /// Appends frames read later (after a cancel, a shutdown).
    pub fn extend(&mut self, frames: Vec<ServerFrame>) {
        self.frames.extend(frames);
    }

    /// Each frame's wire `type`, in order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.frames.iter().map(kind).collect()
    }

    /// The `ack`: the question's message id and whether it was a duplicate.
    pub fn ack(&self) -> (&str, bool) {
        self.frames
            .iter()
            .find_map(|f| match f {
                ServerFrame::Ack {
                    message_id,
                    duplicate,
                    ..
                } => Some((message_id.as_str(), *duplicate)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no ack in {:?}", self.frames))
    }

    /// The sources of the (one) `sources` frame.
    pub fn sources(&self) -> &[SourceRef] {
        let all: Vec<&[SourceRef]> = self
            .frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Sources { sources, .. } => Some(sources.as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(all.len(), 1, "one sources frame: {:?}", self.frames);
        all[0]
    }

    /// The `delta` frames as (id, seq, text).
    pub fn deltas(&self) -> Vec<(&str, u64, &str)> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Delta { id, seq, text } => Some((id.as_str(), *seq, text.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The answer's text: every delta, in order.
    pub fn text(&self) -> String {
        self.deltas().iter().map(|(_, _, text)| *text).collect()
    }

    /// The `error` frames as (id, code, message).
    pub fn errors(&self) -> Vec<(Option<&str>, ErrorCode, &str)> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Error {
                    id, code, message, ..
                } => Some((id.as_deref(), *code, message.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The `done` frame, which must be the last.
    pub fn done(&self) -> Done {
        match self.frames.last() {
            Some(ServerFrame::Done {
                id,
                message_id,
                status,
                offline,
                replayed,
                model,
                usage,
                timings,
                guard,
                retrieval,
            }) => Done {
                id: id.clone(),
                message_id: message_id.clone(),
                status: status.clone(),
                offline: *offline,
                replayed: *replayed,
                model: model.clone(),
                usage: usage.clone(),
                timings: timings.clone(),
                guard: guard.clone(),
                retrieval: *retrieval,
            },
            _ => panic!("the last frame is not done: {:?}", self.frames),
        }
    }
}

/// An `ask` with no page and no course.
pub fn ask_frame(id: &str, text: &str) -> ClientFrame {
    ClientFrame::Ask {
        id: id.into(),
        text: text.into(),
        page: None,
        course: None,
    }
}

/// An `attach` of `content` outside any project: a pasted snippet, or a file when `name` is
/// given.
pub fn attach_frame(id: &str, name: Option<&str>, content: &str) -> ClientFrame {
    ClientFrame::Attach {
        id: Some(id.into()),
        name: name.map(Into::into),
        content: content.into(),
        project: None,
    }
}

/// A frame's wire `type`.
pub fn kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Ready { .. } => "ready",
        ServerFrame::Ack { .. } => "ack",
        ServerFrame::Sources { .. } => "sources",
        ServerFrame::Delta { .. } => "delta",
        ServerFrame::Done { .. } => "done",
        ServerFrame::Pong { .. } => "pong",
        ServerFrame::FeedbackSaved { .. } => "feedback_saved",
        ServerFrame::MentorRequested { .. } => "mentor_requested",
        ServerFrame::Attached { .. } => "attached",
        ServerFrame::Error { .. } => "error",
    }
}
