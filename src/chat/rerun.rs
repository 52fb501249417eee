//! Replays, run: each chosen turn answered again with a candidate system prompt from the
//! prompt kept with its answer (`prompt::PromptRecord`): the candidate rendered with the same
//! values, put over the same blocks (the passages and learner context the original turn had,
//! never a fresh retrieval), streamed through the same output guard, and stored beside the
//! original (`store::replays`), never as a message. A replay runs in the background; it stops
//! between turns when its row is no longer `running` (cancelled on any node), and at once when
//! this node's token for it is cancelled.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::guard::policy::Policies;
use crate::guard::{OutputGuard, TurnRules};
use crate::llm::{ChatRequest, Llm, LlmEvent};
use crate::prompt::replay::ReplayStatus;
use crate::prompt::{Budget, PromptRecord, Template, reassemble};
use crate::store::Store;

/// What a replay runs with.
#[derive(Clone)]
pub struct Rerun {
    pub store: Arc<Store>,
    /// The configured model, or without one the deterministic fake of `eval prompts`.
    pub llm: Arc<dyn Llm>,
    pub candidate: Arc<Template>,
    /// The coaching note's version live for the course, for the blocks the guard withholds.
    pub coaching: Arc<Template>,
    pub budget: Budget,
    pub temperature: f32,
    pub policies: Arc<Policies>,
}

/// The replays running on this node, by id, so that a cancel stops the one in flight at once.
#[derive(Default)]
pub struct Running {
    tokens: Mutex<HashMap<String, CancellationToken>>,
}

impl Running {
    fn start(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id.to_string(), token.clone());
        token
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Cancels replay `id` if it runs on this node.
    pub fn cancel(&self, id: &str) {
        if let Some(token) = self.lock().get(id) {
            token.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The candidate's answer to one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct RerunAnswer {
    /// What the learner would have seen (after the output guard).
    pub text: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    #[error(transparent)]
    Prompt(#[from] crate::prompt::PromptError),
    #[error("the model failed: {0}")]
    Llm(#[from] crate::llm::LlmError),
    #[error("cannot read the stored prompt")]
    Store(#[from] crate::store::StoreError),
    /// Erased or purged since the replay started: nothing to answer.
    #[error("the original answer and its prompt are gone")]
    Gone,
    #[error("cancelled")]
    Cancelled,
}

/// Runs replay `id` (already stored with its turns) to its end, in the background.
pub fn spawn(rerun: Rerun, running: Arc<Running>, id: String, total_turns: i64) {
    let cancel = running.start(&id);
    tokio::spawn(async move {
        run(&rerun, &id, total_turns, &cancel).await;
        running.end(&id);
    });
}

#[tracing::instrument(skip(rerun, cancel))]
async fn run(rerun: &Rerun, id: &str, total_turns: i64, cancel: &CancellationToken) {
    for n in 0..total_turns {
        match rerun.store.replay(id).await {
            Ok(Some(replay)) if replay.status == ReplayStatus::Running => {}
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(?error, "cannot read the replay; trying the next turn");
            }
        }
        if cancel.is_cancelled() {
            return;
        }
        let outcome = turn(rerun, id, n, cancel).await;
        let stored = match &outcome {
            Ok(answer) => {
                rerun
                    .store
                    .finish_replay_turn(
                        id,
                        n,
                        "done",
                        Some(&answer.text),
                        Some((answer.tokens_in, answer.tokens_out)),
                        None,
                    )
                    .await
            }
            Err(RerunError::Cancelled) => return,
            Err(error) => {
                tracing::warn!(?error, n, "a replayed turn failed");
                // The provider's own text may name internal hosts: only its stable kind.
                let reason = match error {
                    RerunError::Llm(e) => format!("the model failed: {}", e.kind().as_str()),
                    other => other.to_string(),
                };
                rerun
                    .store
                    .finish_replay_turn(id, n, "failed", None, None, Some(&reason))
                    .await
            }
        };
        if let Err(error) = stored {
            tracing::warn!(?error, n, "cannot store a replayed turn");
        }
    }
    if let Err(error) = rerun.store.end_replay(id, ReplayStatus::Done, None).await {
        tracing::warn!(?error, "cannot mark the replay done");
    }
}

async fn turn(
    rerun: &Rerun,
    id: &str,
    n: i64,
    cancel: &CancellationToken,
) -> Result<RerunAnswer, RerunError> {
    let message = rerun
        .store
        .replay_turn_message(id, n)
        .await?
        .ok_or(RerunError::Gone)?;
    let stored = rerun
        .store
        .answer_prompt(&message)
        .await?
        .ok_or(RerunError::Gone)?;
    let record = stored.record;
    answer_again(rerun, &record, cancel).await
}

/// `record`'s turn answered with the candidate: the same values, the same blocks.
pub async fn answer_again(
    rerun: &Rerun,
    record: &PromptRecord,
    cancel: &CancellationToken,
) -> Result<RerunAnswer, RerunError> {
    let system = rerun.candidate.render_system(&record.system.context())?;
    let prompt = reassemble(rerun.budget, &system, &record.blocks);
    let policy = rerun
        .policies
        .course(record.course_id.as_deref().unwrap_or_default())
        .effective(record.project.as_deref());
    let mut guard = OutputGuard::new(TurnRules {
        references: policy.references.clone(),
        max_code_lines: policy.max_code_lines,
        forbidden: policy.forbidden.clone(),
        n_passages: prompt.passages_used,
        locale: record.system.locale.clone(),
        shown_before: record
            .blocks
            .history
            .iter()
            .flat_map(|turn| crate::guard::code_blocks(&turn.answer))
            .collect(),
        course_code: policy.course_code.clone(),
        pass_unfenced: policy.unfenced_code == crate::guard::policy::UnfencedCode::Pass,
        learner_text: std::iter::once(record.blocks.question.clone())
            .chain(record.blocks.attachments.iter().cloned())
            .chain(record.blocks.snippets.iter().cloned())
            .collect(),
    })
    .with_coaching(super::coaching_notes(
        &rerun.coaching,
        &record.system.locale,
        policy.max_code_lines,
    ));
    let request = ChatRequest {
        messages: prompt.messages,
        max_tokens: rerun.budget.reserved_answer,
        temperature: rerun.temperature,
    };
    let mut stream = tokio::select! {
        stream = rerun.llm.stream(request) => stream?,
        _ = cancel.cancelled() => return Err(RerunError::Cancelled),
    };
    let mut text = String::new();
    let mut usage = None;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = cancel.cancelled() => return Err(RerunError::Cancelled),
        };
        match next {
            None => break,
            Some(Ok(LlmEvent::Delta(delta))) => text.push_str(&guard.push(&delta)),
            Some(Ok(LlmEvent::Usage {
                tokens_in,
                tokens_out,
            })) => usage = Some((i64::from(tokens_in), i64::from(tokens_out))),
            Some(Err(error)) => return Err(error.into()),
        }
    }
    text.push_str(&guard.finish());
    let (tokens_in, tokens_out) = usage.unwrap_or((
        prompt.tokens as i64,
        crate::retrieval::chunk::count_tokens(&text) as i64,
    ));
    Ok(RerunAnswer {
        text,
        tokens_in,
        tokens_out,
    })
}

/// The prompt a model would receive if `learner` asked `question` now with the `prompts` given:
/// the learner's context and the course's search as a turn reads them (nothing is stored).
/// What the studio's preview shows a course team before a version goes live.
pub async fn preview(
    deps: &super::ChatDeps,
    prompts: &crate::prompt::Prompts,
    learner: super::Learner,
    course: &str,
    question: &str,
) -> Result<PromptRecord, RerunError> {
    let turn = super::Turn {
        learner,
        conversation_id: String::new(),
        client_id: String::new(),
        text: question.to_string(),
        page: super::PageRef::default(),
        course: Some(course.to_string()),
        attachments: Vec::new(),
        answer_interrupted_again: false,
    };
    let knowledge = super::knowledge(deps, &turn).await;
    let policy = deps.policy(course, knowledge.project.as_deref()).await;
    let (passages, snippets, retrieval) = super::retrieve(deps, &turn, &knowledge).await;
    let words = super::answer_policy(&policy, false);
    let context = crate::prompt::SystemContext {
        learner_name: &turn.learner.name,
        course,
        page_title: None,
        locale: &knowledge.locale,
        answer_policy: Some(&words),
    };
    let system = prompts.render_system(&context)?;
    let prompt = crate::prompt::assemble(
        deps.budget,
        &crate::prompt::Context {
            system: &system,
            profile: knowledge.facts.as_ref(),
            mentor: knowledge.plan.as_ref(),
            brief: knowledge.brief.as_ref(),
            attachments: &[],
            snippets: &snippets,
            passages: &passages,
            history: &[],
            question,
            retrieval_unavailable: retrieval == crate::transcript::RetrievalStatus::Unavailable,
        },
    );
    let mut record = PromptRecord::new(
        &deps.budget,
        &prompt,
        Some(course.to_string()),
        crate::prompt::SystemValues::from(&context),
    );
    record.project = knowledge.project.clone();
    Ok(record)
}
