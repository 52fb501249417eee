//! The one path that answers a question: store it, retrieve, assemble the prompt, stream the
//! answer (or the offline reply), checkpoint and persist it. The WebSocket gateway, replays and
//! evaluations all call [`answer`].
pub mod attach;
mod knowledge;
mod offline;
pub mod policy_choice;
pub mod prompt_choice;
mod replay;
pub mod rerun;
pub mod resume;
pub mod stages;
mod stream;

use knowledge::{Knowledge, history, knowledge, retrieve, snippet, source_ref};
use offline::offline_answer;
use replay::{replay, replayed_summary, wait_for_answer};
pub use stream::coaching_notes;
use stream::{Material, StreamCtx, answer_policy, stream_answer};

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::guard::policy::{AnswerMode, Effective, Policies};
use crate::guard::window::{Clock, WindowMode};
use crate::guard::{CoachingNotes, GuardReport, OutputGuard, Rule, TurnRules};
use crate::llm::{ChatRequest, Llm, LlmError, LlmEvent, LlmFailure};
use crate::prompt::{
    Attachment, Brief, Budget, CoachingContext, Context, HistoryTurn, LearnerFacts, LiveTemplates,
    MentorPlan, OfflineFile, OfflinePassage, OfflineReply, PromptRecord, Prompts, Snippet,
    SystemContext, SystemValues, Template,
};
use crate::retrieval::{Passage, Retriever, Scope};
use crate::store::StoreError;
use crate::transcript::{
    AnswerRecord, MessageStatus, NewQuestion, QuestionInsert, RetrievalStatus, SourceRef,
    StoredMessage, TranscriptStore,
};
use stages::{StageClock, Stages};

const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);
const DUPLICATE_WAIT: Duration = Duration::from_secs(120);
/// The final write of an answer is tried this many times, the waits between doubling from
/// [`FINISH_FIRST_WAIT`] (about six seconds in all), before the turn gives up on it.
const FINISH_ATTEMPTS: u32 = 6;
const FINISH_FIRST_WAIT: Duration = Duration::from_millis(200);
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The question could not be stored, so it was not acknowledged (the database is down).
    #[error("the question could not be stored")]
    NotStored(#[source] StoreError),
    #[error(transparent)]
    Prompt(#[from] crate::prompt::PromptError),
    #[error("this conversation belongs to another learner")]
    ForeignConversation,
    #[error("the earlier answer to this question is still being written")]
    DuplicateInFlight,
    /// An assessment window has turned the companion off for this course; the message says
    /// until when, in the learner's language.
    #[error("{0}")]
    Paused(String),
}

/// Everything `answer` needs; cheap to clone.
#[derive(Clone)]
pub struct ChatDeps {
    pub store: Arc<dyn TranscriptStore>,
    pub learners: Arc<dyn crate::learner::LearnerStore>,
    /// Flag detection, run beside each new question; `None` runs none.
    pub flagger: Option<Arc<crate::review::flags::Flagger>>,
    pub retriever: Retriever,
    pub llm: Option<Arc<dyn Llm>>,
    /// The shipped templates.
    pub prompts: Arc<Prompts>,
    /// The courses' own prompt versions and experiments; `None` uses the shipped ones only.
    pub studio: Option<Arc<prompt_choice::LivePrompts>>,
    /// Learners' project files (private snippets) and the course's project briefs.
    pub projects: Arc<crate::project::Projects>,
    pub budget: Budget,
    pub top_k: usize,
    /// A search that takes longer is abandoned: the answer goes on without passages.
    pub retrieval_timeout: Duration,
    pub temperature: f32,
    /// Course and project policies the output guard enforces.
    pub policies: Arc<Policies>,
    /// The policies course teams wrote through the API, put in force in `policies` before each
    /// turn; `None`: the files alone.
    pub policy_overrides: Option<Arc<policy_choice::LivePolicies>>,
    /// The time assessment windows are read against.
    pub clock: Clock,
    /// Who owns the answers this process streams, and when an answer counts as orphaned.
    pub owner: AnswerOwner,
    /// Newest messages of the conversation read for a turn's history.
    pub history_messages: usize,
}

impl ChatDeps {
    /// The policy a turn on `course` (and `project`) is held to, the overrides written on any
    /// node included.
    pub async fn policy(&self, course: &str, project: Option<&str>) -> Effective {
        self.refresh_policies().await;
        self.policy_read(course, project)
    }

    /// Reads the policy overrides again if another node changed them.
    pub async fn refresh_policies(&self) {
        if let Some(live) = &self.policy_overrides {
            live.refresh().await;
        }
    }

    /// The policy in force as last read.
    fn policy_read(&self, course: &str, project: Option<&str>) -> Effective {
        self.policies.course(course).effective(project)
    }

    /// Where the live versions of the templates are read: the courses' own through the studio,
    /// else the shipped ones. The digest reads its template through it.
    pub fn live_templates(&self) -> Arc<dyn LiveTemplates> {
        match &self.studio {
            Some(live) => live.clone(),
            None => self.prompts.clone(),
        }
    }
}

/// This node's name on the answers it streams, and how it keeps them from looking orphaned.
#[derive(Debug, Clone)]
pub struct AnswerOwner {
    pub node_id: Arc<str>,
    /// A `streaming` answer whose heartbeat is older than this is orphaned.
    pub stale_after: Duration,
    /// How often a streaming answer's heartbeat is written while the model says nothing.
    pub heartbeat_every: Duration,
}

impl AnswerOwner {
    /// A fresh random node id, for a process given none.
    pub fn random_node_id() -> String {
        format!("node-{}", uuid::Uuid::new_v4().simple())
    }

    /// Heartbeats older than this (in ms since the epoch) are stale.
    pub fn stale_before_ms(&self) -> i64 {
        crate::transcript::now_ms() - self.stale_after.as_millis() as i64
    }
}

#[derive(Debug, Clone)]
pub struct Learner {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct PageRef {
    pub url: Option<String>,
    pub title: Option<String>,
}

/// One question as it arrives.
#[derive(Debug, Clone)]
pub struct Turn {
    pub learner: Learner,
    pub conversation_id: String,
    pub client_id: String,
    pub text: String,
    pub page: PageRef,
    pub course: Option<String>,
    /// Files and snippets the learner attached in the chat for this question.
    pub attachments: Vec<Attachment>,
    /// A question already stored whose answer was `interrupted` (its node stopped) is answered
    /// again rather than replayed as interrupted: a `resume` of an orphaned answer.
    pub answer_interrupted_again: bool,
}

/// What happens during a turn, in order: `Ack`, `Sources`, `Delta`*, `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    Ack { message_id: String, duplicate: bool },
    Sources(Vec<SourceRef>),
    Delta { seq: u64, text: String },
    Done(Box<TurnSummary>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnSummary {
    pub message_id: String,
    pub status: Option<MessageStatus>,
    pub offline: bool,
    pub replayed: bool,
    pub model: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub retrieval_ms: i64,
    pub first_token_ms: Option<i64>,
    pub total_ms: i64,
    /// Why the answer failed, when it did (for the log: it may name internal hosts).
    pub error: Option<String>,
    /// What the output guard did, when it changed the answer or found it uncited.
    pub guard: Option<GuardReport>,
    /// The stable kind of that failure, which is all a learner is told.
    pub failure: Option<LlmFailure>,
    /// Whether the course could be searched for this answer.
    pub retrieval: RetrievalStatus,
    /// How long each stage took (none for a replay).
    pub stages: Stages,
}

/// Signals that end an answer early.
#[derive(Clone, Default)]
pub struct Stops {
    /// The learner pressed stop: the answer is kept as `cancelled`.
    pub cancel: CancellationToken,
    /// The server is going down: the answer is kept as `interrupted`.
    pub shutdown: CancellationToken,
}

/// A future's output and how long it took.
async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
}

/// Answers one question, sending events as they happen.
pub async fn answer(
    deps: &ChatDeps,
    turn: Turn,
    events: mpsc::Sender<TurnEvent>,
    stops: Stops,
) -> Result<TurnSummary, ChatError> {
    let started = Instant::now();
    let mut clock = StageClock::start();
    let send = |event: TurnEvent| {
        let events = events.clone();
        async move {
            // A closed receiver means the learner left; the answer is still stored.
            let _ = events.send(event).await;
        }
    };
    // The learner's context and whether the policies changed: independent reads, made at once.
    let (knowledge, ()) = tokio::join!(knowledge(deps, &turn), deps.refresh_policies());
    let mut policy = deps.policy_read(
        knowledge.course.as_deref().unwrap_or_default(),
        knowledge.project.as_deref(),
    );
    let window = policy
        .windows
        .iter()
        .find(|w| w.contains(deps.clock.now()))
        .cloned();
    if let Some(window) = &window
        && window.mode == WindowMode::Off
    {
        return Err(ChatError::Paused(window.message(&knowledge.locale)));
    }
    let question_id = uuid::Uuid::now_v7().to_string();
    // The learner's context read above counts in the time to the first token, not in a stage.
    clock.lap();
    let inserted = deps
        .store
        .insert_question(&NewQuestion {
            id: question_id.clone(),
            conversation_id: turn.conversation_id.clone(),
            learner_id: turn.learner.id.clone(),
            // The course the turn is answered for: the ask's, else the learner's profile's.
            course_id: knowledge.course.clone(),
            client_id: turn.client_id.clone(),
            text: turn.text.clone(),
            page_url: turn.page.url.clone(),
        })
        .await
        .map_err(ChatError::NotStored)?;
    clock.stages.store_question = Some(clock.lap());
    let newly_inserted = matches!(inserted, QuestionInsert::Inserted);
    let (question_id, conversation_id) = match inserted {
        // Decided by the store in the question's own transaction: nothing was stored.
        QuestionInsert::ForeignConversation => return Err(ChatError::ForeignConversation),
        QuestionInsert::Inserted => (question_id, turn.conversation_id.clone()),
        QuestionInsert::Duplicate {
            message_id,
            conversation_id,
        } => {
            send(TurnEvent::Ack {
                message_id: message_id.clone(),
                duplicate: true,
            })
            .await;
            match wait_for_answer(deps, &message_id).await? {
                Some(stored)
                    if turn.answer_interrupted_again
                        && stored.status == MessageStatus::Interrupted =>
                {
                    (message_id, conversation_id)
                }
                Some(stored) => return Ok(replay(stored, &send).await),
                // The question was stored but never answered (a crash in between): answer now.
                None => (message_id, conversation_id),
            }
        }
    };
    if newly_inserted {
        send(TurnEvent::Ack {
            message_id: question_id.clone(),
            duplicate: false,
        })
        .await;
        // Beside the answer, never in its way: the rules log their own failures.
        if let Some(flagger) = &deps.flagger {
            let flagger = flagger.clone();
            let question = crate::review::flags::QuestionRef {
                learner_id: turn.learner.id.clone(),
                conversation_id: conversation_id.clone(),
                message_id: question_id.clone(),
                text: turn.text.clone(),
            };
            tokio::spawn(async move { flagger.on_question(&question).await });
        }
    }

    // The search, the versions to use, the answer's row and the history are independent of one
    // another: made at once, the turn waits for the slowest of them rather than for their sum.
    let search = timed(retrieve(deps, &turn, &knowledge));
    let answer_id = uuid::Uuid::now_v7().to_string();
    let choose = async {
        match &deps.studio {
            Some(live) => {
                live.choose(knowledge.course.as_deref(), &turn.learner.id)
                    .await
            }
            None => prompt_choice::Chosen {
                prompts: deps.prompts.as_ref().clone(),
                experiment: None,
            },
        }
    };
    let start = deps.store.start_answer(
        &answer_id,
        &question_id,
        &conversation_id,
        &turn.learner.id,
        &deps.owner.node_id,
    );
    // Only a model reads the conversation so far.
    let read_history = async {
        match &deps.llm {
            Some(_) => history(deps, &conversation_id, &question_id)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let prepare = timed(async { tokio::join!(choose, start, read_history) });
    let (
        ((passages, mut snippets, retrieval), searched),
        ((chosen, started_row, history), prepared),
    ) = tokio::join!(search, prepare);
    clock.lap();
    clock.stages.retrieve = Some(searched);
    clock.stages.prepare = Some(prepared);
    started_row?;
    let history = history?;
    let retrieval_ms = searched.as_millis() as i64;
    let mut knowledge = knowledge;
    let notice = window.map(|w| {
        // Concepts only: the project stays out of the prompt, and code stays short.
        knowledge.brief = None;
        snippets.clear();
        policy.answer = AnswerMode::Hints;
        policy.max_code_lines = Some(policy.max_code_lines.unwrap_or(4).min(4));
        format!("> {}\n\n", w.message(&knowledge.locale))
    });
    // The exact version the answer is written from: the system prompt's, or without a model
    // the offline reply's.
    let prompt_version = match &deps.llm {
        Some(_) => chosen.prompts.system_version(),
        None => chosen.prompts.offline_version(),
    };
    let mut record = AnswerRecord {
        sources: passages.iter().map(source_ref).collect(),
        prompt_version: Some(prompt_version.to_string()),
        prompt_experiment: chosen.experiment.clone(),
        retrieval_ms: Some(retrieval_ms),
        retrieval: Some(retrieval),
        ..Default::default()
    };
    let status = match &deps.llm {
        None => {
            let material = Material {
                prompts: &chosen.prompts,
                knowledge: &knowledge,
                passages: &passages,
                snippets: &snippets,
                policy: &policy,
                notice: notice.as_deref(),
            };
            offline_answer(material, &mut record, &send).await?
        }
        Some(llm) => {
            stream_answer(
                deps,
                llm.as_ref(),
                &turn,
                history.as_deref().unwrap_or_default(),
                Material {
                    prompts: &chosen.prompts,
                    knowledge: &knowledge,
                    passages: &passages,
                    snippets: &snippets,
                    policy: &policy,
                    notice: notice.as_deref(),
                },
                StreamCtx {
                    answer_id: &answer_id,
                    started,
                    stops: &stops,
                    record: &mut record,
                    clock: &mut clock,
                },
                &send,
            )
            .await?
        }
    };
    record.total_ms = Some(started.elapsed().as_millis() as i64);
    let guard = status.2;
    record.guard = guard.as_ref().and_then(|g| serde_json::to_value(g).ok());
    record.failure = status.1.as_ref().map(|e| e.kind().as_str().to_string());
    // If this fails for good, the turn ends with an error (no `done`); the row, still
    // `streaming` with no more heartbeats, goes stale and whichever node sweeps first marks it
    // interrupted, its last checkpoint kept.
    clock.lap();
    finish_answer(deps, &answer_id, status.0, &record).await?;
    clock.stages.store_answer = Some(clock.lap());
    if let (Some(flagger), Some(report)) = (&deps.flagger, &guard)
        && !report.withheld.is_empty()
    {
        let reasons: Vec<String> = report
            .withheld
            .iter()
            .map(|w| format!("{}: {}", w.rule.as_str(), w.reason))
            .collect();
        flagger
            .on_withheld(&turn.learner.id, &conversation_id, &answer_id, &reasons)
            .await;
    }
    let summary = TurnSummary {
        message_id: answer_id,
        status: Some(status.0),
        offline: record.offline,
        replayed: false,
        model: record.model.clone().unwrap_or_default(),
        tokens_in: record.tokens_in.unwrap_or(0),
        tokens_out: record.tokens_out.unwrap_or(0),
        retrieval_ms,
        first_token_ms: record.first_token_ms,
        total_ms: record.total_ms.unwrap_or(0),
        error: status.1.as_ref().map(|e| e.to_string()),
        failure: status.1.as_ref().map(LlmError::kind),
        retrieval,
        guard,
        stages: clock.stages,
    };
    send(TurnEvent::Done(Box::new(summary.clone()))).await;
    Ok(summary)
}

/// A status, for a failure its reason, and what the output guard did when it mattered.
type Ending = (MessageStatus, Option<LlmError>, Option<GuardReport>);

/// The answer's final write, tried again with growing waits: a database failing over for a
/// few seconds does not lose an answer that was fully written.
async fn finish_answer(
    deps: &ChatDeps,
    answer_id: &str,
    status: MessageStatus,
    record: &AnswerRecord,
) -> Result<(), StoreError> {
    let mut wait = FINISH_FIRST_WAIT;
    let mut attempt = 1;
    loop {
        match deps.store.finish_answer(answer_id, status, record).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < FINISH_ATTEMPTS => {
                tracing::warn!(
                    error = ?error,
                    answer_id,
                    attempt,
                    "storing the answer failed; trying again"
                );
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(error) => {
                tracing::error!(
                    error = ?error,
                    answer_id,
                    attempts = attempt,
                    "storing the answer failed for good; it will be marked interrupted once stale"
                );
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests;
