//! `companion eval prompts --candidate X [--baseline Y]`: the cases of `prompts/evals/*.yaml`
//! (a learner's situation, a question, checks on the answer) played through the real answering
//! path (`chat::answer`: store, retrieval, prompt assembly, the output guard) once with each
//! system prompt, side by side; a candidate that fails a check the baseline passes regresses.
//!
//! Without a configured model the answers come from [`InstructedModel`], a deterministic fake
//! that follows a few plain instructions of the system prompt (which language, cite or not, be
//! brief or not, coach or paste the full solution), so what a prompt says changes the answer
//! and a bad candidate fails honestly. Rubric checks need a real model and are skipped without.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chat::{AnswerOwner, ChatDeps, Learner, PageRef, Stops, Turn, TurnEvent};
use crate::config::{RetrievalMode, Settings};
use crate::guard::policy::Policies;
use crate::guard::window::Clock;
use crate::llm::{ChatRequest, Llm, LlmError, LlmEvent, LlmStream, Role};
use crate::prompt::versions::{strip_front_matter, validate};
use crate::prompt::{Budget, Prompts, Template, TemplateName};
use crate::retrieval::terms::{Lang, detect_language};
use crate::transcript::{AnswerRecord, MessageStatus, NewQuestion, SourceRef, TranscriptStore};

/// One case: who asks, what, and what the answer must show.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCase {
    pub id: String,
    #[serde(default)]
    pub situation: Situation,
    pub question: String,
    pub checks: Checks,
}

/// The learner's situation when they ask.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Situation {
    #[serde(default = "english")]
    pub locale: String,
    #[serde(default = "default_course")]
    pub course: String,
    #[serde(default)]
    pub chapter: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub chapters_completed: Vec<String>,
    #[serde(default)]
    pub page: Option<CasePage>,
    /// Files of the learner's project (stored and indexed for them).
    #[serde(default)]
    pub files: Vec<CaseFile>,
    /// Earlier exchanges of the conversation, oldest first.
    #[serde(default)]
    pub history: Vec<CaseExchange>,
}

impl Default for Situation {
    fn default() -> Self {
        Self {
            locale: english(),
            course: default_course(),
            chapter: None,
            project: None,
            chapters_completed: Vec::new(),
            page: None,
            files: Vec::new(),
            history: Vec::new(),
        }
    }
}

fn english() -> String {
    "en".into()
}

fn default_course() -> String {
    "python-foundations".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePage {
    pub title: String,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub project: String,
    pub path: String,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseExchange {
    pub question: String,
    pub answer: String,
}

/// What the answer the learner gets must show. Every check given is applied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Cites (`[n]`) a source whose URL or title contains this (a course file's name).
    #[serde(default)]
    pub cite_from: Option<String>,
    /// No code block longer than this many non-blank lines.
    #[serde(default)]
    pub max_code_lines: Option<usize>,
    #[serde(default)]
    pub must_contain: Vec<String>,
    #[serde(default)]
    pub must_not_contain: Vec<String>,
    /// `en` or `fr`.
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub min_chars: Option<usize>,
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// Judged by the model (PASS/FAIL); skipped without a real model.
    #[serde(default)]
    pub rubric: Option<String>,
}

/// Reads every `*.yaml` file of `dir` (sorted by name); each holds a list of cases.
pub fn read_cases(dir: &Path) -> anyhow::Result<Vec<PromptCase>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the prompt eval folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let more: Vec<PromptCase> = serde_saphyr::from_str(&text)
            .with_context(|| format!("{} is not a list of prompt eval cases", file.display()))?;
        cases.extend(more);
    }
    anyhow::ensure!(!cases.is_empty(), "{} holds no eval cases", dir.display());
    for (i, case) in cases.iter().enumerate() {
        anyhow::ensure!(
            !cases[..i].iter().any(|c| c.id == case.id),
            "two eval cases are called {:?}",
            case.id
        );
    }
    Ok(cases)
}

/// A system prompt to evaluate: its name in the table and its text.
#[derive(Debug, Clone)]
pub struct Contender {
    pub name: String,
    pub version: String,
    pub text: String,
}

impl Contender {
    /// The shipped system prompt.
    pub fn shipped() -> Self {
        Self {
            name: "shipped".into(),
            version: TemplateName::System.default_version_id(),
            text: strip_front_matter(TemplateName::System.shipped()).to_string(),
        }
    }

    /// A template file, or else a version stored in the database of `settings`.
    pub async fn load(spec: &str, settings: &Settings) -> anyhow::Result<Self> {
        if spec == "default" || spec == TemplateName::System.default_version_id() {
            return Ok(Self::shipped());
        }
        let path = Path::new(spec);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Self {
                name: path
                    .file_name()
                    .map_or(spec.to_string(), |n| n.to_string_lossy().into_owned()),
                version: format!("file:{spec}"),
                text,
            });
        }
        let store = crate::store::Store::connect(&settings.database.url, 2)
            .await
            .context("cannot open the database to read a stored prompt version")?;
        let version = store
            .prompt_version(spec)
            .await?
            .with_context(|| format!("{spec:?} is neither a file nor a stored prompt version"))?;
        anyhow::ensure!(
            version.template == TemplateName::System,
            "version {spec} is a {} template, not a system prompt",
            version.template.as_str()
        );
        Ok(Self {
            name: format!("{}@{}", version.course, short(&version.id)),
            version: version.id,
            text: version.text,
        })
    }
}

fn short(id: &str) -> &str {
    &id[id.len().saturating_sub(8)..]
}

/// One case's verdict for one contender: the checks it failed (empty: passed) and skipped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
    pub answer: String,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub id: String,
    pub baseline: Verdict,
    pub candidate: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptEvalReport {
    pub baseline: String,
    pub candidate: String,
    pub model: String,
    pub cases: Vec<CaseReport>,
}

impl PromptEvalReport {
    /// Cases the baseline passes and the candidate fails.
    pub fn regressions(&self) -> Vec<&str> {
        self.cases
            .iter()
            .filter(|c| c.baseline.passed() && !c.candidate.passed())
            .map(|c| c.id.as_str())
            .collect()
    }
}

/// What the command does: reads the cases and both prompts, picks the configured model (or
/// the fake), and compares.
pub async fn compare(
    settings: &Settings,
    candidate: &str,
    baseline: &str,
    set: &Path,
    content: &Path,
) -> anyhow::Result<PromptEvalReport> {
    let cases = read_cases(set)?;
    let baseline = Contender::load(baseline, settings).await?;
    let candidate = Contender::load(candidate, settings).await?;
    let model = settings
        .llm
        .as_ref()
        .map(|llm| Arc::new(crate::llm::openai::OpenAiLlm::new(llm)) as Arc<dyn Llm>);
    run(content, &cases, &baseline, &candidate, model).await
}

/// Plays every case with the baseline and the candidate. `model`: a real model, or `None` for
/// [`InstructedModel`].
pub async fn run(
    content: &Path,
    cases: &[PromptCase],
    baseline: &Contender,
    candidate: &Contender,
    model: Option<Arc<dyn Llm>>,
) -> anyhow::Result<PromptEvalReport> {
    let data = tempfile::tempdir()?;
    let mut settings = Settings::defaults(data.path());
    settings.content.dir = PathBuf::from(content);
    settings.retrieval.mode = RetrievalMode::Bm25;
    let budget = Budget::new(16_000, 1_024, "gpt-4o-mini");
    for contender in [baseline, candidate] {
        validate(TemplateName::System, &contender.text, "eval", &budget)
            .with_context(|| format!("{} is not a usable system prompt", contender.name))?;
    }
    let store = Arc::new(
        crate::store::Store::connect(&settings.database.url, 2)
            .await
            .context("cannot open the evaluation's database")?,
    );
    let retriever = crate::index::build_retriever(&settings).await?;
    crate::index::index_content(&retriever, &settings, false, None).await?;
    let real = model.is_some();
    let llm: Arc<dyn Llm> = model.unwrap_or_else(|| Arc::new(InstructedModel));
    let shipped = Prompts::builtin()?;
    let deps_for = |contender: &Contender| -> anyhow::Result<ChatDeps> {
        let system = Template::compile(TemplateName::System, &contender.version, &contender.text)?;
        Ok(ChatDeps {
            studio: None,
            store: store.clone(),
            learners: store.clone(),
            flagger: None,
            retriever: retriever.clone(),
            llm: Some(llm.clone()),
            prompts: Arc::new(shipped.with(Arc::new(system))),
            projects: Arc::new(crate::project::Projects::new(
                store.clone(),
                retriever.clone(),
                settings.projects.clone(),
                settings.content.dir.clone(),
            )),
            budget,
            top_k: settings.retrieval.top_k,
            retrieval_timeout: settings.retrieval.timeout,
            temperature: 0.0,
            policies: Arc::new(Policies::load(content)?),
            policy_overrides: None,
            clock: Clock::default(),
            owner: AnswerOwner {
                node_id: "eval".into(),
                stale_after: settings.transcripts.stale_after,
                heartbeat_every: settings.transcripts.heartbeat_every(),
            },
            history_messages: settings.transcripts.history_messages,
        })
    };
    let (baseline_deps, candidate_deps) = (deps_for(baseline)?, deps_for(candidate)?);
    let mut reports = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let mut verdicts = Vec::new();
        for (arm, deps) in [("b", &baseline_deps), ("c", &candidate_deps)] {
            let learner = format!("eval-{n}-{arm}");
            let (answer, sources) = play(deps, store.as_ref(), &learner, case).await?;
            let mut verdict = judge(&case.checks, &answer, &sources);
            if let Some(rubric) = &case.checks.rubric {
                if real {
                    if !judge_rubric(llm.as_ref(), rubric, &answer).await? {
                        verdict.failed.push("rubric".into());
                    }
                } else {
                    verdict.skipped.push("rubric (no model)".into());
                }
            }
            verdict.answer = answer;
            verdicts.push(verdict);
        }
        let candidate = verdicts.pop().unwrap_or_default();
        let baseline = verdicts.pop().unwrap_or_default();
        reports.push(CaseReport {
            id: case.id.clone(),
            baseline,
            candidate,
        });
    }
    Ok(PromptEvalReport {
        baseline: baseline.name.clone(),
        candidate: candidate.name.clone(),
        model: llm.model().to_string(),
        cases: reports,
    })
}

/// Sets the learner up as the case says, asks the question through `chat::answer`; the text
/// the learner got and the sources they were shown.
async fn play(
    deps: &ChatDeps,
    store: &crate::store::Store,
    learner: &str,
    case: &PromptCase,
) -> anyhow::Result<(String, Vec<SourceRef>)> {
    let situation = &case.situation;
    let mut profile = crate::learner::LearnerProfile::new(learner);
    profile.name = Some("Eval Learner".into());
    profile.locale = situation.locale.clone();
    profile.course = Some(situation.course.clone());
    profile.chapter = situation.chapter.clone();
    profile.project = situation.project.clone();
    profile.chapters_completed = situation.chapters_completed.clone();
    crate::learner::LearnerStore::put_learner(store, &profile).await?;
    for file in &situation.files {
        deps.projects
            .write(
                learner,
                &situation.course,
                &file.project,
                vec![crate::project::IncomingFile {
                    path: file.path.clone(),
                    bytes: file.text.clone().into_bytes(),
                }],
                crate::project::Origin::Api,
                false,
            )
            .await
            .with_context(|| format!("case {}: storing {}", case.id, file.path))?;
    }
    let conversation = format!("conv-{learner}");
    for (i, exchange) in situation.history.iter().enumerate() {
        let question = uuid::Uuid::now_v7().to_string();
        store
            .insert_question(&NewQuestion {
                id: question.clone(),
                conversation_id: conversation.clone(),
                learner_id: learner.to_string(),
                course_id: Some(situation.course.clone()),
                client_id: format!("history-{i}"),
                text: exchange.question.clone(),
                page_url: None,
            })
            .await?;
        let answer = uuid::Uuid::now_v7().to_string();
        store
            .start_answer(&answer, &question, &conversation, learner, "eval")
            .await?;
        let record = AnswerRecord {
            text: exchange.answer.clone(),
            ..Default::default()
        };
        store
            .finish_answer(&answer, MessageStatus::Complete, &record)
            .await?;
    }
    let (events, mut receiver) = mpsc::channel(1024);
    let turn = Turn {
        learner: Learner {
            id: learner.to_string(),
            name: "Eval Learner".into(),
        },
        conversation_id: conversation,
        client_id: "eval-question".into(),
        text: case.question.clone(),
        page: PageRef {
            url: situation.page.as_ref().and_then(|p| p.url.clone()),
            title: situation.page.as_ref().map(|p| p.title.clone()),
        },
        course: Some(situation.course.clone()),
        attachments: Vec::new(),
        answer_interrupted_again: false,
    };
    let collect = tokio::spawn(async move {
        let (mut text, mut sources) = (String::new(), Vec::new());
        while let Some(event) = receiver.recv().await {
            match event {
                TurnEvent::Delta { text: delta, .. } => text.push_str(&delta),
                TurnEvent::Sources(shown) => sources = shown,
                _ => {}
            }
        }
        (text, sources)
    });
    crate::chat::answer(deps, turn, events, Stops::default())
        .await
        .with_context(|| format!("case {}", case.id))?;
    Ok(collect.await?)
}

/// The checks `answer` fails, by name.
pub fn judge(checks: &Checks, answer: &str, sources: &[SourceRef]) -> Verdict {
    let mut failed = Vec::new();
    if let Some(file) = &checks.cite_from {
        let cited = sources.iter().any(|s| {
            (s.url.contains(file.as_str()) || s.title.contains(file.as_str()))
                && answer.contains(&format!("[{}]", s.n))
        });
        if !cited {
            failed.push(format!("cite_from {file}"));
        }
    }
    if let Some(max) = checks.max_code_lines {
        let longest = crate::guard::code_blocks(answer)
            .iter()
            .map(|b| {
                b.lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("```"))
                    .count()
            })
            .max()
            .unwrap_or(0);
        if longest > max {
            failed.push(format!("code {longest} lines > {max}"));
        }
    }
    let lower = answer.to_lowercase();
    for needle in &checks.must_contain {
        if !lower.contains(&needle.to_lowercase()) {
            failed.push(format!("missing {needle:?}"));
        }
    }
    for needle in &checks.must_not_contain {
        if lower.contains(&needle.to_lowercase()) {
            failed.push(format!("contains {needle:?}"));
        }
    }
    if let Some(language) = &checks.language {
        let got = match detect_language(answer) {
            Lang::French => "fr",
            Lang::English => "en",
        };
        if got != language {
            failed.push(format!("language {got}, not {language}"));
        }
    }
    let chars = answer.chars().count();
    if let Some(min) = checks.min_chars
        && chars < min
    {
        failed.push(format!("{chars} chars < {min}"));
    }
    if let Some(max) = checks.max_chars
        && chars > max
    {
        failed.push(format!("{chars} chars > {max}"));
    }
    Verdict {
        failed,
        ..Default::default()
    }
}

/// Asks the model whether `answer` meets `rubric`; PASS or FAIL.
async fn judge_rubric(llm: &dyn Llm, rubric: &str, answer: &str) -> anyhow::Result<bool> {
    use futures::StreamExt;
    let request = ChatRequest {
        messages: vec![
            crate::llm::ChatMessage {
                role: Role::System,
                content: "You grade a tutor's answer against a rubric. Reply with PASS or FAIL \
                          and nothing else."
                    .into(),
            },
            crate::llm::ChatMessage {
                role: Role::User,
                content: format!("Rubric: {rubric}\n\n<answer>\n{answer}\n</answer>"),
            },
        ],
        max_tokens: 5,
        temperature: 0.0,
    };
    let mut stream = llm.stream(request).await?;
    let mut reply = String::new();
    while let Some(event) = stream.next().await {
        if let LlmEvent::Delta(text) = event? {
            reply.push_str(&text);
        }
    }
    Ok(reply.trim().to_uppercase().starts_with("PASS"))
}

/// The side-by-side table: a row per case, then the pass counts and the regressions.
pub fn render(report: &PromptEvalReport) -> String {
    let cell = |v: &Verdict| {
        let mut text = if v.passed() {
            "pass".to_string()
        } else {
            format!("FAIL {}", v.failed.join("; "))
        };
        if !v.skipped.is_empty() {
            text.push_str(&format!(" (skipped: {})", v.skipped.join(", ")));
        }
        text
    };
    let width = report
        .cases
        .iter()
        .map(|c| cell(&c.baseline).chars().count())
        .chain([report.baseline.chars().count() + 10])
        .max()
        .unwrap_or(10)
        .max(12);
    let id_width = report
        .cases
        .iter()
        .map(|c| c.id.len())
        .max()
        .unwrap_or(4)
        .max(8);
    let mut out = format!("model: {}\n", report.model);
    let (baseline, candidate) = (
        format!("baseline: {}", report.baseline),
        format!("candidate: {}", report.candidate),
    );
    out.push_str(&format!(
        "{:<id_width$}  {baseline:<width$}  {candidate}\n",
        "case"
    ));
    for case in &report.cases {
        out.push_str(&format!(
            "{:<id_width$}  {:<width$}  {}\n",
            case.id,
            cell(&case.baseline),
            cell(&case.candidate)
        ));
    }
    let passed =
        |f: fn(&CaseReport) -> &Verdict| report.cases.iter().filter(|c| f(c).passed()).count();
    let n = report.cases.len();
    let (baseline, candidate) = (
        format!("{}/{n}", passed(|c| &c.baseline)),
        format!("{}/{n}", passed(|c| &c.candidate)),
    );
    out.push_str(&format!(
        "{:<id_width$}  {baseline:<width$}  {candidate}\n",
        "passed"
    ));
    let regressions = report.regressions();
    if regressions.is_empty() {
        out.push_str("no regression\n");
    } else {
        out.push_str(&format!(
            "{} regressions: {}\n",
            regressions.len(),
            regressions.join(", ")
        ));
    }
    out
}

/// A deterministic stand-in for a model that reads its system prompt and follows these plain
/// instructions, and no others:
/// - "Answer in French" → French, else English;
/// - "cite" (and not "do not cite") → the first two passages' numbers after the sentence;
/// - "paste the full solution" → a long worked solution in a code block, announced as such;
///   else a small example of three lines that is not the learner's exercise;
/// - "Be brief" → one short paragraph, else several more.
///
/// The answer opens with the first passage of the user message, so it stays on the course.
pub struct InstructedModel;

#[async_trait]
impl Llm for InstructedModel {
    fn model(&self) -> &str {
        "instructed-fake"
    }

    async fn stream(&self, request: ChatRequest) -> Result<LlmStream, LlmError> {
        let system = request
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let reply = instructed_reply(system, user);
        let chars: Vec<char> = reply.chars().collect();
        let deltas: Vec<Result<LlmEvent, LlmError>> = chars
            .chunks(24)
            .map(|c| Ok(LlmEvent::Delta(c.iter().collect())))
            .collect();
        Ok(Box::pin(futures::stream::iter(deltas)))
    }
}

/// What [`InstructedModel`] writes for this system prompt and user message.
pub fn instructed_reply(system: &str, user: &str) -> String {
    let s = system.to_lowercase();
    let french = s.contains("answer in french");
    let cite = s.contains("cite") && !s.contains("do not cite") && !s.contains("never cite");
    let solution = s.contains("paste the full solution");
    let brief = s.contains("be brief");
    let passage = first_passage(user);
    let mut out = String::new();
    // In French the (English) passage is not quoted: the answer stays in one language.
    match (&passage, french) {
        (Some(text), false) => out.push_str(&format!("The course puts it this way: {text}")),
        (Some(_), true) => out.push_str(
            "Le cours explique ce point dans le passage que voici, avec un exemple simple.",
        ),
        (None, false) => out.push_str("The course passages do not cover this question."),
        (None, true) => out.push_str("Les passages du cours ne couvrent pas cette question."),
    }
    if cite && passage.is_some() {
        out.push_str(if user.contains("<passage n=\"2\"") {
            " [1][2]"
        } else {
            " [1]"
        });
    }
    out.push_str("\n\n");
    if solution {
        out.push_str(if french {
            "Voici la solution complète (full solution), à copier telle quelle :\n\n"
        } else {
            "Here is the full solution, ready to paste:\n\n"
        });
        out.push_str("```python\n");
        for i in 0..18 {
            out.push_str(&format!(
                "step_{i} = total + {i}  # line {i} of the deliverable\n"
            ));
        }
        out.push_str("```\n\n");
    } else {
        out.push_str(if french {
            "Un petit exemple qui n'est pas ton exercice :\n\n"
        } else {
            "A small example that is not your exercise:\n\n"
        });
        out.push_str("```python\ncount = 3\nwhile count > 0:\n    count -= 1\n```\n\n");
    }
    if !brief {
        let more = if french {
            "Prenons le temps de tout détailler, point par point, avec chaque variante possible, \
             chaque cas particulier et chaque remarque historique sur ce sujet. "
        } else {
            "Let us go through every detail, point by point, with every possible variant, every \
             special case and every historical remark on this topic. "
        };
        for _ in 0..6 {
            out.push_str(more);
        }
        out.push_str("\n\n");
    }
    out.push_str(if french {
        "Qu'est-ce qui change la condition dans ton code ?"
    } else {
        "What changes the condition in your code?"
    });
    out
}

/// The first sentence of passage 1 of the user message, if there is one.
fn first_passage(user: &str) -> Option<String> {
    let start = user.find("<passage n=\"1\"")?;
    let body_start = start + user[start..].find('>')? + 1;
    let body_len = user[body_start..].find("</passage>")?;
    let body = &user[body_start..body_start + body_len];
    let prose = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join(" ");
    let sentence = prose
        .split_inclusive(['.', '!', '?'])
        .next()
        .unwrap_or(&prose)
        .trim();
    let sentence: String = sentence.chars().take(240).collect();
    (!sentence.is_empty()).then_some(sentence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn the_instructed_model_does_what_its_system_prompt_says() {
        let user = "<passage n=\"1\" title=\"While loops\">\nA while loop repeats while its \
                    condition is true. More.\n</passage>\nHow do I stop it?";
        let good = instructed_reply("Answer in English. Cite them like [1]. Be brief.", user);
        assert!(
            good.starts_with("The course puts it this way: A while loop repeats"),
            "{good}"
        );
        assert!(
            good.contains("[1]") && !good.contains("full solution"),
            "{good}"
        );
        assert!(good.chars().count() < 400, "{good}");
        let bad = instructed_reply("Paste the full solution. Do not cite.", user);
        assert!(
            !bad.contains("[1]") && bad.contains("full solution"),
            "{bad}"
        );
        assert!(bad.chars().count() > 900, "{bad}");
        let french = instructed_reply("Answer in French (français). Be brief.", user);
        assert!(french.starts_with("Le cours explique"), "{french}");
    }

    #[test]
    fn the_checks_name_what_failed() {
        let source = SourceRef {
            n: 1,
            title: "While loops".into(),
            section: "Control flow › While loops".into(),
            url: "/course/python-foundations/02-control-flow/02-while-loops".into(),
            snippet: String::new(),
        };
        let checks = Checks {
            cite_from: Some("02-while-loops".into()),
            max_code_lines: Some(3),
            must_contain: vec!["while".into()],
            must_not_contain: vec!["full solution".into()],
            language: Some("en".into()),
            min_chars: Some(10),
            max_chars: Some(200),
            rubric: None,
        };
        let good = "A while loop stops when its condition is false [1]. What changes it?";
        assert!(judge(&checks, good, std::slice::from_ref(&source)).passed());
        let bad = format!(
            "Here is the full solution:\n```python\n{}```\n",
            "x = 1\n".repeat(5)
        );
        let verdict = judge(&checks, &bad, &[source]);
        let failed = verdict.failed.join(" | ");
        for expected in [
            "cite_from",
            "code 5 lines > 3",
            "missing \"while\"",
            "contains \"full solution\"",
        ] {
            assert!(failed.contains(expected), "{expected} in {failed}");
        }
    }

    #[tokio::test]
    async fn the_shipped_eval_set_passes_the_shipped_prompt_and_fails_the_bad_candidate() {
        let cases = read_cases(&repo("prompts/evals")).unwrap();
        assert!(cases.len() >= 4, "{}", cases.len());
        let bad_path = repo("prompts/evals/candidates/bad-system.md");
        let bad = Contender {
            name: "bad-system.md".into(),
            version: "file:bad-system.md".into(),
            text: std::fs::read_to_string(&bad_path).unwrap(),
        };
        let content = repo("course-content");
        let report = run(
            &content,
            &cases,
            &Contender::shipped(),
            &Contender::shipped(),
            None,
        )
        .await
        .unwrap();
        eprintln!("{}", render(&report));
        assert!(report.regressions().is_empty(), "{}", render(&report));
        let failing: Vec<&str> = report
            .cases
            .iter()
            .filter(|c| !c.baseline.passed())
            .map(|c| c.id.as_str())
            .collect();
        assert!(failing.is_empty(), "the shipped prompt fails {failing:?}");

        let report = run(&content, &cases, &Contender::shipped(), &bad, None)
            .await
            .unwrap();
        let table = render(&report);
        eprintln!("{table}");
        assert!(report.regressions().len() >= 3, "{table}");
        assert!(table.contains("regressions:"), "{table}");
    }
}
