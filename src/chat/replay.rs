//! An ask that was already answered (a resent client id): the stored answer replayed, or the
//! one still being written waited for.
use super::*;

/// How long a resent question waits for an answer still streaming elsewhere.
/// The stored answer to a question; if it is still streaming, waits for it to end.
pub(super) async fn wait_for_answer(
    deps: &ChatDeps,
    question_id: &str,
) -> Result<Option<StoredMessage>, ChatError> {
    let deadline = Instant::now() + DUPLICATE_WAIT;
    loop {
        match deps.store.answer_to(question_id).await? {
            Some(stored) if stored.status == MessageStatus::Streaming => {
                // Its node died (no heartbeat for a while): no use waiting, it is interrupted
                // now and replayed as such.
                if deps
                    .store
                    .interrupt_if_stale(&stored.id, deps.owner.stale_before_ms())
                    .await?
                {
                    continue;
                }
                if Instant::now() >= deadline {
                    return Err(ChatError::DuplicateInFlight);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return Ok(other),
        }
    }
}

pub(super) async fn replay<F, Fut>(stored: StoredMessage, send: &F) -> TurnSummary
where
    F: Fn(TurnEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    send(TurnEvent::Sources(stored.sources.clone())).await;
    if !stored.text.is_empty() {
        send(TurnEvent::Delta {
            seq: 0,
            text: stored.text.clone(),
        })
        .await;
    }
    let summary = replayed_summary(stored);
    send(TurnEvent::Done(Box::new(summary.clone()))).await;
    summary
}

/// The summary `done` carries for an answer read back from the store.
pub(super) fn replayed_summary(stored: StoredMessage) -> TurnSummary {
    TurnSummary {
        message_id: stored.id,
        status: Some(stored.status),
        offline: stored.offline,
        replayed: true,
        model: stored.model.unwrap_or_default(),
        tokens_in: stored.tokens_in.unwrap_or(0),
        tokens_out: stored.tokens_out.unwrap_or(0),
        retrieval_ms: stored.retrieval_ms.unwrap_or(0),
        first_token_ms: stored.first_token_ms,
        total_ms: stored.total_ms.unwrap_or(0),
        error: None,
        guard: stored.guard.and_then(|g| serde_json::from_value(g).ok()),
        failure: None,
        retrieval: stored.retrieval.unwrap_or(RetrievalStatus::Ok),
        stages: Stages::default(),
    }
}
