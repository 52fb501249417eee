//! The WebSocket gateway: authenticates the upgrade (token, `Origin`, socket caps), then runs a
//! send half (frames out of a bounded queue that is never waited on: a client that stops
//! reading is dropped, its answer goes on) and a receive half (client frames in, the token's
//! expiry and the learner's erasure re-checked, idle and ping timeouts), one answer streaming
//! at a time. Per-learner quotas are counted in the database ([`super::quota`]).
pub mod protocol;
mod resume;
pub mod sockets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::quota::{self, Kind, Refused};
use super::{ApiError, AppState, ErrorChain};
use crate::auth::{Claims, Role};
use crate::chat::{self, ChatError, Learner, PageRef, Stops, Turn, TurnEvent, TurnSummary};
use crate::llm::LlmFailure;
use crate::review::{Feedback, Rating};
use protocol::{
    ClientFrame, ErrorCode, LearnerInfo, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame, Timings,
    Usage, parse_client_frame,
};
use sockets::{SocketPermit, origin_allowed};

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    conversation: Option<String>,
}

/// `GET /ws`: the token comes as `?token=` or as a `bearer.<token>` subprotocol.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let header = |name: axum::http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header(axum::http::header::ORIGIN);
    if !origin_allowed(
        origin,
        header(axum::http::header::HOST),
        &state.sockets.settings.allowed_origins,
    ) {
        return Err(ApiError::Forbidden(format!(
            "origin {:?} may not open a socket here",
            origin.unwrap_or_default()
        )));
    }
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let token = query
        .token
        .clone()
        .or_else(|| {
            offered
                .iter()
                .find_map(|p| p.strip_prefix("bearer.").map(str::to_string))
        })
        .ok_or(ApiError::Unauthorized("missing token".into()))?;
    let claims = state.keys.verify(&token)?;
    if !matches!(claims.role, Role::Learner | Role::Admin) {
        return Err(ApiError::Forbidden("only learners chat".into()));
    }
    // An erased learner's old token neither chats nor brings the profile back.
    if erased(&state, &claims).await? {
        return Err(ApiError::Forbidden(format!(
            "learner {:?} was erased; this token no longer opens a socket",
            claims.sub
        )));
    }
    let permit = state
        .sockets
        .admit(&claims.sub, peer.ip())
        .map_err(|message| ApiError::TooMany {
            message,
            retry_after: None,
        })?;
    // The token's name and course fill the learner's profile on first connect.
    if let Err(error) = chat::attach::ensure_profile(state.chat.learners.as_ref(), &claims).await {
        tracing::warn!(error = %ErrorChain(&error), learner = %claims.sub, "cannot fill the profile from the token");
    }
    if !state.is_ready() {
        return Err(ApiError::Unavailable(
            "the index is still being built".into(),
        ));
    }
    let conversation_id = match query.conversation {
        Some(id) => {
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(ApiError::BadRequest(format!(
                    "conversation {id:?} is not a valid id"
                )));
            }
            match state.chat.store.conversation(&id).await? {
                Some(c) if c.learner_id != claims.sub => {
                    return Err(ApiError::NotFound("conversation".into()));
                }
                _ => id,
            }
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let learner = Learner {
        name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
        id: claims.sub.clone(),
    };
    let course = claims.course.clone();
    let ws = if offered.iter().any(|p| p == SUBPROTOCOL) {
        ws.protocols([SUBPROTOCOL])
    } else {
        ws
    };
    let max_frame = state.limits.max_frame_bytes;
    Ok(ws
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        // tungstenite reserves 128 KiB of read buffer per socket by default: 1.3 GB for 10,000
        // idle learners. Frames are read 512 bytes at a time instead (the buffer grows
        // for a larger frame, up to the frame limit), and each frame is written out as it is
        // sent.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_frame.max(MIN_WRITE_BUFFER_BYTES))
        .on_upgrade(move |socket| {
            // Split here, not in `session`: its future would keep room for the whole
            // `WebSocket` (368 bytes) for the socket's life.
            let (sink, stream) = socket.split();
            session(
                sink,
                stream,
                state,
                Session {
                    learner,
                    conversation_id,
                    course,
                    claims,
                    _permit: permit,
                },
            )
        }))
}

/// Whether `claims`' learner was erased after the token was issued.
async fn erased(state: &AppState, claims: &Claims) -> Result<bool, crate::store::StoreError> {
    let issued_ms = i64::try_from(claims.iat.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok(state
        .review
        .erased_at(&claims.sub)
        .await?
        .is_some_and(|erased_at| erased_at >= issued_ms))
}

struct Session {
    learner: Learner,
    conversation_id: String,
    course: Option<String>,
    claims: Claims,
    /// This socket's place under the caps; given back when the session ends.
    _permit: SocketPermit,
}

/// The read buffer a socket starts with (see `upgrade`).
const READ_BUFFER_BYTES: usize = 512;
/// What a socket may hold of frames it could not write yet before it is closed.
const MIN_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Attachments waiting for the next question on a connection; older ones make room.
const MAX_PENDING_ATTACHMENTS: usize = 3;

struct InFlight {
    client_id: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Set when the answer's `done` frame is queued: the answer is stored, and a client that
    /// has seen `done` may ask again at once, before the task itself has wound down.
    done: Arc<AtomicBool>,
}

/// Frames out to one socket. Queuing never waits: a full queue means the client stopped
/// reading, and the socket is dropped (`drop` trips) rather than letting the answer, `cancel`
/// or shutdown wait on it.
#[derive(Clone)]
struct Outbox {
    /// Frames as the JSON text the socket sends: a channel slot is a `String` (24 bytes), not a
    /// `ServerFrame` (208), and tokio allocates a socket's slots 32 at a time.
    frames: mpsc::Sender<String>,
    drop: CancellationToken,
    learner: String,
    metrics: Arc<Metrics>,
}

impl Outbox {
    fn push(&self, frame: ServerFrame) {
        if let ServerFrame::Error { code, .. } = &frame {
            self.metrics.error_frame(*code);
        }
        let Ok(text) = serde_json::to_string(&frame) else {
            return;
        };
        match self.frames.try_send(text) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                if !self.drop.is_cancelled() {
                    tracing::warn!(learner = %self.learner, "the client stopped reading: its socket is dropped");
                    self.drop.cancel();
                }
            }
        }
    }
}

/// Milliseconds since the session began, shared between the halves: when the client was last
/// heard from (any frame, a pong included).
struct Heard {
    began: Instant,
    at_ms: AtomicU64,
}

impl Heard {
    fn now(&self) {
        self.at_ms
            .store(self.began.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn silent_for(&self) -> Duration {
        let at = Duration::from_millis(self.at_ms.load(Ordering::Acquire));
        self.began.elapsed().saturating_sub(at)
    }
}

async fn session(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    state: Arc<AppState>,
    session: Session,
) {
    let settings = &state.sockets.settings;
    let (frames, mut out_rx) = mpsc::channel::<String>(settings.outbound_frames);
    let out = Outbox {
        frames,
        drop: CancellationToken::new(),
        learner: session.learner.id.clone(),
        metrics: state.metrics.clone(),
    };
    let heard = Arc::new(Heard {
        began: Instant::now(),
        at_ms: AtomicU64::new(0),
    });
    let dropped = out.drop.clone();
    let sender_heard = heard.clone();
    // Silent this long (no frame, no pong), or one write blocked this long: the client is gone.
    let deaf_after = settings.ping_every + settings.pong_timeout;
    let ping_every = settings.ping_every;
    let sender = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        loop {
            let message = tokio::select! {
                _ = dropped.cancelled() => return,
                frame = out_rx.recv() => match frame {
                    Some(text) => Message::Text(text.into()),
                    None => break,
                },
                _ = ping.tick() => {
                    if sender_heard.silent_for() > deaf_after {
                        tracing::info!("no pong from the client: its socket is dropped");
                        dropped.cancel();
                        return;
                    }
                    Message::Ping(axum::body::Bytes::new())
                }
            };
            tokio::select! {
                sent = sink.send(message) => if sent.is_err() { return },
                _ = dropped.cancelled() => return,
                _ = tokio::time::sleep(deaf_after) => {
                    tracing::info!("a write to the client blocked too long: its socket is dropped");
                    dropped.cancel();
                    return;
                }
            }
        }
        let _ = sink.close().await;
    });
    // The widget speaks the learner's language; a profile that cannot be read is no reason to
    // refuse the chat.
    let locale = match state.chat.learners.learner(&session.learner.id).await {
        Ok(profile) => profile.map(|p| p.locale).filter(|l| !l.is_empty()),
        Err(error) => {
            tracing::warn!(error = ?error, "reading the learner's locale failed");
            None
        }
    };
    out.push(ServerFrame::Ready {
        protocol: PROTOCOL_VERSION,
        conversation_id: session.conversation_id.clone(),
        learner: LearnerInfo {
            id: session.learner.id.clone(),
            name: session.learner.name.clone(),
            locale,
        },
    });
    let mut in_flight: Option<InFlight> = None;
    let mut attachments: Vec<crate::prompt::Attachment> = Vec::new();
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = state.shutdown.cancelled() => break,
            _ = out.drop.cancelled() => break,
            _ = &mut idle => {
                if in_flight.as_ref().is_some_and(|f| !f.task.is_finished()) {
                    idle.as_mut().reset(tokio::time::Instant::now() + settings.idle_timeout);
                    continue;
                }
                out.push(ServerFrame::error(
                    None,
                    ErrorCode::IdleTimeout,
                    format!(
                        "no frame for {} s; the socket closes",
                        settings.idle_timeout.as_secs()
                    ),
                ));
                break;
            }
        };
        heard.now();
        let text = match message {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                out.push(ServerFrame::error(
                    None,
                    ErrorCode::BadJson,
                    "binary frames are not accepted; send JSON text",
                ));
                continue;
            }
            // Pings and pongs: heard, nothing to answer.
            Some(Ok(_)) => continue,
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + settings.idle_timeout);
        if let Some(frame) = token_expired(&session.claims, state.sockets.leeway_secs) {
            out.push(frame);
            break;
        }
        let frame = match parse_client_frame(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                out.push(*error);
                continue;
            }
        };
        if in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished() || f.done.load(Ordering::Acquire))
        {
            in_flight = None;
        }
        if let Flow::Stop = Box::pin(handle_frame(
            &state,
            &session,
            &out,
            &mut in_flight,
            &mut attachments,
            frame,
        ))
        .await
        {
            break;
        }
    }
    // The learner left (or was dropped): an answer in flight goes on and is stored; the
    // socket closes once its last frames are written (the sender gives up on a client that
    // does not take them).
    drop(out);
    let _ = sender.await;
}

/// What the socket's loop does after a frame.
enum Flow {
    Next,
    Stop,
}

/// Handles one parsed frame of the learner's. Boxed by the loop that awaits it: its state (the
/// frame, a handler's database calls) is on the heap only while a frame is handled, not in
/// every idle socket's future (4,992 bytes per socket when it was inline, release build).
async fn handle_frame(
    state: &AppState,
    session: &Session,
    out: &Outbox,
    in_flight: &mut Option<InFlight>,
    attachments: &mut Vec<crate::prompt::Attachment>,
    frame: ClientFrame,
) -> Flow {
    match frame {
        ClientFrame::Ping { nonce } => out.push(ServerFrame::Pong { nonce }),
        ClientFrame::Feedback {
            message_id,
            rating,
            comment,
        } => out.push(save_feedback(state, session, message_id, rating, comment).await),
        ClientFrame::RequestMentor { text } => out.push(request_mentor(state, session, text).await),
        ClientFrame::Attach {
            id,
            name,
            content,
            project,
        } => {
            let frame = attach(state, session, attachments, id, name, content, project).await;
            let erased = matches!(
                frame,
                ServerFrame::Error {
                    code: ErrorCode::LearnerErased,
                    ..
                }
            );
            out.push(frame);
            if erased {
                return Flow::Stop;
            }
        }
        ClientFrame::Resume {
            id,
            conversation,
            message_id,
            last_seq,
        } => {
            if in_flight.is_some() {
                out.push(ServerFrame::error(
                    Some(id),
                    ErrorCode::Busy,
                    "an answer is already streaming on this connection",
                ));
                return Flow::Next;
            }
            let question =
                match resume::own_question(state, session, &id, &conversation, &message_id).await {
                    Ok(question) => question,
                    Err(error) => {
                        out.push(*error);
                        return Flow::Next;
                    }
                };
            let cancel = CancellationToken::new();
            let done = Arc::new(AtomicBool::new(false));
            let resuming = resume::Resuming {
                id: id.clone(),
                question,
                last_seq,
                learner: session.learner.clone(),
                course: session.course.clone(),
            };
            let task = state.turns.spawn(resume::run_resume(
                state.clone(),
                resuming,
                cancel.clone(),
                out.clone(),
                done.clone(),
            ));
            *in_flight = Some(InFlight {
                client_id: id,
                cancel,
                task,
                done,
            });
        }
        ClientFrame::Cancel { id } => match &in_flight {
            Some(f) if f.client_id == id => f.cancel.cancel(),
            _ => out.push(ServerFrame::error(
                Some(id.clone()),
                ErrorCode::UnknownAsk,
                format!("no answer is streaming for ask {id:?}"),
            )),
        },
        ClientFrame::Ask {
            id,
            text,
            page,
            course,
        } => {
            let received = Instant::now();
            if let Err(error) = check_ask(state, &id, &text, in_flight.is_some()) {
                out.push(*error);
                return Flow::Next;
            }
            if let Err(error) = check_ask_context(state, &id, page.as_ref(), course.as_deref()) {
                out.push(*error);
                return Flow::Next;
            }
            let slot = match admit_ask(state, session, &id).await {
                Ok(slot) => slot,
                Err(error) => {
                    let erased = matches!(
                        *error,
                        ServerFrame::Error {
                            code: ErrorCode::LearnerErased,
                            ..
                        }
                    );
                    out.push(*error);
                    if erased {
                        return Flow::Stop;
                    }
                    return Flow::Next;
                }
            };
            let page = page.unwrap_or_default();
            let turn = Turn {
                learner: session.learner.clone(),
                conversation_id: session.conversation_id.clone(),
                client_id: id.clone(),
                text: text.trim().to_string(),
                page: PageRef {
                    url: page.url,
                    title: page.title,
                },
                course: course.or_else(|| session.course.clone()),
                attachments: std::mem::take(attachments),
                answer_interrupted_again: false,
            };
            let cancel = CancellationToken::new();
            let stops = Stops {
                cancel: cancel.clone(),
                shutdown: state.turn_shutdown.clone(),
            };
            let done = Arc::new(AtomicBool::new(false));
            let task = state.turns.spawn(run_turn(
                state.clone(),
                turn,
                stops,
                out.clone(),
                done.clone(),
                Admitted {
                    slot,
                    admission: received.elapsed(),
                },
            ));
            *in_flight = Some(InFlight {
                client_id: id,
                cancel,
                task,
                done,
            });
        }
    }
    Flow::Next
}

/// The `error` frame that closes a socket whose token has expired since the upgrade.
fn token_expired(claims: &Claims, leeway_secs: u64) -> Option<ServerFrame> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (claims.exp.saturating_add(leeway_secs) < now).then(|| {
        ServerFrame::error(
            None,
            ErrorCode::TokenExpired,
            format!(
                "the token expired at {} (unix time); reconnect with a fresh token",
                claims.exp
            ),
        )
    })
}

/// The quota's `error` frame: a rate is `rate_limited`, a daily amount `quota_exceeded`.
fn refused_frame(id: Option<String>, refused: Refused) -> ServerFrame {
    let code = if refused.kind.is_rate() {
        ErrorCode::RateLimited
    } else {
        ErrorCode::QuotaExceeded
    };
    ServerFrame::refused(id, code, refused.message, Some(refused.retry_after))
}

/// The database could not be read or written for a frame's checks: like a question that cannot
/// be stored, the frame is refused as not saved, with the code a client retries on.
fn quota_unavailable(id: Option<String>, error: &crate::store::StoreError) -> ServerFrame {
    tracing::error!(error = %ErrorChain(error), "cannot read or count a learner's quota");
    ServerFrame::error(
        id,
        ErrorCode::StoreUnavailable,
        "not saved: the service cannot reach its database; try again in a moment",
    )
}

/// Counts `amount` of `kind` against `limit` for the session's learner: `None` when within
/// it, else the `error` frame to send.
async fn take_quota(
    state: &AppState,
    session: &Session,
    id: Option<String>,
    kind: Kind,
    limit: u64,
    what: &str,
) -> Option<ServerFrame> {
    match quota::take(&state.review, &session.learner.id, kind, 1, limit, what).await {
        Ok(Ok(())) => None,
        Ok(Err(refused)) => Some(refused_frame(id, refused)),
        Err(error) => Some(quota_unavailable(id, &error)),
    }
}

/// A stream slot held by one answer, given back when it ends.
struct StreamSlot {
    slot: i64,
    holder: String,
}

/// The checks of an `ask` that need the database: the learner still exists, within today's
/// tokens, a free stream slot, within the questions per minute (counted last, so a question
/// refused for another reason does not count). The slot, if streams are capped.
async fn admit_ask(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<Option<StreamSlot>, Box<ServerFrame>> {
    let some_id = || Some(id.to_string());
    match erased(state, &session.claims).await {
        Ok(false) => {}
        Ok(true) => {
            return Err(Box::new(ServerFrame::error(
                some_id(),
                ErrorCode::LearnerErased,
                "your account was erased; the socket closes",
            )));
        }
        Err(error) => return Err(Box::new(quota_unavailable(some_id(), &error))),
    }
    let learner = &session.learner.id;
    let quotas = &state.quotas.settings;
    match quota::check(
        &state.review,
        learner,
        Kind::Tokens,
        quotas.tokens_per_day,
        "tokens",
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => return Err(Box::new(refused_frame(some_id(), refused))),
        Err(error) => return Err(Box::new(quota_unavailable(some_id(), &error))),
    }
    let slot = if quotas.streams_per_learner == 0 {
        None
    } else {
        let holder = format!("{}:{id}", uuid::Uuid::now_v7());
        let lease_ms = quotas.stream_lease.as_millis() as i64;
        match state
            .review
            .take_stream_slot(learner, &holder, quotas.streams_per_learner, lease_ms)
            .await
        {
            Ok(Some(slot)) => Some(StreamSlot { slot, holder }),
            Ok(None) => {
                return Err(Box::new(ServerFrame::error(
                    some_id(),
                    ErrorCode::QuotaExceeded,
                    format!(
                        "{} answers of yours are already streaming, the limit; wait for one to end",
                        quotas.streams_per_learner
                    ),
                )));
            }
            Err(error) => return Err(Box::new(quota_unavailable(some_id(), &error))),
        }
    };
    let limit = u64::from(state.limits.asks_per_minute);
    if let Some(frame) = take_quota(
        state,
        session,
        some_id(),
        Kind::Questions,
        limit,
        "questions",
    )
    .await
    {
        release_slot(state, learner, slot).await;
        return Err(Box::new(frame));
    }
    Ok(slot)
}

async fn release_slot(state: &AppState, learner: &str, slot: Option<StreamSlot>) {
    if let Some(StreamSlot { slot, holder }) = slot
        && let Err(error) = state
            .review
            .release_stream_slot(learner, slot, &holder)
            .await
    {
        tracing::warn!(error = %ErrorChain(&error), "cannot free a stream slot; its lease will");
    }
}

const MAX_FEEDBACK_COMMENT_CHARS: usize = 2000;

/// Stores a learner's rating of one of their answers; thumbs-down may raise a flag.
async fn save_feedback(
    state: &AppState,
    session: &Session,
    message_id: String,
    rating: Rating,
    comment: Option<String>,
) -> ServerFrame {
    let limit = u64::from(state.quotas.settings.feedback_per_minute);
    if let Some(frame) = take_quota(state, session, None, Kind::Feedback, limit, "ratings").await {
        return frame;
    }
    let comment = comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if let Some(chars) = comment.as_ref().map(|c| c.chars().count())
        && chars > MAX_FEEDBACK_COMMENT_CHARS
    {
        return ServerFrame::error(
            None,
            ErrorCode::InvalidField,
            format!(
                "feedback comment has {chars} characters; the limit is {MAX_FEEDBACK_COMMENT_CHARS}"
            ),
        );
    }
    let unknown = || {
        ServerFrame::error(
            None,
            ErrorCode::UnknownMessage,
            format!("no answer {message_id:?} in your conversations"),
        )
    };
    let message = match state.review.message(&message_id).await {
        Ok(Some(m)) if m.learner_id == session.learner.id && m.role == "assistant" => m,
        Ok(_) => return unknown(),
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot read a message for feedback");
            return ServerFrame::error(None, ErrorCode::Internal, "the feedback was not stored");
        }
    };
    let feedback = Feedback {
        id: uuid::Uuid::now_v7().to_string(),
        message_id: message.id.clone(),
        learner_id: session.learner.id.clone(),
        rating,
        comment,
        created_at: crate::transcript::now_ms(),
    };
    if let Err(error) = state.review.put_feedback(&feedback).await {
        tracing::error!(error = %ErrorChain(&error), "cannot store feedback");
        return ServerFrame::error(None, ErrorCode::Internal, "the feedback was not stored");
    }
    // Inline (a few small queries) so that ratings sent in a row are counted in order.
    if let Some(flagger) = &state.chat.flagger
        && let Err(error) = flagger.on_feedback(&feedback).await
    {
        tracing::warn!(error = %ErrorChain(&error), "thumbs-down rule failed");
    }
    ServerFrame::FeedbackSaved {
        message_id: message.id,
        rating,
    }
}

/// The `attach` frame: checked (and, when named, stored) by [`chat::attach::attach`]; it
/// goes with the next question.
async fn attach(
    state: &AppState,
    session: &Session,
    pending: &mut Vec<crate::prompt::Attachment>,
    id: Option<String>,
    name: Option<String>,
    content: String,
    project: Option<String>,
) -> ServerFrame {
    match erased(state, &session.claims).await {
        Ok(false) => {}
        Ok(true) => {
            return ServerFrame::error(
                id,
                ErrorCode::LearnerErased,
                "your account was erased; the socket closes",
            );
        }
        Err(error) => return quota_unavailable(id, &error),
    }
    let limit = u64::from(state.quotas.settings.attaches_per_minute);
    if let Some(frame) = take_quota(
        state,
        session,
        id.clone(),
        Kind::Attaches,
        limit,
        "attachments",
    )
    .await
    {
        return frame;
    }
    if name.is_some()
        && let Err(error) = state
            .quotas
            .take_upload(&state.review, &session.learner.id, content.len() as u64)
            .await
    {
        return match error {
            ApiError::TooMany {
                message,
                retry_after,
            } => ServerFrame::refused(id, ErrorCode::QuotaExceeded, message, retry_after),
            other => {
                tracing::error!(error = ?other, "cannot count an attachment's bytes");
                ServerFrame::error(
                    id,
                    ErrorCode::Internal,
                    "cannot check your quota right now; try again",
                )
            }
        };
    }
    match chat::attach::attach(&state.chat, &session.claims, name, content, project).await {
        Ok(attached) => {
            if pending.len() >= MAX_PENDING_ATTACHMENTS {
                pending.remove(0);
            }
            let (project, path) = attached.stored.clone().unzip();
            let frame = ServerFrame::Attached {
                id,
                name: attached.attachment.name.clone(),
                bytes: attached.bytes,
                stored: attached.stored.is_some(),
                project,
                path,
            };
            pending.push(attached.attachment);
            frame
        }
        Err(error) if error.is_internal() => {
            tracing::error!(error = %ErrorChain(&error), "cannot store an attachment");
            ServerFrame::error(
                id,
                ErrorCode::Internal,
                "the attachment was not stored; try again",
            )
        }
        Err(error) => ServerFrame::error(id, ErrorCode::AttachmentRefused, error.to_string()),
    }
}

/// The "ask my mentor" button: a flag the mentor sees.
async fn request_mentor(state: &AppState, session: &Session, text: Option<String>) -> ServerFrame {
    if let Some(chars) = text.as_ref().map(|t| t.chars().count())
        && chars > state.limits.max_question_chars
    {
        return ServerFrame::error(
            None,
            ErrorCode::InvalidField,
            format!(
                "request_mentor text has {chars} characters; the limit is {}",
                state.limits.max_question_chars
            ),
        );
    }
    let limit = u64::from(state.quotas.settings.mentor_requests_per_hour);
    if let Some(frame) = take_quota(
        state,
        session,
        None,
        Kind::MentorRequests,
        limit,
        "mentor requests",
    )
    .await
    {
        return frame;
    }
    let Some(flagger) = &state.chat.flagger else {
        return ServerFrame::error(
            None,
            ErrorCode::Internal,
            "mentor requests are not available",
        );
    };
    match flagger
        .on_mentor_request(
            &session.learner.id,
            &session.conversation_id,
            text.as_deref(),
        )
        .await
    {
        Ok(flag) => ServerFrame::MentorRequested { flag_id: flag.id },
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot store a mentor request");
            ServerFrame::error(
                None,
                ErrorCode::Internal,
                "the request was not stored; try again",
            )
        }
    }
}

fn check_ask(state: &AppState, id: &str, text: &str, busy: bool) -> Result<(), Box<ServerFrame>> {
    let err =
        |code, message: String| Box::new(ServerFrame::error(Some(id.to_string()), code, message));
    if id.is_empty() || id.chars().count() > 100 {
        return Err(err(
            ErrorCode::InvalidField,
            "ask frame: `id` must be 1 to 100 characters".into(),
        ));
    }
    if text.trim().is_empty() {
        return Err(err(
            ErrorCode::EmptyQuestion,
            "the question is empty".into(),
        ));
    }
    let chars = text.chars().count();
    if chars > state.limits.max_question_chars {
        return Err(err(
            ErrorCode::QuestionTooLong,
            format!(
                "the question has {chars} characters; the limit is {}",
                state.limits.max_question_chars
            ),
        ));
    }
    if state.turn_shutdown.is_cancelled() || state.shutdown.is_cancelled() {
        return Err(err(
            ErrorCode::ShuttingDown,
            "the server is restarting; ask again in a moment".into(),
        ));
    }
    if busy {
        return Err(err(
            ErrorCode::Busy,
            "an answer is already streaming on this connection; wait for it or cancel it".into(),
        ));
    }
    Ok(())
}

/// Longest page URL an `ask` may carry, in characters.
const MAX_PAGE_URL_CHARS: usize = 2048;

/// What an `ask` says about where the learner is: the course must be one whose pages are
/// loaded (it reaches the system prompt and scopes retrieval), the page URL short. The page
/// title is free text: the prompt quotes it as one short line (`prompt::system_value`).
fn check_ask_context(
    state: &AppState,
    id: &str,
    page: Option<&protocol::PageInfo>,
    course: Option<&str>,
) -> Result<(), Box<ServerFrame>> {
    let err = |message: String| {
        Box::new(ServerFrame::error(
            Some(id.to_string()),
            ErrorCode::InvalidField,
            message,
        ))
    };
    if let Some(course) = course
        && !state.pages.has_course(course)
    {
        let shown: String = course.chars().take(80).collect();
        return Err(err(format!("ask frame: unknown course {shown:?}")));
    }
    if let Some(url) = page.and_then(|p| p.url.as_deref()) {
        let chars = url.chars().count();
        if chars > MAX_PAGE_URL_CHARS {
            return Err(err(format!(
                "ask frame: page url has {chars} characters; the limit is {MAX_PAGE_URL_CHARS}"
            )));
        }
    }
    Ok(())
}

/// An ask let through: its stream slot, and how long its checks and quotas took.
struct Admitted {
    slot: Option<StreamSlot>,
    admission: Duration,
}

/// Runs `chat::answer` and turns its events into frames.
async fn run_turn(
    state: AppState,
    turn: Turn,
    stops: Stops,
    out: Outbox,
    done: Arc<AtomicBool>,
    admitted: Admitted,
) {
    let _streaming = state.metrics.streaming();
    let Admitted { slot, admission } = admitted;
    let client_id = turn.client_id.clone();
    let learner = turn.learner.id.clone();
    let (events, mut events_rx) = mpsc::channel::<TurnEvent>(64);
    let forward_out = out.clone();
    let forward_id = client_id.clone();
    let forward_state = state.clone();
    let forward_learner = learner.clone();
    let forward = tokio::spawn(async move {
        let mut slot = slot;
        while let Some(event) = events_rx.recv().await {
            if let TurnEvent::Done(summary) = &event {
                forward_state
                    .metrics
                    .observe_turn(&summary.stages, admission);
                // Counted and freed before `done` goes out: a learner who asks again as soon
                // as it arrives meets today's tokens with this answer's in, and a free slot.
                settle(&forward_state, &forward_learner, summary, slot.take()).await;
                // A failed answer says why before its `done`: a stable code and a message of
                // our own. The model's error text may name internal hosts or echo a key: it
                // stays in the log (chat logged it).
                if let Some(failure) = summary.failure {
                    let (code, message) = llm_failure_frame(failure);
                    let frame = ServerFrame::error(Some(forward_id.clone()), code, message);
                    forward_out.push(frame);
                }
                done.store(true, Ordering::Release);
            }
            // Never waits on the client: the answer is read, stored and checkpointed whatever
            // the socket does.
            forward_out.push(frame_of(&forward_id, event));
        }
        slot
    });
    let result = chat::answer(&state.chat, turn, events, stops).await;
    // A turn that ended without `done` (an error) still frees its slot.
    let slot = forward.await.unwrap_or_default();
    release_slot(&state, &learner, slot).await;
    let error = match result {
        Ok(_) => None,
        Err(ChatError::DuplicateInFlight) => Some((
            ErrorCode::DuplicateInFlight,
            ChatError::DuplicateInFlight.to_string(),
        )),
        Err(ChatError::Paused(message)) => Some((ErrorCode::CompanionPaused, message)),
        Err(error @ ChatError::NotStored(_)) => {
            tracing::error!(error = %ErrorChain(&error), "question refused: it could not be stored");
            Some((
                ErrorCode::StoreUnavailable,
                "your question was not saved: the service cannot reach its database; ask again in a moment".to_string(),
            ))
        }
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "turn failed");
            Some((
                ErrorCode::Internal,
                "the question could not be answered; try again".to_string(),
            ))
        }
    };
    if let Some((code, message)) = error {
        out.push(ServerFrame::error(Some(client_id), code, message));
    }
}

/// An answer's end in the quotas: its tokens counted (a replay counts nothing) and its stream
/// slot freed.
async fn settle(state: &AppState, learner: &str, summary: &TurnSummary, slot: Option<StreamSlot>) {
    release_slot(state, learner, slot).await;
    let tokens = summary.tokens_in.max(0) + summary.tokens_out.max(0);
    if !summary.replayed
        && let Err(error) = quota::record(&state.review, learner, Kind::Tokens, tokens as u64).await
    {
        tracing::warn!(error = %ErrorChain(&error), "cannot count the tokens of an answer");
    }
}

/// What a learner is told when the model failed: never the model's own error text.
fn llm_failure_frame(failure: LlmFailure) -> (ErrorCode, &'static str) {
    match failure {
        LlmFailure::Unavailable => (
            ErrorCode::LlmUnavailable,
            "the AI model is unavailable right now; your question is saved, ask again in a moment",
        ),
        LlmFailure::Timeout => (
            ErrorCode::LlmTimeout,
            "the AI model took too long to answer; your question is saved, ask again in a moment",
        ),
        LlmFailure::TooLong => (
            ErrorCode::AnswerTooLong,
            "the answer grew too long and was cut; ask a narrower question",
        ),
    }
}

fn frame_of(id: &str, event: TurnEvent) -> ServerFrame {
    let id = id.to_string();
    match event {
        TurnEvent::Ack {
            message_id,
            duplicate,
        } => ServerFrame::Ack {
            id,
            message_id,
            duplicate,
        },
        TurnEvent::Sources(sources) => ServerFrame::Sources { id, sources },
        TurnEvent::Delta { seq, text } => ServerFrame::Delta { id, seq, text },
        TurnEvent::Done(summary) => ServerFrame::Done {
            id,
            message_id: summary.message_id,
            status: summary
                .status
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            offline: summary.offline,
            replayed: summary.replayed,
            model: summary.model,
            usage: Usage {
                tokens_in: summary.tokens_in,
                tokens_out: summary.tokens_out,
            },
            timings: Timings {
                retrieval_ms: summary.retrieval_ms,
                first_token_ms: summary.first_token_ms,
                total_ms: summary.total_ms,
            },
            guard: summary.guard.as_ref().map(Into::into),
            retrieval: summary.retrieval,
        },
    }
}
