//! The `resume` frame: a client whose socket dropped mid-answer gets the deltas after the last
//! one it saw, then the rest of the answer as it is written, on whichever node it reconnects to
//! ([`chat::resume`] reads them from the database). An answer orphaned by its node (stopped or
//! killed) is answered again for the same question, through `chat::answer` like any turn: the
//! client sees `ack` (`duplicate: true`), then the new answer from `seq` 0, which replaces the
//! partial text, then `done`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::{ErrorCode, ServerFrame};
use super::{Admitted, Outbox, Session, frame_of, quota_unavailable, run_turn};
use crate::chat::resume::{Resumed, resume};
use crate::chat::{PageRef, Stops, Turn, TurnEvent};
use crate::http::{AppState, ErrorChain};
use crate::transcript::StoredMessage;

/// The learner's question `message_id` in this connection's conversation, or the `error` frame
/// to send (a question of anyone else's looks missing).
pub(super) async fn own_question(
    state: &AppState,
    session: &Session,
    id: &str,
    conversation: &str,
    message_id: &str,
) -> Result<StoredMessage, Box<ServerFrame>> {
    let missing = || {
        Box::new(ServerFrame::error(
            Some(id.to_string()),
            ErrorCode::UnknownMessage,
            format!("no question {message_id:?} to resume in this conversation"),
        ))
    };
    if conversation != session.conversation_id {
        return Err(missing());
    }
    match state.review.message(message_id).await {
        Ok(Some(q))
            if q.role == "learner"
                && q.client_id.as_deref() == Some(id)
                && q.learner_id == session.learner.id
                && q.conversation_id == session.conversation_id =>
        {
            Ok(q)
        }
        Ok(_) => Err(missing()),
        Err(error) => Err(Box::new(quota_unavailable(Some(id.to_string()), &error))),
    }
}

/// A `resume` accepted: the ask's client id, its stored question, the last `seq` the client
/// has, and what answering the question again needs of the session.
pub(super) struct Resuming {
    pub id: String,
    pub question: StoredMessage,
    pub last_seq: Option<u64>,
    pub learner: crate::chat::Learner,
    pub course: Option<String>,
}

/// Follows the answer to the question, or answers it again if it was orphaned.
pub(super) async fn run_resume(
    state: AppState,
    resuming: Resuming,
    cancel: CancellationToken,
    out: Outbox,
    done: Arc<AtomicBool>,
) {
    let Resuming {
        id,
        question,
        last_seq,
        learner,
        course,
    } = resuming;
    let (events, mut events_rx) = mpsc::channel::<TurnEvent>(64);
    let forward_out = out.clone();
    let forward_id = id.clone();
    let forward_done = done.clone();
    let forward = tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            if matches!(event, TurnEvent::Done(_)) {
                forward_done.store(true, Ordering::Release);
            }
            forward_out.push(frame_of(&forward_id, event));
        }
    });
    let send = |event: TurnEvent| {
        let events = events.clone();
        async move {
            let _ = events.send(event).await;
        }
    };
    let resumed = resume(&state.chat, &question, last_seq, &cancel, &send).await;
    drop(events);
    let _ = forward.await;
    match resumed {
        Ok(Resumed::Done(_) | Resumed::Stopped) => {}
        Ok(Resumed::Orphaned) => {
            tracing::info!(question = %question.id, "resumed answer was orphaned by its node: answering again");
            let turn = Turn {
                learner,
                conversation_id: question.conversation_id.clone(),
                client_id: id,
                text: question.text.clone(),
                page: PageRef {
                    url: question.page_url.clone(),
                    title: None,
                },
                course,
                attachments: Vec::new(),
                answer_interrupted_again: true,
            };
            let stops = Stops {
                cancel,
                shutdown: state.turn_shutdown.clone(),
            };
            // No stream slot: the answer being resumed held it; nothing was admitted anew.
            let admitted = Admitted {
                slot: None,
                admission: std::time::Duration::ZERO,
            };
            run_turn(state, turn, stops, out, done, admitted).await;
        }
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "resume failed");
            out.push(ServerFrame::error(
                Some(id.clone()),
                ErrorCode::Internal,
                "the answer could not be resumed; ask again",
            ));
        }
    }
}
