//! The WebSocket gateway: authenticates the upgrade, then runs a send half (frames out of a
//! channel) and a receive half (client frames in), one answer streaming at a time.
pub mod protocol;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, ErrorChain};
use crate::auth::Role;
use crate::chat::{self, ChatError, Learner, PageRef, Stops, Turn, TurnEvent};
use crate::llm::LlmFailure;
use crate::review::{Feedback, Rating};
use protocol::{
    ClientFrame, ErrorCode, LearnerInfo, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame, Timings,
    Usage, parse_client_frame,
};

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    conversation: Option<String>,
}

/// `GET /ws`: the token comes as `?token=` or as a `bearer.<token>` subprotocol.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
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
        .on_upgrade(move |socket| {
            session(
                socket,
                state,
                Session {
                    learner,
                    conversation_id,
                    course,
                    claims,
                },
            )
        }))
}

struct Session {
    learner: Learner,
    conversation_id: String,
    course: Option<String>,
    claims: crate::auth::Claims,
}

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

async fn session(socket: WebSocket, state: AppState, session: Session) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<ServerFrame>(256);
    let sender = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            let Ok(text) = serde_json::to_string(&frame) else {
                continue;
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let _ = out
        .send(ServerFrame::Ready {
            protocol: PROTOCOL_VERSION,
            conversation_id: session.conversation_id.clone(),
            learner: LearnerInfo {
                id: session.learner.id.clone(),
                name: session.learner.name.clone(),
            },
        })
        .await;
    let mut in_flight: Option<InFlight> = None;
    let mut attachments: Vec<crate::prompt::Attachment> = Vec::new();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = state.shutdown.cancelled() => break,
        };
        let text = match message {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let _ = out
                    .send(ServerFrame::error(
                        None,
                        ErrorCode::BadJson,
                        "binary frames are not accepted; send JSON text",
                    ))
                    .await;
                continue;
            }
            Some(Ok(_)) => continue,
        };
        let frame = match parse_client_frame(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                let _ = out.send(*error).await;
                continue;
            }
        };
        if in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished() || f.done.load(Ordering::Acquire))
        {
            in_flight = None;
        }
        match frame {
            ClientFrame::Ping { nonce } => {
                let _ = out.send(ServerFrame::Pong { nonce }).await;
            }
            ClientFrame::Feedback {
                message_id,
                rating,
                comment,
            } => {
                let frame = save_feedback(&state, &session, message_id, rating, comment).await;
                let _ = out.send(frame).await;
            }
            ClientFrame::RequestMentor { text } => {
                let frame = request_mentor(&state, &session, text).await;
                let _ = out.send(frame).await;
            }
            ClientFrame::Attach {
                id,
                name,
                content,
                project,
            } => {
                let frame = attach(
                    &state,
                    &session,
                    &mut attachments,
                    id,
                    name,
                    content,
                    project,
                )
                .await;
                let _ = out.send(frame).await;
            }
            ClientFrame::Cancel { id } => match &in_flight {
                Some(f) if f.client_id == id => f.cancel.cancel(),
                _ => {
                    let _ = out
                        .send(ServerFrame::error(
                            Some(id.clone()),
                            ErrorCode::UnknownAsk,
                            format!("no answer is streaming for ask {id:?}"),
                        ))
                        .await;
                }
            },
            ClientFrame::Ask {
                id,
                text,
                page,
                course,
            } => {
                if let Err(error) = check_ask(&state, &session, &id, &text, in_flight.is_some()) {
                    let _ = out.send(*error).await;
                    continue;
                }
                if let Err(error) = check_ask_context(&state, &id, page.as_ref(), course.as_deref())
                {
                    let _ = out.send(*error).await;
                    continue;
                }
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
                    attachments: std::mem::take(&mut attachments),
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
                ));
                in_flight = Some(InFlight {
                    client_id: id,
                    cancel,
                    task,
                    done,
                });
            }
        }
    }
    // The learner left: an answer in flight goes on and is stored; only the socket closes.
    drop(out);
    let _ = sender.await;
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

fn check_ask(
    state: &AppState,
    session: &Session,
    id: &str,
    text: &str,
    busy: bool,
) -> Result<(), Box<ServerFrame>> {
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
    if !state.rate.allow(&session.learner.id) {
        return Err(err(
            ErrorCode::RateLimited,
            format!(
                "more than {} questions in a minute; wait a little",
                state.limits.asks_per_minute
            ),
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

/// Runs `chat::answer` and turns its events into frames.
async fn run_turn(
    state: AppState,
    turn: Turn,
    stops: Stops,
    out: mpsc::Sender<ServerFrame>,
    done: Arc<AtomicBool>,
) {
    let client_id = turn.client_id.clone();
    let (events, mut events_rx) = mpsc::channel::<TurnEvent>(64);
    let forward_out = out.clone();
    let forward_id = client_id.clone();
    let forward = tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            // A failed answer says why before its `done`: a stable code and a message of our
            // own. The model's error text may name internal hosts or echo a key: it stays in
            // the log (chat logged it).
            if let TurnEvent::Done(summary) = &event
                && let Some(failure) = summary.failure
            {
                let (code, message) = llm_failure_frame(failure);
                let frame = ServerFrame::error(Some(forward_id.clone()), code, message);
                let _ = forward_out.send(frame).await;
            }
            if matches!(event, TurnEvent::Done(_)) {
                done.store(true, Ordering::Release);
            }
            let _ = forward_out.send(frame_of(&forward_id, event)).await;
        }
    });
    let result = chat::answer(&state.chat, turn, events, stops).await;
    let _ = forward.await;
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
        let _ = out
            .send(ServerFrame::error(Some(client_id), code, message))
            .await;
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
