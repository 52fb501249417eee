//! `answer` over an in-memory store, a scripted model and a real BM25 index in a temp folder.
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream;

use super::*;
use crate::config::{ProjectSettings, RetrievalMode};
use crate::learner::{LearnerStore, MentorSession};
use crate::llm::{LlmError, LlmStream};
use crate::retrieval::chunk::Chunk;
use crate::retrieval::edge_store::EdgeStore;
use crate::retrieval::store::{IndexedPoint, point_id};
use crate::store::memory::Memory;

const QUESTION: &str = "How do I stop a while loop?";

/// What the scripted model does with a request.
enum Script {
    /// Streams these deltas, then its usage.
    Reply(Vec<&'static str>),
    /// Refuses the request.
    Refuse,
    /// Streams these deltas, then breaks.
    BreakAfter(Vec<&'static str>),
    /// Streams these deltas this far apart, then its usage.
    Slow(Vec<&'static str>, Duration),
}

/// A model that follows a script and notes what the store held when each request came.
struct ScriptedLlm {
    script: Script,
    store: Arc<Memory>,
    calls: AtomicUsize,
    stored_at_call: Mutex<Vec<Vec<StoredMessage>>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl ScriptedLlm {
    fn new(script: Script, store: &Arc<Memory>) -> Arc<Self> {
        Arc::new(Self {
            script,
            store: store.clone(),
            calls: AtomicUsize::new(0),
            stored_at_call: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Llm for ScriptedLlm {
    fn model(&self) -> &str {
        "scripted-model"
    }

    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.stored_at_call
            .lock()
            .unwrap()
            .push(self.store.all_messages());
        self.requests.lock().unwrap().push(request);
        let deltas = |parts: &[&str]| -> Vec<Result<LlmEvent, LlmError>> {
            parts
                .iter()
                .map(|p| Ok(LlmEvent::Delta(p.to_string())))
                .collect()
        };
        let events = match &self.script {
            Script::Refuse => return Err(LlmError::Endpoint("connection refused".into())),
            Script::Reply(parts) => {
                let mut events = deltas(parts);
                events.push(Ok(LlmEvent::Usage {
                    tokens_in: 42,
                    tokens_out: 7,
                }));
                events
            }
            Script::BreakAfter(parts) => {
                let mut events = deltas(parts);
                events.push(Err(LlmError::Protocol("stream cut".into())));
                events
            }
            Script::Slow(parts, gap) => {
                let gap = *gap;
                let events = deltas(parts);
                return Ok(Box::pin(stream::iter(events).then(
                    move |event| async move {
                        tokio::time::sleep(gap).await;
                        event
                    },
                )));
            }
        };
        Ok(Box::pin(stream::iter(events)))
    }
}

fn course_chunk(chapter_title: &str, title: &str, anchor: &str, text: &str) -> Chunk {
    Chunk {
        source: format!("{anchor}.md"),
        course: "python".into(),
        chapter: "02-control-flow".into(),
        chapter_title: chapter_title.into(),
        title: title.into(),
        heading_path: vec![title.into()],
        url: format!("/course/python/{anchor}#{anchor}"),
        kind: "markdown".into(),
        chunk_idx: 0,
        text: text.into(),
    }
}

/// A BM25-only index in `dir` holding two course passages.
async fn retriever(dir: &Path) -> Retriever {
    let retriever = Retriever::new(
        Arc::new(EdgeStore::new(dir.join("index"))),
        None,
        RetrievalMode::Bm25,
        50,
    );
    let index = retriever.store();
    index.prepare(retriever.schema(), true).await.unwrap();
    let chunks = [
        course_chunk(
            "Control flow",
            "While loops",
            "while-loops",
            "A while loop repeats while its condition is true; break stops the loop at once.",
        ),
        course_chunk(
            "Control flow",
            "For loops",
            "for-loops",
            "A for loop walks over the items of a list, one item at a time.",
        ),
    ];
    let points = chunks
        .into_iter()
        .map(|chunk| IndexedPoint {
            id: point_id(&chunk.source, None, chunk.chunk_idx),
            sparse: retriever.bm25().embed_document(&chunk.embedding_text()),
            learner: None,
            dense: None,
            chunk,
        })
        .collect();
    index.upsert(points).await.unwrap();
    index.commit().await.unwrap();
    retriever
}

/// Fields drop in order: the index (inside `deps`) flushes to its folder before the folder goes.
struct Setup {
    deps: ChatDeps,
    store: Arc<Memory>,
    _dir: tempfile::TempDir,
}

async fn setup(llm: Option<Arc<dyn Llm>>, store: Arc<Memory>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let retriever = retriever(dir.path()).await;
    let projects = crate::project::Projects::new(
        store.clone(),
        retriever.clone(),
        ProjectSettings {
            max_file_bytes: 10_000,
            max_project_bytes: 100_000,
            max_archive_bytes: 100_000,
            max_archive_entries: 100,
            git_timeout: Duration::from_secs(5),
            git_max_bytes: 100_000,
            chunk_tokens: 64,
            top_k: 2,
            ..crate::config::Settings::defaults(dir.path()).projects
        },
        dir.path().to_path_buf(),
    );
    let deps = ChatDeps {
        studio: None,
        store: store.clone(),
        learners: store.clone(),
        flagger: None,
        retriever,
        llm,
        prompts: Arc::new(Prompts::builtin().unwrap()),
        projects: Arc::new(projects),
        budget: Budget::new(8192, 512, "gpt-4o-mini"),
        top_k: 3,
        retrieval_timeout: Duration::from_secs(5),
        temperature: 0.2,
        policies: Arc::new(crate::guard::policy::Policies::default()),
        policy_overrides: None,
        clock: crate::guard::window::Clock::default(),
        owner: AnswerOwner {
            node_id: "node-test".into(),
            stale_after: Duration::from_secs(60),
            heartbeat_every: Duration::from_secs(15),
        },
        history_messages: 60,
    };
    Setup {
        deps,
        store,
        _dir: dir,
    }
}

fn turn(client_id: &str) -> Turn {
    Turn {
        learner: Learner {
            id: "ada".into(),
            name: "Ada".into(),
        },
        conversation_id: "conv-1".into(),
        client_id: client_id.into(),
        text: QUESTION.into(),
        page: PageRef::default(),
        course: Some("python".into()),
        attachments: Vec::new(),
        answer_interrupted_again: false,
    }
}

/// Answers `turn` and returns the summary with every event sent, in order.
async fn ask(deps: &ChatDeps, turn: Turn) -> (Result<TurnSummary, ChatError>, Vec<TurnEvent>) {
    let (events, mut received) = mpsc::channel(256);
    let result = answer(deps, turn, events, Stops::default()).await;
    let mut sent = Vec::new();
    while let Some(event) = received.recv().await {
        sent.push(event);
    }
    (result, sent)
}

fn stored_question(store: &Memory) -> StoredMessage {
    let questions: Vec<_> = store
        .all_messages()
        .into_iter()
        .filter(|m| m.role == "learner")
        .collect();
    assert_eq!(questions.len(), 1, "{questions:?}");
    questions[0].clone()
}

fn stored_answer(store: &Memory) -> StoredMessage {
    let answers: Vec<_> = store
        .all_messages()
        .into_iter()
        .filter(|m| m.role == "assistant")
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    answers[0].clone()
}

#[tokio::test]
async fn the_question_is_stored_before_the_model_is_called_and_the_answer_after_it() {
    let store = Arc::new(Memory::default());
    let llm = ScriptedLlm::new(
        Script::Reply(vec![
            "Use `break` right away, ",
            "or make the condition false.",
        ]),
        &store,
    );
    let fixture = setup(Some(llm.clone()), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, events) = ask(deps, turn("c-1")).await;
    let summary = summary.unwrap();

    // When the model was asked, the question was committed and the answer row existed.
    let at_call = llm.stored_at_call.lock().unwrap().clone();
    assert_eq!(at_call.len(), 1);
    let question = at_call[0]
        .iter()
        .find(|m| m.role == "learner")
        .expect("the question is stored before the model is called");
    assert_eq!(question.text, QUESTION);
    assert_eq!(question.client_id.as_deref(), Some("c-1"));
    let pending = at_call[0]
        .iter()
        .find(|m| m.role == "assistant")
        .expect("the answer row exists before the first delta");
    assert_eq!(pending.status, MessageStatus::Streaming);
    assert_eq!(pending.reply_to.as_deref(), Some(question.id.as_str()));
    let request = llm.requests.lock().unwrap()[0].clone();
    let user = &request.messages.last().unwrap().content;
    assert!(user.contains(QUESTION), "{user}");
    assert!(user.contains("break stops the loop"), "{user}");

    // The answer as stored: text, status, sources, prompt version, model, usage.
    let stored = stored_answer(store);
    assert_eq!(stored.id, summary.message_id);
    assert_eq!(
        stored.text,
        "Use `break` right away, or make the condition false."
    );
    assert_eq!(stored.status, MessageStatus::Complete);
    assert_eq!(
        stored.prompt_version.as_deref(),
        Some(deps.prompts.system_version())
    );
    assert_eq!(stored.model.as_deref(), Some("scripted-model"));
    assert!(!stored.offline);
    assert_eq!((stored.tokens_in, stored.tokens_out), (Some(42), Some(7)));
    assert_eq!(stored.sources[0].section, "Control flow › While loops");
    assert_eq!(
        stored.sources[0].url,
        "/course/python/while-loops#while-loops"
    );
    assert_eq!(stored_question(store).id, question.id);

    // The events, in order.
    assert_eq!(
        events[0],
        TurnEvent::Ack {
            message_id: question.id.clone(),
            duplicate: false
        }
    );
    assert_eq!(events[1], TurnEvent::Sources(stored.sources.clone()));
    // Each delta goes on as it comes through the output guard (a line once its first three
    // words show it is prose), but for a trailing space: it waits for the next delta, since a
    // citation that names no passage takes its space away.
    assert_eq!(
        events[2..4],
        [
            TurnEvent::Delta {
                seq: 0,
                text: "Use `break` right away,".into()
            },
            TurnEvent::Delta {
                seq: 1,
                text: " or make the condition false.".into()
            },
        ]
    );
    assert_eq!(events[4], TurnEvent::Done(Box::new(summary.clone())));
    assert_eq!(events.len(), 5);
    assert_eq!(summary.status, Some(MessageStatus::Complete));
    assert_eq!(summary.model, "scripted-model");
    assert!(!summary.replayed && summary.error.is_none());
}

#[tokio::test]
async fn a_resent_client_id_is_replayed_and_the_model_is_called_once() {
    let store = Arc::new(Memory::default());
    let llm = ScriptedLlm::new(Script::Reply(vec!["Use break."]), &store);
    let fixture = setup(Some(llm.clone()), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (first, _) = ask(deps, turn("c-1")).await;
    let first = first.unwrap();
    let (again, events) = ask(deps, turn("c-1")).await;
    let again = again.unwrap();

    assert_eq!(llm.calls(), 1);
    assert!(again.replayed);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.status, Some(MessageStatus::Complete));
    assert_eq!(store.all_messages().len(), 2, "stored once, not twice");
    let question = stored_question(store);
    let answer = stored_answer(store);
    assert_eq!(
        events,
        vec![
            TurnEvent::Ack {
                message_id: question.id,
                duplicate: true
            },
            TurnEvent::Sources(answer.sources),
            TurnEvent::Delta {
                seq: 0,
                text: "Use break.".into()
            },
            TurnEvent::Done(Box::new(again.clone())),
        ]
    );
}

#[tokio::test]
async fn a_refused_request_stores_the_answer_as_failed_and_says_why() {
    let store = Arc::new(Memory::default());
    let llm = ScriptedLlm::new(Script::Refuse, &store);
    let fixture = setup(Some(llm), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, events) = ask(deps, turn("c-1")).await;
    let summary = summary.unwrap();

    assert_eq!(summary.status, Some(MessageStatus::Failed));
    let error = summary.error.clone().expect("the failure's reason");
    assert!(error.contains("connection refused"), "{error}");
    assert_eq!(
        events.last(),
        Some(&TurnEvent::Done(Box::new(summary.clone())))
    );
    let stored = stored_answer(store);
    assert_eq!(stored.status, MessageStatus::Failed);
    assert_eq!(stored.text, "");
    // The question stays stored.
    assert_eq!(stored_question(store).text, QUESTION);
}

#[tokio::test]
async fn a_stream_that_breaks_keeps_the_text_so_far_as_a_failed_answer() {
    let store = Arc::new(Memory::default());
    let llm = ScriptedLlm::new(Script::BreakAfter(vec!["Use ", "break"]), &store);
    let fixture = setup(Some(llm), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, events) = ask(deps, turn("c-1")).await;
    let summary = summary.unwrap();

    assert_eq!(summary.status, Some(MessageStatus::Failed));
    assert!(summary.error.as_deref().unwrap().contains("stream cut"));
    assert_eq!(events.last(), Some(&TurnEvent::Done(Box::new(summary))));
    let stored = stored_answer(store);
    assert_eq!(
        (stored.status, stored.text.as_str()),
        (MessageStatus::Failed, "Use break")
    );
}

#[tokio::test]
async fn without_a_model_the_reply_gives_the_passages_and_the_mentors_goals() {
    let store = Arc::new(Memory::default());
    store
        .add_mentor_session(&MentorSession {
            id: "s1".into(),
            learner_id: "ada".into(),
            mentor_id: "grace".into(),
            held_on: "2025-03-04".into(),
            notes: "Loops are shaky.".into(),
            goals: vec!["Redo the loop exercises".into()],
            created_at: 1,
        })
        .await
        .unwrap();
    let fixture = setup(None, store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, events) = ask(deps, turn("c-1")).await;
    let summary = summary.unwrap();

    assert!(summary.offline);
    assert_eq!(summary.model, "offline");
    assert_eq!(summary.status, Some(MessageStatus::Complete));
    let stored = stored_answer(store);
    assert!(stored.offline);
    assert_eq!(stored.model.as_deref(), Some("offline"));
    assert_eq!(
        stored.prompt_version.as_deref(),
        Some(deps.prompts.offline_version())
    );
    assert!(
        stored.text.contains("The AI model is not available"),
        "{}",
        stored.text
    );
    assert!(
        stored
            .text
            .contains("[1] Control flow › While loops (/course/python/while-loops#while-loops)"),
        "{}",
        stored.text
    );
    assert!(
        stored.text.contains("- Redo the loop exercises"),
        "{}",
        stored.text
    );
    // Sent as Sources then the text in deltas that add up to the stored answer.
    assert_eq!(events[1], TurnEvent::Sources(stored.sources.clone()));
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, stored.text);
    assert_eq!(events.last(), Some(&TurnEvent::Done(Box::new(summary))));
}

#[tokio::test]
async fn another_learners_conversation_is_refused_and_nothing_is_stored() {
    let store = Arc::new(Memory::default());
    let fixture = setup(None, store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);
    let mut bob = turn("c-b");
    bob.learner.id = "bob".into();
    ask(deps, bob).await.0.unwrap();
    let before = store.all_messages().len();

    let (result, events) = ask(deps, turn("c-1")).await;

    assert!(matches!(result, Err(ChatError::ForeignConversation)));
    assert!(events.is_empty());
    assert_eq!(store.all_messages().len(), before);
}

/// A vector index that is down: every call fails.
struct DownIndex;

#[async_trait]
impl crate::retrieval::store::VectorStore for DownIndex {
    async fn prepare(
        &self,
        _: crate::retrieval::store::IndexSchema,
        _: bool,
    ) -> Result<(), crate::retrieval::store::StoreError> {
        Err(down())
    }
    async fn upsert(
        &self,
        _: Vec<IndexedPoint>,
    ) -> Result<(), crate::retrieval::store::StoreError> {
        Err(down())
    }
    async fn delete_source(
        &self,
        _: &str,
        _: Option<&str>,
    ) -> Result<(), crate::retrieval::store::StoreError> {
        Err(down())
    }
    async fn delete_learner(&self, _: &str) -> Result<(), crate::retrieval::store::StoreError> {
        Err(down())
    }
    async fn search(
        &self,
        _: crate::retrieval::store::SearchQuery,
    ) -> Result<Vec<crate::retrieval::store::Hit>, crate::retrieval::store::StoreError> {
        Err(down())
    }
    async fn count(&self) -> Result<usize, crate::retrieval::store::StoreError> {
        Err(down())
    }
    async fn commit(&self) -> Result<(), crate::retrieval::store::StoreError> {
        Err(down())
    }
}

fn down() -> crate::retrieval::store::StoreError {
    crate::retrieval::store::StoreError::Backend("connection refused".into())
}

#[tokio::test]
async fn with_the_index_down_the_answer_is_written_without_passages_and_marked_so() {
    let store = Arc::new(Memory::default());
    let llm = ScriptedLlm::new(
        Script::Reply(vec!["From what I know: ", "use break."]),
        &store,
    );
    let mut fixture = setup(Some(llm.clone()), store).await;
    fixture.deps.retriever = Retriever::new(Arc::new(DownIndex), None, RetrievalMode::Bm25, 50);
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, events) = ask(deps, turn("c-1")).await;
    let summary = summary.unwrap();

    assert_eq!(summary.status, Some(MessageStatus::Complete));
    assert_eq!(summary.retrieval, RetrievalStatus::Unavailable);
    assert!(
        events.contains(&TurnEvent::Sources(Vec::new())),
        "{events:?}"
    );
    let request = llm.requests.lock().unwrap()[0].clone();
    let user = &request.messages.last().unwrap().content;
    assert!(user.contains("course search is unavailable"), "{user}");
    let stored = stored_answer(store);
    assert_eq!(stored.retrieval, Some(RetrievalStatus::Unavailable));
    assert_eq!(stored.text, "From what I know: use break.");
}

#[tokio::test]
async fn a_failed_answer_stores_the_stable_code_of_its_failure() {
    let store = Arc::new(Memory::default());
    let llm = ScriptedLlm::new(Script::BreakAfter(vec!["Use "]), &store);
    let fixture = setup(Some(llm), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, _) = ask(deps, turn("c-1")).await;
    let summary = summary.unwrap();

    assert_eq!(summary.failure, Some(LlmFailure::Unavailable));
    assert_eq!(summary.retrieval, RetrievalStatus::Ok);
    let stored = stored_answer(store);
    assert_eq!(stored.failure.as_deref(), Some("llm_unavailable"));
    assert_eq!(stored.retrieval, Some(RetrievalStatus::Ok));
}

#[tokio::test]
async fn a_failing_checkpoint_is_retried_and_does_not_abort_the_answer() {
    let store = Arc::new(Memory::default());
    // The first two checkpoints fail, as writes do while a database fails over.
    store.faults.checkpoints.store(2, Ordering::SeqCst);
    let llm = ScriptedLlm::new(
        Script::Slow(
            vec!["1, ", "2, ", "3, ", "4, ", "5, ", "6, ", "7, ", "8."],
            Duration::from_millis(600),
        ),
        &store,
    );
    let fixture = setup(Some(llm), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, events) = ask(deps, turn("c-checkpoint")).await;

    let summary = summary.expect("a failed checkpoint does not fail the turn");
    assert_eq!(summary.status, Some(MessageStatus::Complete));
    assert!(
        matches!(events.last(), Some(TurnEvent::Done(_))),
        "{events:?}"
    );
    let stored = stored_answer(store);
    assert_eq!(stored.status, MessageStatus::Complete);
    assert_eq!(stored.text, "1, 2, 3, 4, 5, 6, 7, 8.");
    // Checkpoints went on being tried after the failures.
    assert!(
        store.faults.checkpoint_attempts.load(Ordering::SeqCst) >= 3,
        "checkpoints tried: {}",
        store.faults.checkpoint_attempts.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_final_write_that_fails_is_retried_until_it_is_stored() {
    let store = Arc::new(Memory::default());
    store.faults.finishes.store(2, Ordering::SeqCst);
    let llm = ScriptedLlm::new(Script::Reply(vec!["Use `break`."]), &store);
    let fixture = setup(Some(llm), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);

    let (summary, _events) = ask(deps, turn("c-final")).await;

    let summary = summary.expect("a final write that fails twice is retried");
    assert_eq!(summary.status, Some(MessageStatus::Complete));
    let stored = stored_answer(store);
    assert_eq!(stored.status, MessageStatus::Complete);
    assert_eq!(stored.text, "Use `break`.");
}

#[tokio::test]
async fn a_final_write_that_keeps_failing_ends_the_turn_with_an_error_and_no_done() {
    let store = Arc::new(Memory::default());
    store.faults.finishes.store(usize::MAX, Ordering::SeqCst);
    let llm = ScriptedLlm::new(Script::Reply(vec!["Use `break`."]), &store);
    let fixture = setup(Some(llm), store).await;

    let (summary, events) = ask(&fixture.deps, turn("c-final-down")).await;

    assert!(matches!(summary, Err(ChatError::Store(_))), "{summary:?}");
    // No `done`: the gateway sends an error frame instead.
    assert!(
        !events.iter().any(|e| matches!(e, TurnEvent::Done(_))),
        "{events:?}"
    );
}

/// A learner's question and its answer, written `at` as an earlier turn would have left them.
fn past_turn(n: usize, at: i64) -> [StoredMessage; 2] {
    let message = |id: String, role: &str, text: String, reply_to: Option<String>| StoredMessage {
        client_id: (role == "learner").then(|| format!("past-{n}")),
        status: MessageStatus::Complete,
        reply_to,
        ..StoredMessage::new(id, "conv-1", "ada", role, text, at)
    };
    let question = format!("q-{n:05}");
    [
        message(question.clone(), "learner", format!("question {n}"), None),
        message(
            format!("a-{n:05}"),
            "assistant",
            format!("answer {n}"),
            Some(question),
        ),
    ]
}

#[tokio::test]
async fn a_turn_in_a_long_conversation_reads_only_a_window_of_its_newest_messages() {
    let store = Arc::new(Memory::default());
    let start = crate::transcript::now_ms() - 10_000_000;
    for n in 0..2000 {
        for message in past_turn(n, start + n as i64 * 1000) {
            store.put_message(message);
        }
    }
    let llm = ScriptedLlm::new(Script::Reply(vec!["Use `break`."]), &store);
    let fixture = setup(Some(llm.clone()), store).await;
    let (deps, store) = (&fixture.deps, &fixture.store);
    let before = store.rows_read();

    let (summary, _events) = ask(deps, turn("c-long")).await;

    summary.unwrap();
    let read = store.rows_read() - before;
    assert!(
        read <= 200,
        "a turn read {read} stored messages of a 4000-message conversation"
    );
    // The history the model saw is the newest one, paired question with answer.
    let request = llm.requests.lock().unwrap()[0].clone();
    let prompt: String = request
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect();
    assert!(prompt.contains("question 1999"), "{prompt}");
    assert!(prompt.contains("answer 1999"), "{prompt}");
}

#[test]
fn the_shipped_coaching_template_renders_the_guards_own_notes_word_for_word() {
    let shipped = Prompts::builtin().unwrap().coaching();
    for locale in ["en", "en-GB", "fr", "fr-FR", "fr_CA", "FR", "de"] {
        for max_code_lines in [None, Some(8)] {
            let notes = coaching_notes(&shipped, locale, max_code_lines);
            for rule in Rule::ALL {
                assert_eq!(
                    notes.get(rule),
                    Some(crate::guard::builtin_note(rule, locale)),
                    "{rule:?} in {locale}"
                );
            }
        }
    }
}

#[test]
fn a_courses_coaching_version_is_rendered_for_the_learner_and_the_rule() {
    let text = "{% if french %}Note du cours ({{ rule }}){% else %}Course note ({{ rule }}, \
                {{ max_code_lines }} lines, {{ language }}){% endif %}";
    let template = Template::compile(crate::prompt::TemplateName::Coaching, "v-7", text).unwrap();
    let notes = coaching_notes(&template, "en", Some(6));
    assert_eq!(
        notes.get(Rule::Length),
        Some("Course note (length, 6 lines, English)")
    );
    let notes = coaching_notes(&template, "fr-CA", None);
    assert_eq!(
        notes.get(Rule::Forbidden),
        Some("Note du cours (forbidden)")
    );
}
