//! Resuming an answer whose stream a client lost: the deltas after the last one it got, cut
//! from the stored text at the stored delta ends (so any node can serve them, whichever node
//! writes the answer), then the rest as it is checkpointed, then `done`. An answer whose node
//! died is not resumed but answered again ([`Resumed::Orphaned`]).
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ChatDeps, ChatError, TurnEvent, TurnSummary};
use crate::transcript::{MessageStatus, StoredMessage, delta_texts};

/// How often a streaming answer's row is read again for new deltas (it is checkpointed every
/// second).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long a question with no answer row yet is waited for (retrieval runs before it).
const NO_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// How a resumed answer ended.
#[derive(Debug)]
pub enum Resumed {
    /// It ended and `done` was sent: nothing was sent twice, nothing left out.
    Done(Box<TurnSummary>),
    /// Its node stopped before it ended (it is `interrupted`, or was never started): the
    /// question is to be answered again.
    Orphaned,
    /// The client stopped following it (the socket closed or it sent `cancel`).
    Stopped,
}

/// Follows the answer to `question` (the learner's own) from the delta after `after`.
pub async fn resume<F, Fut>(
    deps: &ChatDeps,
    question: &StoredMessage,
    after: Option<u64>,
    stop: &CancellationToken,
    send: &F,
) -> Result<Resumed, ChatError>
where
    F: Fn(TurnEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut next: Option<u64> = after;
    let mut sources_sent = false;
    loop {
        let answer = deps.store.answer_to(&question.id).await?;
        let Some(answer) = answer else {
            if started.elapsed() > NO_ANSWER_WAIT {
                return Ok(Resumed::Orphaned);
            }
            if wait(stop).await {
                return Ok(Resumed::Stopped);
            }
            continue;
        };
        if !sources_sent {
            send(TurnEvent::Sources(answer.sources.clone())).await;
            sources_sent = true;
        }
        for (seq, text) in delta_texts(&answer.text, &answer.delta_ends, next) {
            send(TurnEvent::Delta { seq, text }).await;
            next = Some(seq);
        }
        match answer.status {
            MessageStatus::Streaming => {
                // Its node died (no heartbeat for a while): interrupted now, answered again.
                if deps
                    .store
                    .interrupt_if_stale(&answer.id, deps.owner.stale_before_ms())
                    .await?
                {
                    return Ok(Resumed::Orphaned);
                }
                if wait(stop).await {
                    return Ok(Resumed::Stopped);
                }
            }
            MessageStatus::Interrupted => return Ok(Resumed::Orphaned),
            _ => {
                let summary = super::replayed_summary(answer);
                let summary = Box::new(summary);
                send(TurnEvent::Done(summary.clone())).await;
                return Ok(Resumed::Done(summary));
            }
        }
    }
}

/// Waits before the next read; true when the client stopped following.
async fn wait(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(POLL_EVERY) => false,
        _ = stop.cancelled() => true,
    }
}
