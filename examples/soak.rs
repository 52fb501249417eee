//! The soak run (not a CI test): the service in-process, answering from a fake LLM that fails
//! a share of its requests (429 with Retry-After, 500, 503, a stream dropped before or after its
//! first token) and stalls another share; N simulated learners over real WebSockets for M
//! minutes (connect, ask, read the stream to `done` or an error, think, ask again; some press
//! stop). At the end the service is stopped gracefully and the database is checked: every
//! acknowledged question has a stored answer that is complete, cancelled or explicitly failed,
//! none missing or left `streaming`, and every answer streamed as complete is stored with the
//! very text the learner saw. Prints questions, answers, failures by kind and the first-token
//! latency the service added; exits non-zero if anything was lost.
//!
//! ```sh
//! cargo run --release --example soak -- --learners 500 --minutes 10
//! ```
//!
//! An example rather than a `companion` subcommand: it carries the tests' fake LLM (shared with
//! them, so the faults injected are the ones the tests exercise) and a WebSocket client, neither
//! of which belongs in the service's binary.
#[path = "../tests/api/helpers/fake_llm.rs"]
mod fake_llm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use companion::auth::{Role, TokenKeys, claims_for};
use companion::config::{EmbeddingProvider, Settings};
use companion::http::ws::protocol::{ClientFrame, ErrorCode, ServerFrame};
use companion::startup::Application;
use fake_llm::{Chaos, FakeLlm, FakeScript};
use futures::{SinkExt, StreamExt};
use secrecy::SecretString;
use sqlx::Row;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Soak the companion: simulated learners against a faulty fake LLM")]
struct Args {
    /// Simulated learners, each on its own WebSocket.
    #[arg(long, default_value_t = 500)]
    learners: usize,
    /// How long learners keep asking, in minutes (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Share of LLM requests that fail (429, 500, 503, dropped stream).
    #[arg(long, default_value_t = 0.05)]
    fail_rate: f64,
    /// Share of LLM requests that stall (before the first token or mid-stream).
    #[arg(long, default_value_t = 0.01)]
    stall_rate: f64,
    /// How long a stalled request stays silent, in seconds.
    #[arg(long, default_value_t = 30)]
    stall_secs: u64,
    /// Share of answers the learner stops after the first delta.
    #[arg(long, default_value_t = 0.05)]
    cancel_rate: f64,
    /// A learner's think time between questions: uniform in [min, max] milliseconds.
    #[arg(long, default_value_t = 2000)]
    think_min_ms: u64,
    #[arg(long, default_value_t = 8000)]
    think_max_ms: u64,
    /// The course content the service indexes.
    #[arg(long, default_value = "course-content")]
    content: PathBuf,
    /// A postgres:// URL instead of SQLite in a temp dir (its schema must be empty or a
    /// companion one).
    #[arg(long)]
    database_url: Option<String>,
    /// Seed of the fake LLM's faults.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const QUESTIONS: &[&str] = &[
    "How do I stop a while loop?",
    "What is the difference between a list and a tuple?",
    "How do I read a file line by line?",
    "What does a dictionary do?",
    "Why does my function return None?",
    "How do I loop over a list with its index?",
    "What is a variable?",
    "How do I handle an exception?",
];

/// What one learner saw of one question.
#[derive(Debug, Default, Clone)]
struct Outcome {
    client_id: String,
    question_id: Option<String>,
    answer_id: Option<String>,
    status: Option<String>,
    errors: Vec<ErrorCode>,
    text: String,
    sent_at: Option<Instant>,
    first_delta_at: Option<Instant>,
    cancelled: bool,
    /// No `done` or final error came within the frame timeout.
    stuck: bool,
}

/// Error codes after which the same ask still gets its `done`.
fn followed_by_done(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::LlmUnavailable | ErrorCode::LlmTimeout | ErrorCode::AnswerTooLong
    )
}

const FRAME_TIMEOUT: Duration = Duration::from_secs(180);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.learners > 0, "--learners must be positive");
    anyhow::ensure!(args.minutes > 0.0, "--minutes must be positive");
    anyhow::ensure!(
        args.think_min_ms <= args.think_max_ms,
        "--think-min-ms must be at most --think-max-ms"
    );
    anyhow::ensure!(
        args.content.is_dir(),
        "--content {} is not a folder (run from the repository root)",
        args.content.display()
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "companion=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let lost = runtime.block_on(soak(args))?;
    if lost > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn soak(args: Args) -> anyhow::Result<usize> {
    let temp = tempfile::tempdir()?;
    let secret = format!("soak-{}", uuid::Uuid::new_v4().simple());
    let llm = FakeLlm::start(FakeScript {
        chunks: (0..12)
            .map(|i| format!("word{i} of the answer, "))
            .collect(),
        delay: Duration::from_millis(40),
        fail_status: None,
    })
    .await;
    llm.set_chaos(Chaos {
        fail: args.fail_rate,
        stall: args.stall_rate,
        stall_for: Duration::from_secs(args.stall_secs),
        seed: args.seed,
    });
    let mut settings = Settings::defaults(temp.path());
    settings.listen = "127.0.0.1:0".parse()?;
    settings.shutdown_grace = Duration::from_secs(60);
    settings.auth.secret = Some(SecretString::from(secret.clone()));
    settings.content.dir = args.content.clone();
    settings.embedding.provider = EmbeddingProvider::None;
    settings.demo = None;
    // Learners ask every few seconds: well under this.
    settings.limits.asks_per_minute = 1000;
    // Every simulated learner connects from loopback: one address for all of them.
    settings.sockets.max_connections_per_address = (args.learners * 2).max(50);
    settings.sockets.max_connections = settings.sockets.max_connections.max(args.learners * 2);
    settings.database.max_connections = 16;
    if let Some(url) = &args.database_url {
        settings.database.url = url.clone();
    }
    settings.use_llm(&llm.base_url(), "soak-key", "fake-model");
    let bounds = settings.llm.as_mut().expect("an llm");
    bounds.first_token_timeout = Duration::from_secs(5);
    bounds.idle_timeout = Duration::from_secs(10);
    bounds.answer_deadline = Duration::from_secs(60);
    let database_url = settings.database.url.clone();

    let app = Application::build(settings)
        .await
        .context("the service did not start")?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], app.port()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    wait_ready(addr).await?;
    println!(
        "soak: {} learners for {} min against a fake LLM failing {:.1}% and stalling {:.1}% of requests",
        args.learners,
        args.minutes,
        args.fail_rate * 100.0,
        args.stall_rate * 100.0
    );

    let keys = Arc::new(TokenKeys::new(&SecretString::from(secret), 0));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let args = Arc::new(args);
    let mut learners = Vec::new();
    for n in 0..args.learners {
        let (keys, outcomes, args) = (keys.clone(), outcomes.clone(), args.clone());
        learners.push(tokio::spawn(async move {
            // Arrivals spread over the first five seconds.
            let stagger = 5000 * n as u64 / args.learners as u64;
            tokio::time::sleep(Duration::from_millis(stagger)).await;
            if let Err(error) = learner(n, addr, &keys, &args, end, &outcomes).await {
                eprintln!("learner {n}: {error:#}");
            }
        }));
    }
    for learner in learners {
        let _ = learner.await;
    }
    let asking = started.elapsed();
    let _ = stop.send(());
    server.await??;
    let outcomes = outcomes.lock().unwrap().clone();
    let check = check_database(&database_url, &outcomes).await?;
    Ok(report(&outcomes, &llm, &check, asking))
}

async fn wait_ready(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..1200 {
        if let Ok(response) = client.get(format!("http://{addr}/readyz")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the service never became ready")
}

fn random_unit() -> f64 {
    rand::random::<f64>()
}

/// One learner: asks until `end`, each answer read to its end.
async fn learner(
    n: usize,
    addr: std::net::SocketAddr,
    keys: &TokenKeys,
    args: &Args,
    end: Instant,
    outcomes: &Mutex<Vec<Outcome>>,
) -> anyhow::Result<()> {
    let id = format!("soak-{n}");
    let token = keys.mint(&claims_for(
        Role::Learner,
        &id,
        Some(id.clone()),
        None,
        86_400,
    ))?;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
        .await
        .context("connect")?;
    // `ready` first.
    next_frame(&mut socket).await?;
    let mut asked = 0usize;
    while Instant::now() < end {
        let client_id = format!("{id}-{asked}");
        let question = QUESTIONS[(n + asked) % QUESTIONS.len()];
        let frame = ClientFrame::Ask {
            id: client_id.clone(),
            text: format!("{question} [ask:{client_id}]"),
            page: None,
            course: None,
        };
        let mut outcome = Outcome {
            client_id: client_id.clone(),
            sent_at: Some(Instant::now()),
            ..Default::default()
        };
        socket
            .send(Message::Text(serde_json::to_string(&frame)?.into()))
            .await?;
        let cancel = random_unit() < args.cancel_rate;
        loop {
            let frame = match tokio::time::timeout(FRAME_TIMEOUT, next_frame(&mut socket)).await {
                Ok(frame) => frame?,
                Err(_) => {
                    outcome.stuck = true;
                    break;
                }
            };
            match frame {
                ServerFrame::Ack { message_id, .. } => outcome.question_id = Some(message_id),
                ServerFrame::Delta { text, .. } => {
                    if outcome.first_delta_at.is_none() {
                        outcome.first_delta_at = Some(Instant::now());
                        if cancel {
                            outcome.cancelled = true;
                            let stop = ClientFrame::Cancel {
                                id: client_id.clone(),
                            };
                            socket
                                .send(Message::Text(serde_json::to_string(&stop)?.into()))
                                .await?;
                        }
                    }
                    outcome.text.push_str(&text);
                }
                ServerFrame::Done {
                    message_id, status, ..
                } => {
                    outcome.answer_id = Some(message_id);
                    outcome.status = Some(status);
                    break;
                }
                ServerFrame::Error { code, .. } => {
                    outcome.errors.push(code);
                    // `unknown_ask`: a cancel that raced the end; the `done` still comes.
                    if !followed_by_done(code) && code != ErrorCode::UnknownAsk {
                        break;
                    }
                }
                _ => {}
            }
        }
        let stuck = outcome.stuck;
        outcomes.lock().unwrap().push(outcome);
        asked += 1;
        if stuck {
            break;
        }
        let think = args.think_min_ms
            + (random_unit() * (args.think_max_ms - args.think_min_ms) as f64) as u64;
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    let _ = socket.close(None).await;
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_frame(socket: &mut Socket) -> anyhow::Result<ServerFrame> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
            Some(Ok(Message::Close(_))) | None => anyhow::bail!("the socket closed"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// What the database holds for the acknowledged questions.
#[derive(Debug, Default)]
struct Check {
    acknowledged: usize,
    question_missing: usize,
    by_status: BTreeMap<String, usize>,
    answer_missing: usize,
    /// Answers whose stored status or text differs from what the learner was sent.
    mismatched: Vec<String>,
}

impl Check {
    fn lost(&self) -> usize {
        self.question_missing
            + self.answer_missing
            + self.by_status.get("streaming").copied().unwrap_or(0)
            + self.by_status.get("interrupted").copied().unwrap_or(0)
            + self.mismatched.len()
    }
}

async fn check_database(url: &str, outcomes: &[Outcome]) -> anyhow::Result<Check> {
    let store = companion::store::Store::connect(url, 2)
        .await
        .context("cannot open the database to check it")?;
    let rows = sqlx::query("SELECT id, role, status, reply_to, text FROM messages")
        .fetch_all(store.pool())
        .await?;
    let mut questions = std::collections::HashSet::new();
    let mut answers: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for row in &rows {
        let id: String = row.try_get("id")?;
        let role: String = row.try_get("role")?;
        if role == "learner" {
            questions.insert(id);
        } else if let Some(reply_to) = row.try_get::<Option<String>, _>("reply_to")? {
            let status: String = row.try_get("status")?;
            let text: String = row.try_get("text")?;
            answers.insert(reply_to, (id, status, text));
        }
    }
    store.close().await;
    let mut check = Check::default();
    for outcome in outcomes {
        let Some(question) = &outcome.question_id else {
            continue;
        };
        check.acknowledged += 1;
        if !questions.contains(question) {
            check.question_missing += 1;
            continue;
        }
        let Some((answer_id, status, text)) = answers.get(question) else {
            check.answer_missing += 1;
            continue;
        };
        *check.by_status.entry(status.clone()).or_insert(0) += 1;
        if let Some(sent) = &outcome.status {
            let same = Some(answer_id) == outcome.answer_id.as_ref()
                && sent == status
                && *text == outcome.text;
            if !same {
                check.mismatched.push(format!(
                    "{}: sent {sent} ({} chars), stored {status} ({} chars)",
                    outcome.client_id,
                    outcome.text.len(),
                    text.len()
                ));
            }
        }
    }
    Ok(check)
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// Prints the report; the number of questions lost.
fn report(outcomes: &[Outcome], llm: &FakeLlm, check: &Check, asking: Duration) -> usize {
    let sent = outcomes.len();
    let acked = outcomes.iter().filter(|o| o.question_id.is_some()).count();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in outcomes {
        if outcome.question_id.is_none() {
            let code = outcome
                .errors
                .last()
                .map_or("none".to_string(), |c| code_name(*c));
            *refused.entry(code).or_insert(0) += 1;
        }
        if let Some(status) = &outcome.status {
            *by_status.entry(status.clone()).or_insert(0) += 1;
        }
        if outcome.question_id.is_some() {
            for code in &outcome.errors {
                *failures.entry(code_name(*code)).or_insert(0) += 1;
            }
        }
    }
    let stuck = outcomes.iter().filter(|o| o.stuck).count();
    let cancels = outcomes.iter().filter(|o| o.cancelled).count();
    println!(
        "asked for {:.0} s: {sent} questions sent, {acked} acknowledged",
        asking.as_secs_f64()
    );
    if !refused.is_empty() {
        println!("refused (not acknowledged), by code: {refused:?}");
    }
    println!("answers streamed, by status: {by_status:?} ({cancels} stopped by the learner)");
    println!("answer failures sent to learners, by code: {failures:?}");
    if stuck > 0 {
        println!("no done within {} s: {stuck}", FRAME_TIMEOUT.as_secs());
    }
    let served = llm.served();
    println!(
        "fake LLM: {} requests, by behaviour: {:?}",
        served.len(),
        llm.served_by_kind()
    );

    // First-token latency the service added: from `ask` to the first delta, less the fake
    // LLM's own delay before its first token; over answers that took one LLM request (retried
    // ones add the policy's waits, counted apart).
    let mut attempts: BTreeMap<&str, Vec<&fake_llm::Served>> = BTreeMap::new();
    for s in &served {
        if let Some(tag) = &s.tag {
            attempts.entry(tag.as_str()).or_default().push(s);
        }
    }
    let mut added = Vec::new();
    let mut retried = Vec::new();
    for outcome in outcomes {
        let (Some(sent_at), Some(first)) = (outcome.sent_at, outcome.first_delta_at) else {
            continue;
        };
        let total = first.duration_since(sent_at);
        match attempts.get(outcome.client_id.as_str()).map(Vec::as_slice) {
            Some([one]) => added.push(total.saturating_sub(one.own_first_token_delay).as_millis()),
            Some(_) => retried.push(total.as_millis()),
            None => {}
        }
    }
    added.sort_unstable();
    retried.sort_unstable();
    println!(
        "first-token latency added by the service: p50 {} ms, p99 {} ms (over {} answers with one LLM request)",
        percentile(&added, 0.5),
        percentile(&added, 0.99),
        added.len()
    );
    if !retried.is_empty() {
        println!(
            "first token after LLM retries: p50 {} ms, p99 {} ms (over {} answers)",
            percentile(&retried, 0.5),
            percentile(&retried, 0.99),
            retried.len()
        );
    }
    println!(
        "database: {} acknowledged questions; their answers stored, by status: {:?}; question missing {}, answer missing {}, status or text differing from what was streamed {}",
        check.acknowledged,
        check.by_status,
        check.question_missing,
        check.answer_missing,
        check.mismatched.len()
    );
    for line in check.mismatched.iter().take(10) {
        println!("  differs: {line}");
    }
    let lost = check.lost();
    if lost == 0 {
        println!(
            "PASS: every acknowledged question has a complete, cancelled or failed answer; none lost"
        );
    } else {
        println!("FAIL: {lost} acknowledged questions lost, unfinished or stored differently");
    }
    lost
}
