//! The one path that answers a question: store it, retrieve, assemble the prompt, stream the
//! answer (or the offline reply), checkpoint and persist it. The WebSocket gateway, replays and
//! evaluations all call [`answer`].
pub mod attach;
pub mod prompt_choice;
pub mod rerun;
pub mod resume;
pub mod stages;

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

/// How often a streaming answer is saved: at most this much text is at risk in a crash.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);
/// How long a resent question waits for an answer still streaming elsewhere.
const DUPLICATE_WAIT: Duration = Duration::from_secs(120);
/// The final write of an answer is tried this many times, the waits between doubling from
/// [`FINISH_FIRST_WAIT`] (about six seconds in all), before the turn gives up on it.
const FINISH_ATTEMPTS: u32 = 6;
const FINISH_FIRST_WAIT: Duration = Duration::from_millis(200);
const HISTORY_TURNS: usize = 12;
const SNIPPET_CHARS: usize = 240;

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
    /// The time assessment windows are read against.
    pub clock: Clock,
    /// Who owns the answers this process streams, and when an answer counts as orphaned.
    pub owner: AnswerOwner,
    /// Newest messages of the conversation read for a turn's history.
    pub history_messages: usize,
}

impl ChatDeps {
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
    let knowledge = knowledge(deps, &turn).await;
    let mut policy = deps
        .policies
        .course(knowledge.course.as_deref().unwrap_or_default())
        .effective(knowledge.project.as_deref());
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

    let retrieval_started = Instant::now();
    let (passages, mut snippets, retrieval) = retrieve(deps, &turn, &knowledge).await;
    let mut knowledge = knowledge;
    let notice = window.map(|w| {
        // Concepts only: the project stays out of the prompt, and code stays short.
        knowledge.brief = None;
        snippets.clear();
        policy.answer = AnswerMode::Hints;
        policy.max_code_lines = Some(policy.max_code_lines.unwrap_or(4).min(4));
        format!("> {}\n\n", w.message(&knowledge.locale))
    });
    let retrieval_ms = retrieval_started.elapsed().as_millis() as i64;
    clock.stages.retrieve = Some(clock.lap());

    let chosen = match &deps.studio {
        Some(live) => {
            live.choose(knowledge.course.as_deref(), &turn.learner.id)
                .await
        }
        None => prompt_choice::Chosen {
            prompts: deps.prompts.as_ref().clone(),
            experiment: None,
        },
    };
    // The exact version the answer is written from: the system prompt's, or without a model
    // the offline reply's.
    let prompt_version = match &deps.llm {
        Some(_) => chosen.prompts.system_version(),
        None => chosen.prompts.offline_version(),
    };
    let answer_id = uuid::Uuid::now_v7().to_string();
    deps.store
        .start_answer(
            &answer_id,
            &question_id,
            &conversation_id,
            &turn.learner.id,
            &deps.owner.node_id,
        )
        .await?;
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
            let history = history(deps, &conversation_id, &question_id).await?;
            stream_answer(
                deps,
                llm.as_ref(),
                &turn,
                &history,
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

/// The honest reply when no model is configured: the course passages retrieval found, the
/// learner's own files that match the question, and what the mentor asked at the last session.
async fn offline_answer<F, Fut>(
    material: Material<'_>,
    record: &mut AnswerRecord,
    send: &F,
) -> Result<Ending, ChatError>
where
    F: Fn(TurnEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let passages: Vec<OfflinePassage> = material
        .passages
        .iter()
        .map(|p| OfflinePassage {
            n: p.n,
            section: p.chunk.section_label(),
            url: p.chunk.url.clone(),
            snippet: snippet(&p.chunk.text).replace('\n', " "),
        })
        .collect();
    let mut files: Vec<OfflineFile> = Vec::new();
    for s in material.snippets {
        let file = OfflineFile {
            path: s.path.clone(),
            lines: s.lines.map(|(from, to)| format!("{from}–{to}")),
        };
        if !files.contains(&file) {
            files.push(file);
        }
    }
    let goals = material
        .knowledge
        .plan
        .as_ref()
        .map(|plan| plan.goals.clone())
        .unwrap_or_default();
    let reply = material.prompts.render_offline(&OfflineReply {
        passages,
        files,
        goals,
    })?;
    let text = format!("{}{reply}", material.notice.unwrap_or_default());
    send(TurnEvent::Sources(record.sources.clone())).await;
    // Sent paragraph by paragraph so clients exercise the same streaming path.
    let mut end = 0;
    for (seq, part) in text.split_inclusive("\n\n").enumerate() {
        end += part.len();
        record.delta_ends.push(end);
        send(TurnEvent::Delta {
            seq: seq as u64,
            text: part.to_string(),
        })
        .await;
    }
    record.tokens_out = Some(crate::retrieval::chunk::count_tokens(&text) as i64);
    record.tokens_in = Some(0);
    record.text = text;
    record.offline = true;
    record.model = Some("offline".to_string());
    record.first_token_ms = record.retrieval_ms;
    Ok((MessageStatus::Complete, None, None))
}

/// What the companion knows about the learner for one turn; each part is optional, and a
/// failure to read one is logged and answered without it.
#[derive(Debug, Default)]
struct Knowledge {
    /// The course the turn is about: the page's, the token's, else the profile's.
    course: Option<String>,
    locale: String,
    facts: Option<LearnerFacts>,
    plan: Option<MentorPlan>,
    brief: Option<Brief>,
    /// The learner's current project, whose policy applies.
    project: Option<String>,
}

async fn knowledge(deps: &ChatDeps, turn: &Turn) -> Knowledge {
    let learner = &turn.learner.id;
    let profile = deps
        .learners
        .learner(learner)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the learner profile; answering without it");
            None
        });
    let plan = match deps.learners.mentor_sessions(learner).await {
        Ok(sessions) => sessions.into_iter().next().map(|s| MentorPlan {
            held_on: s.held_on,
            goals: s.goals,
            notes: s.notes,
        }),
        Err(error) => {
            tracing::warn!(%error, "cannot read mentor sessions; answering without them");
            None
        }
    };
    let course = turn
        .course
        .clone()
        .or_else(|| profile.as_ref().and_then(|p| p.course.clone()));
    let Some(profile) = profile else {
        return Knowledge {
            course,
            locale: "en".into(),
            plan,
            ..Default::default()
        };
    };
    let brief = match (&course, &profile.project) {
        (Some(course), Some(project)) => deps.projects.brief(course, project).map(|b| Brief {
            project: b.project,
            title: b.title,
            sections: b
                .sections
                .into_iter()
                .map(|s| (s.heading, s.text))
                .collect(),
        }),
        _ => None,
    };
    let mut lines = vec![
        (
            "name".to_string(),
            profile
                .name
                .clone()
                .unwrap_or_else(|| turn.learner.name.clone()),
        ),
        ("language".to_string(), profile.locale.clone()),
    ];
    let optional = [
        ("program", profile.program.clone()),
        ("current course", profile.course.clone()),
        ("current chapter", profile.chapter.clone()),
        ("current project", profile.project.clone()),
    ];
    lines.extend(
        optional
            .into_iter()
            .filter_map(|(label, value)| Some((label.to_string(), value?))),
    );
    if !profile.chapters_completed.is_empty() {
        lines.push((
            "chapters completed".to_string(),
            profile.chapters_completed.join(", "),
        ));
    }
    Knowledge {
        course,
        locale: profile.locale.clone(),
        facts: Some(LearnerFacts { lines }),
        plan,
        brief,
        project: profile.project.clone(),
    }
}

/// One fused search over the course material and the learner's own files: course passages
/// (renumbered for citation) and the learner's snippets, each within its own count. An index
/// that fails or is too slow leaves both empty, and says so: the answer goes on without them.
async fn retrieve(
    deps: &ChatDeps,
    turn: &Turn,
    knowledge: &Knowledge,
) -> (Vec<Passage>, Vec<Snippet>, RetrievalStatus) {
    let learner = turn.learner.id.as_str();
    let scope = Scope {
        course: knowledge.course.clone(),
        learner: Some(learner.to_string()),
    };
    let project_k = deps.projects.settings().top_k;
    let search = deps
        .retriever
        .search(&turn.text, &scope, deps.top_k + project_k);
    let found = match tokio::time::timeout(deps.retrieval_timeout, search).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::warn!(%error, "retrieval failed; answering without passages");
            return (Vec::new(), Vec::new(), RetrievalStatus::Unavailable);
        }
        Err(_) => {
            let timeout_ms = deps.retrieval_timeout.as_millis() as u64;
            tracing::warn!(
                timeout_ms,
                "retrieval timed out; answering without passages"
            );
            return (Vec::new(), Vec::new(), RetrievalStatus::Unavailable);
        }
    };
    let mut passages = Vec::new();
    let mut snippets = Vec::new();
    for passage in found {
        let owner = passage.learner.clone();
        match owner.as_deref() {
            None if passages.len() < deps.top_k => passages.push(Passage {
                n: passages.len() + 1,
                ..passage
            }),
            Some(owner) if owner == learner && snippets.len() < project_k => {
                snippets.push(Snippet {
                    lines: crate::project::chunk_lines(&passage.chunk),
                    project: passage.chunk.chapter,
                    path: passage.chunk.title,
                    text: passage.chunk.text,
                })
            }
            // Anyone else's file never reaches the prompt, whatever the index returns.
            _ => {}
        }
    }
    (passages, snippets, RetrievalStatus::Ok)
}

/// What the prompt is built from besides the turn and the history.
struct Material<'a> {
    /// The versions of the templates this turn uses.
    prompts: &'a Prompts,
    knowledge: &'a Knowledge,
    passages: &'a [Passage],
    snippets: &'a [Snippet],
    policy: &'a Effective,
    /// Said before the answer (an assessment window limiting it).
    notice: Option<&'a str>,
}

struct StreamCtx<'a> {
    answer_id: &'a str,
    started: Instant,
    stops: &'a Stops,
    record: &'a mut AnswerRecord,
    clock: &'a mut StageClock,
}

async fn stream_answer<F, Fut>(
    deps: &ChatDeps,
    llm: &dyn Llm,
    turn: &Turn,
    history: &[HistoryTurn],
    material: Material<'_>,
    ctx: StreamCtx<'_>,
    send: &F,
) -> Result<Ending, ChatError>
where
    F: Fn(TurnEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let knowledge = material.knowledge;
    let policy_words = answer_policy(material.policy, material.notice.is_some());
    let system_context = SystemContext {
        learner_name: &turn.learner.name,
        course: knowledge.course.as_deref().unwrap_or("your course"),
        page_title: turn.page.title.as_deref(),
        locale: &knowledge.locale,
        answer_policy: Some(&policy_words),
    };
    let system = material.prompts.render_system(&system_context)?;
    let prompt = crate::prompt::assemble(
        deps.budget,
        &Context {
            system: &system,
            profile: knowledge.facts.as_ref(),
            mentor: knowledge.plan.as_ref(),
            brief: knowledge.brief.as_ref(),
            attachments: &turn.attachments,
            snippets: material.snippets,
            passages: material.passages,
            history,
            question: &turn.text,
            retrieval_unavailable: ctx.record.retrieval == Some(RetrievalStatus::Unavailable),
        },
    );
    tracing::debug!(tokens = prompt.tokens, parts = ?prompt.parts, "prompt assembled");
    let record = ctx.record;
    // Kept with the answer for the inspector and replays: what the model receives. Counted
    // and serialised once the model has been asked, never before its first token.
    let keep_prompt = |record: &mut AnswerRecord| {
        let mut kept = PromptRecord::new(
            &deps.budget,
            &prompt,
            knowledge.course.clone(),
            SystemValues::from(&system_context),
        );
        kept.project = knowledge.project.clone();
        record.prompt = serde_json::to_value(&kept).ok();
    };
    record.model = Some(llm.model().to_string());
    // Citations refer to the passages the model actually saw.
    record.sources.truncate(prompt.passages_used);
    send(TurnEvent::Sources(record.sources.clone())).await;
    let mut seq = 0u64;
    if let Some(notice) = material.notice {
        record.text.push_str(notice);
        record.delta_ends.push(record.text.len());
        send(TurnEvent::Delta {
            seq,
            text: notice.to_string(),
        })
        .await;
        seq += 1;
    }
    let coaching = coaching_notes(
        &material.prompts.coaching(),
        &knowledge.locale,
        material.policy.max_code_lines,
    );
    let mut guard = OutputGuard::new(TurnRules {
        references: material.policy.references.clone(),
        max_code_lines: material.policy.max_code_lines,
        forbidden: material.policy.forbidden.clone(),
        n_passages: prompt.passages_used,
        locale: knowledge.locale.clone(),
        shown_before: history
            .iter()
            .flat_map(|turn| crate::guard::code_blocks(&turn.answer))
            .collect(),
        course_code: material.policy.course_code.clone(),
        learner_text: std::iter::once(turn.text.clone())
            .chain(turn.attachments.iter().map(|a| a.text.clone()))
            .chain(material.snippets.iter().map(|s| s.text.clone()))
            .collect(),
    })
    .with_coaching(coaching);
    let request = ChatRequest {
        messages: prompt.messages.clone(),
        max_tokens: deps.budget.reserved_answer,
        temperature: deps.temperature,
    };
    ctx.clock.stages.assemble = Some(ctx.clock.lap());
    let stream = tokio::select! {
        result = llm.stream(request) => result,
        _ = ctx.stops.cancel.cancelled() => {
            keep_prompt(record);
            return Ok((MessageStatus::Cancelled, None, None));
        }
        _ = ctx.stops.shutdown.cancelled() => {
            keep_prompt(record);
            return Ok((MessageStatus::Interrupted, None, None));
        }
    };
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "llm request failed");
            keep_prompt(record);
            return Ok((MessageStatus::Failed, Some(error), None));
        }
    };
    let mut usage: Option<(u32, u32)> = None;
    let mut last_checkpoint = Instant::now();
    let mut checkpointed_len = 0;
    // While the model is silent no checkpoint is due, but the row must not look orphaned.
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + deps.owner.heartbeat_every,
        deps.owner.heartbeat_every,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = heartbeat.tick() => {
                if let Err(error) = deps.store.heartbeat_answer(ctx.answer_id).await {
                    tracing::warn!(
                        error = ?error,
                        answer_id = ctx.answer_id,
                        "writing the answer's heartbeat failed; trying again at the next one"
                    );
                }
                continue;
            }
            _ = ctx.stops.cancel.cancelled() => break (MessageStatus::Cancelled, None),
            _ = ctx.stops.shutdown.cancelled() => break (MessageStatus::Interrupted, None),
        };
        match next {
            None => break (MessageStatus::Complete, None),
            Some(Ok(LlmEvent::Delta(text))) => {
                if record.first_token_ms.is_none() {
                    record.first_token_ms = Some(ctx.started.elapsed().as_millis() as i64);
                    ctx.clock.stages.llm_first_token = Some(ctx.clock.lap());
                    ctx.clock.stages.first_token_after = Some(ctx.clock.since_start());
                }
                // What the learner may see now: prose at once, a code block once closed
                // and checked.
                let shown = guard.push(&text);
                if !shown.is_empty() {
                    record.text.push_str(&shown);
                    // Where each delta ends is stored with the text: `resume` cuts it there.
                    record.delta_ends.push(record.text.len());
                    send(TurnEvent::Delta { seq, text: shown }).await;
                    seq += 1;
                }
            }
            Some(Ok(LlmEvent::Usage {
                tokens_in,
                tokens_out,
            })) => usage = Some((tokens_in, tokens_out)),
            Some(Err(error)) => {
                tracing::warn!(%error, "llm stream failed");
                break (MessageStatus::Failed, Some(error));
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY && record.text.len() != checkpointed_len {
            // A failed checkpoint only puts more text at risk: the answer goes on, and the
            // next checkpoint (a second later) tries again with all the text so far.
            match deps
                .store
                .checkpoint_answer(ctx.answer_id, &record.text, &record.delta_ends)
                .await
            {
                Ok(()) => {
                    checkpointed_len = record.text.len();
                    heartbeat.reset();
                }
                Err(error) => tracing::warn!(
                    error = ?error,
                    answer_id = ctx.answer_id,
                    "checkpoint failed; trying again at the next one"
                ),
            }
            last_checkpoint = Instant::now();
        }
    };
    if ctx.clock.stages.llm_first_token.is_some() {
        ctx.clock.stages.stream = Some(ctx.clock.lap());
    }
    // Whatever the ending, a held block is checked before it is shown or stored.
    let rest = guard.finish();
    if !rest.is_empty() {
        record.text.push_str(&rest);
        record.delta_ends.push(record.text.len());
        send(TurnEvent::Delta { seq, text: rest }).await;
    }
    let report = guard.report();
    let ending = (
        ending.0,
        ending.1,
        (report.changed_answer() || report.uncited).then_some(report),
    );
    let (tokens_in, tokens_out) = usage.map_or_else(
        || {
            (
                prompt.tokens as i64,
                crate::retrieval::chunk::count_tokens(&record.text) as i64,
            )
        },
        |(i, o)| (i64::from(i), i64::from(o)),
    );
    record.tokens_in = Some(tokens_in);
    record.tokens_out = Some(tokens_out);
    keep_prompt(record);
    Ok(ending)
}

/// Past exchanges of the conversation, oldest first, without the current question: from its
/// newest `history_messages` only (however long the conversation), each question paired with
/// its first answer that has text, in one pass.
async fn history(
    deps: &ChatDeps,
    conversation_id: &str,
    current_question: &str,
) -> Result<Vec<HistoryTurn>, ChatError> {
    let messages = deps
        .store
        .recent_messages(conversation_id, deps.history_messages)
        .await?;
    Ok(pair_turns(&messages, current_question, HISTORY_TURNS))
}

/// The last `keep` question/answer pairs of `messages` (in the order written), without
/// `current_question`; a question with no answer that has text is left out.
fn pair_turns(messages: &[StoredMessage], current_question: &str, keep: usize) -> Vec<HistoryTurn> {
    let mut answers: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for m in messages {
        if let Some(question) = m.reply_to.as_deref()
            && !m.text.is_empty()
        {
            answers.entry(question).or_insert(m.text.as_str());
        }
    }
    let mut turns: Vec<HistoryTurn> = messages
        .iter()
        .filter(|m| m.role == "learner" && m.id != current_question)
        .filter_map(|question| {
            answers.get(question.id.as_str()).map(|answer| HistoryTurn {
                question: question.text.clone(),
                answer: answer.to_string(),
            })
        })
        .collect();
    let skip = turns.len().saturating_sub(keep);
    turns.split_off(skip)
}

/// The stored answer to a question; if it is still streaming, waits for it to end.
async fn wait_for_answer(
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

async fn replay<F, Fut>(stored: StoredMessage, send: &F) -> TurnSummary
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
fn replayed_summary(stored: StoredMessage) -> TurnSummary {
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

/// The coaching notes of one answer, one per rule, from the course's coaching template rendered
/// for the learner. A note that fails to render is logged and left out: the guard then shows its
/// own (the shipped template's words) for that rule.
pub fn coaching_notes(
    template: &Template,
    locale: &str,
    max_code_lines: Option<usize>,
) -> CoachingNotes {
    let mut notes = CoachingNotes::default();
    for rule in Rule::ALL {
        let context = CoachingContext {
            rule: rule.as_str(),
            locale,
            max_code_lines,
        };
        match template.render_coaching(&context) {
            Ok(note) => notes.set(rule, note),
            Err(error) => tracing::warn!(
                %error,
                version = template.version(),
                rule = rule.as_str(),
                "the coaching note does not render; the guard's own is used"
            ),
        }
    }
    notes
}

/// The policy as the system prompt states it to the model.
fn answer_policy(policy: &Effective, assessment: bool) -> String {
    let lines = policy
        .max_code_lines
        .map(|n| format!(" Code blocks longer than {n} lines are withheld."))
        .unwrap_or_default();
    let mode = match policy.answer {
        AnswerMode::Hints => {
            "hints only: guide with questions and hints, never write the learner's code."
        }
        AnswerMode::Explain => {
            "explain concepts with small generic examples, never the learner's deliverable."
        }
        AnswerMode::Solutions => "worked solutions are allowed for this practice work.",
    };
    let assessment = if assessment {
        " An assessment is under way: explain course concepts only and do not help with the project."
    } else {
        ""
    };
    format!("{mode}{lines}{assessment}")
}

fn source_ref(passage: &Passage) -> SourceRef {
    SourceRef {
        n: passage.n,
        title: passage.chunk.title.clone(),
        section: passage.chunk.section_label(),
        url: passage.chunk.url.clone(),
        snippet: snippet(&passage.chunk.text),
    }
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

#[cfg(test)]
mod tests;
