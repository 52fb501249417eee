//! The command line: each subcommand is one library call.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::auth::{Role, claims_for};
use crate::config::{Overrides, Settings};
use crate::index::{build_retriever, index_dir, reindex_projects, shared_database};
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(name = "companion", version, about = "An AI learning companion")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone, Default)]
struct Common {
    /// A TOML file layered over the defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the index, transcripts and secrets live.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the companion (WebSocket, demo page, APIs).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address and port, e.g. 127.0.0.1:8080 (port 0 picks one).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Index a content folder (the configured one by default) and report what was done.
    Ingest {
        #[command(flatten)]
        common: Common,
        /// Content folder to index instead of the configured one.
        #[arg(long)]
        content: Option<PathBuf>,
        /// Drop the index and build it from scratch.
        #[arg(long)]
        rebuild: bool,
    },
    /// Measure retrieval (and, later, answers) on a question set.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Measure ingest throughput and query latency on a synthetic corpus of growing size.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Print a signed token for local use and tests.
    Token {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        course: Option<String>,
        /// Lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// recall@1/5/10, MRR and latency for bm25, dense and hybrid retrieval and a plain BM25
    /// baseline, a row per set and mode. Without --set or --content: the sample course's set
    /// and every set folder under tests/eval.
    Retrieval {
        #[command(flatten)]
        common: Common,
        /// A set folder holding corpus/ and questions.jsonl (repeatable).
        #[arg(long)]
        set: Vec<PathBuf>,
        /// Content folder to index into a fresh, temporary index (with --questions).
        #[arg(long, requires = "questions")]
        content: Option<PathBuf>,
        /// JSON Lines: {"id", "question", "expected_files": [paths relative to --content]}.
        #[arg(long, requires = "content")]
        questions: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Leaks caught and missed, false positives and added delay of the output guard: requests
    /// for the graded solution played against a model scripted to comply, and legitimate
    /// answers that must pass. Exits non-zero past the thresholds.
    Guard {
        /// JSON Lines: {"id", "kind": "leak"|"legit", "variant", "locale", "turns": [{"learner", "model"}]}.
        #[arg(long, default_value = "tests/eval/guard/cases.jsonl")]
        set: PathBuf,
        /// The course content holding the policies and reference solutions.
        #[arg(long, default_value = "course-content")]
        content: PathBuf,
        #[arg(long, default_value = "python-foundations")]
        course: String,
        #[arg(long, default_value = "budget-tracker")]
        project: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Precision and recall per kind and language of the flags read in learners' messages,
    /// ordinary messages flagged, work per message. Exits non-zero below the targets.
    Flags {
        #[command(flatten)]
        common: Common,
        /// JSON Lines: {"id", "lang", "kinds": ["human_requested"|"discouraged"|"distress"], "text"}.
        #[arg(long, default_value = "tests/eval/flags/messages.jsonl")]
        set: PathBuf,
        /// The keyword rules alone (the figures before the classifier).
        #[arg(long)]
        rules_only: bool,
        /// Score the example bank on itself instead of the set, each example read by a head
        /// trained without its fold, in this many folds (how the parameters are chosen).
        #[arg(long)]
        cross_validate: Option<usize>,
        /// An example bank instead of the built-in one ({"kinds", "lang", "text"} lines).
        #[arg(long)]
        examples: Option<PathBuf>,
        /// A classifier parameter, `name=value` (repeatable): a kind's threshold
        /// (`discouraged=0.6`), `rules`, `segments`, `segment_margin`, `normalise`, `negation`,
        /// `epochs`, `learning_rate`, `l2`, `max_positive_weight`, `lexical_weight`, `dense_weight`.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A system prompt against the prompt eval cases, side by side with a baseline, through
    /// the real answering path: the configured model, else a deterministic fake that follows
    /// the prompt's plain instructions. Exits non-zero when the candidate regresses.
    Prompts {
        #[command(flatten)]
        common: Common,
        /// A template file, or a stored version id (read from the configured database).
        #[arg(long)]
        candidate: String,
        /// The same; `default` is the shipped system prompt.
        #[arg(long, default_value = "default")]
        baseline: String,
        /// A folder of `*.yaml` case lists.
        #[arg(long, default_value = "prompts/evals")]
        set: PathBuf,
        #[arg(long, default_value = "course-content")]
        content: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Ingest chunks/s and bm25/dense/hybrid query latency p50/p99 at each corpus size.
    Retrieval {
        #[command(flatten)]
        common: Common,
        /// Real content the synthetic corpus grows from.
        #[arg(long, default_value = "course-content")]
        content: PathBuf,
        /// Corpus sizes in chunks, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Queries timed per mode and size.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Question texts (the eval's JSON Lines); chunk titles when absent.
        #[arg(long)]
        questions: Option<PathBuf>,
        /// Chunks embedded by the model per size (the rest get derived vectors).
        #[arg(long, default_value_t = 1000)]
        embed_sample: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// An OpenAI-compatible model that streams a fixed answer with a set delay and token rate,
    /// for `bench load` (point a node's `llm.base_url` at it).
    FakeLlm {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Simulated learners over WebSockets against running nodes whose model is `bench fake-llm`.
    Load {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        clients: ClientArgs,
        /// Simulated learners, each on a socket of its own.
        #[arg(long, default_value_t = 100)]
        learners: usize,
        /// Seconds a learner waits after an answer ends before asking again.
        #[arg(long, default_value_t = 10.0)]
        think_secs: f64,
        /// Seconds of asking, after the ramp.
        #[arg(long, default_value_t = 60.0)]
        duration_secs: f64,
        /// Seconds over which learners connect and ask their first question.
        #[arg(long, default_value_t = 10.0)]
        ramp_secs: f64,
        /// Questions (the eval's JSON Lines).
        #[arg(long, default_value = "tests/eval/retrieval-questions.jsonl")]
        questions: PathBuf,
        /// What the fake model does, as given to `bench fake-llm`.
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Idle authenticated sockets: how many a node holds and the RSS each costs it.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        clients: ClientArgs,
        /// Sockets to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Sockets being opened at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
}

#[derive(Debug, Args, Clone)]
struct ModelArgs {
    /// Milliseconds from the request to the first token.
    #[arg(long, default_value_t = 300)]
    first_token_ms: u64,
    /// Tokens per second after the first.
    #[arg(long, default_value_t = 40.0)]
    tokens_per_sec: f64,
    /// Tokens in each answer.
    #[arg(long, default_value_t = 200)]
    answer_tokens: usize,
}

impl ModelArgs {
    fn model(&self) -> anyhow::Result<crate::bench::fake_llm::FakeModel> {
        anyhow::ensure!(
            self.tokens_per_sec > 0.0 && self.tokens_per_sec.is_finite(),
            "--tokens-per-sec must be positive"
        );
        anyhow::ensure!(self.answer_tokens > 0, "--answer-tokens must be positive");
        Ok(crate::bench::fake_llm::FakeModel {
            first_token: std::time::Duration::from_millis(self.first_token_ms),
            tokens_per_sec: self.tokens_per_sec,
            answer_tokens: self.answer_tokens,
        })
    }
}

#[derive(Debug, Args, Clone)]
struct ClientArgs {
    /// A node's base URL; repeat for several nodes (learners are spread over them in turn).
    #[arg(long = "server", default_value = "http://127.0.0.1:8080")]
    servers: Vec<String>,
    /// Each node's process id (same order as --server), for its CPU time and RSS.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Local addresses the clients bind to, in turn: `127.0.0.1`, or a range `127.0.0.1-20`
    /// to pass one address's ephemeral ports and per-address socket cap.
    #[arg(long, default_value = "127.0.0.1")]
    sources: String,
}

impl ClientArgs {
    fn sources(&self) -> anyhow::Result<Vec<std::net::IpAddr>> {
        let bad = || {
            anyhow::anyhow!(
                "--sources {:?}: expected 127.0.0.1 or 127.0.0.1-20",
                self.sources
            )
        };
        let Some((first, last)) = self.sources.split_once('-') else {
            return Ok(vec![self.sources.parse().map_err(|_| bad())?]);
        };
        let first: std::net::Ipv4Addr = first.parse().map_err(|_| bad())?;
        let last: u8 = last.parse().map_err(|_| bad())?;
        let [a, b, c, start] = first.octets();
        anyhow::ensure!(start <= last, bad());
        Ok((start..=last)
            .map(|d| std::net::IpAddr::from([a, b, c, d]))
            .collect())
    }
}

/// Mints learner tokens with the keys of `settings` (the nodes' own secret).
fn minter(settings: &Settings) -> anyhow::Result<crate::bench::load::Mint> {
    let keys = crate::startup::token_keys(settings)?;
    let ttl = settings.auth.token_ttl_secs;
    Ok(std::sync::Arc::new(move |id: &str| {
        keys.mint(&claims_for(Role::Learner, id, None, None, ttl))
            .expect("a learner token signs")
    }))
}

fn load(common: &Common, listen: Option<String>) -> anyhow::Result<Settings> {
    Ok(Settings::load(&Overrides {
        config_file: common.config.clone(),
        listen,
        data_dir: common.data_dir.clone(),
    })?)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "companion=info,tower_http=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { common, listen } => {
            init_tracing();
            let settings = load(&common, listen)?;
            runtime.block_on(async {
                let app = Application::build(settings).await?;
                app.run_until(shutdown_signal()).await
            })
        }
        Command::Ingest {
            common,
            content,
            rebuild,
        } => {
            init_tracing();
            let settings = load(&common, None)?;
            runtime.block_on(async {
                let retriever = build_retriever(&settings).await?;
                let dir = content.unwrap_or_else(|| settings.content.dir.clone());
                let database = shared_database(&settings).await?;
                let shared = database.as_ref().map(|store| (store, "companion ingest"));
                let report = index_dir(&retriever, &settings, &dir, true, rebuild, shared).await?;
                for (file, reason) in &report.skipped {
                    eprintln!("skipped {file}: {reason}");
                }
                // A rebuilt index starts empty: learners' private files go back in.
                if report.rebuilt {
                    let chunks = reindex_projects(&settings, &retriever).await?;
                    if chunks > 0 {
                        println!("indexed learners' project files again ({chunks} chunks)");
                    }
                }
                println!(
                    "indexed {} files ({} chunks), {} unchanged, {} removed, {} skipped in {} ms",
                    report.files_indexed,
                    report.chunks_written,
                    report.files_unchanged,
                    report.files_removed,
                    report.skipped.len(),
                    report.elapsed_ms
                );
                Ok(())
            })
        }
        Command::Eval {
            what:
                EvalCommand::Retrieval {
                    common,
                    set,
                    content,
                    questions,
                    json,
                },
        } => {
            init_tracing();
            let settings = load(&common, None)?;
            let mut sets = Vec::new();
            if let (Some(content), Some(questions)) = (&content, &questions) {
                sets.push(crate::eval::EvalSet::from_parts(
                    "given", content, questions,
                )?);
            }
            for dir in &set {
                sets.extend(crate::eval::EvalSet::from_dir(dir)?);
            }
            if sets.is_empty() {
                sets.push(crate::eval::EvalSet::from_parts(
                    "sample-course",
                    Path::new("course-content"),
                    Path::new("tests/eval/retrieval-questions.jsonl"),
                )?);
                sets.extend(crate::eval::EvalSet::discover(Path::new("tests/eval"))?);
            }
            let reports = runtime.block_on(crate::eval::retrieval_sets(&settings, &sets))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                print!("{}", crate::eval::render_table(&reports));
            }
            Ok(())
        }
        Command::Eval {
            what:
                EvalCommand::Guard {
                    set,
                    content,
                    course,
                    project,
                    json,
                },
        } => {
            init_tracing();
            let cases = crate::eval::guard::read_cases(&set)?;
            let report =
                runtime.block_on(crate::eval::guard::run(&content, &course, &project, &cases))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::eval::guard::render(&report));
            }
            let failures = report.failures();
            anyhow::ensure!(
                failures.is_empty(),
                "the output guard misses its targets: {}",
                failures.join("; ")
            );
            Ok(())
        }
        Command::Eval {
            what:
                EvalCommand::Flags {
                    common,
                    set,
                    rules_only,
                    cross_validate,
                    examples,
                    params: assignments,
                    json,
                },
        } => {
            init_tracing();
            let mut params = crate::review::intent::Params::default();
            for assignment in &assignments {
                params
                    .set(assignment)
                    .map_err(|e| anyhow::anyhow!("--param {e}"))?;
            }
            let reader = if rules_only {
                crate::eval::flags::Reader::Rules
            } else {
                let settings = load(&common, None)?;
                crate::eval::flags::Reader::from_settings(&settings, examples.as_deref(), params)?
            };
            let (name, cases) = if let Some(folds) = cross_validate {
                let name = format!("the example bank ({folds}-fold cross-validation)");
                (name, crate::eval::flags::bank_cases(&reader)?)
            } else {
                let name = set.display().to_string();
                (name, crate::eval::flags::read_cases(&set)?)
            };
            let report = runtime.block_on(crate::eval::flags::run(
                &reader,
                &name,
                &cases,
                cross_validate,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::eval::flags::render(&report));
            }
            let failures = report.failures();
            anyhow::ensure!(
                failures.is_empty(),
                "the flags miss their targets: {}",
                failures.join("; ")
            );
            Ok(())
        }
        Command::Eval {
            what:
                EvalCommand::Prompts {
                    common,
                    candidate,
                    baseline,
                    set,
                    content,
                    json,
                },
        } => {
            init_tracing();
            let settings = load(&common, None)?;
            let report = runtime.block_on(crate::eval::prompts::compare(
                &settings, &candidate, &baseline, &set, &content,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::eval::prompts::render(&report));
            }
            let regressions = report.regressions();
            anyhow::ensure!(
                regressions.is_empty(),
                "the candidate regresses on {}",
                regressions.join(", ")
            );
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Retrieval {
                    common,
                    content,
                    sizes,
                    queries,
                    questions,
                    embed_sample,
                    json,
                },
        } => {
            init_tracing();
            let settings = load(&common, None)?;
            anyhow::ensure!(
                content.is_dir(),
                "--content {} is not a folder",
                content.display()
            );
            anyhow::ensure!(
                !sizes.is_empty() && sizes.iter().all(|&s| s > 0),
                "--sizes must be positive numbers"
            );
            anyhow::ensure!(queries > 0, "--queries must be positive");
            let questions = match questions {
                Some(path) => crate::eval::read_questions(&path)?
                    .into_iter()
                    .map(|q| q.question)
                    .collect(),
                None => Vec::new(),
            };
            let options = crate::bench::BenchOptions {
                content,
                sizes,
                queries,
                questions,
                embed_sample,
            };
            let report = runtime.block_on(crate::bench::retrieval(&settings, &options))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench::render(&report));
            }
            Ok(())
        }
        Command::Bench {
            what: BenchCommand::FakeLlm { listen, model },
        } => {
            init_tracing();
            let model = model.model()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                println!(
                    "fake llm on http://{}/v1: first token {} ms, {} tokens at {}/s",
                    listener.local_addr()?,
                    model.first_token.as_millis(),
                    model.answer_tokens,
                    model.tokens_per_sec
                );
                let served = std::sync::Arc::default();
                tokio::select! {
                    () = crate::bench::fake_llm::serve(listener, model, served) => {}
                    () = shutdown_signal() => {}
                }
                Ok(())
            })
        }
        Command::Bench {
            what:
                BenchCommand::Load {
                    common,
                    clients,
                    learners,
                    think_secs,
                    duration_secs,
                    ramp_secs,
                    questions,
                    model,
                },
        } => {
            let settings = load(&common, None)?;
            let seconds = |name: &str, value: f64| {
                anyhow::ensure!(
                    value.is_finite() && value >= 0.0,
                    "--{name} must be a number of seconds"
                );
                Ok(std::time::Duration::from_secs_f64(value))
            };
            anyhow::ensure!(learners > 0, "--learners must be positive");
            let options = crate::bench::load::LoadOptions {
                servers: clients.servers.clone(),
                server_pids: clients.server_pids.clone(),
                learners,
                think: seconds("think-secs", think_secs)?,
                duration: seconds("duration-secs", duration_secs)?,
                ramp: seconds("ramp-secs", ramp_secs)?,
                questions: crate::eval::read_questions(&questions)?
                    .into_iter()
                    .map(|q| q.question)
                    .collect(),
                sources: clients.sources()?,
                model: model.model()?,
                mint: minter(&settings)?,
            };
            let report = runtime.block_on(crate::bench::load::load(options))?;
            for line in report.lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Idle {
                    common,
                    clients,
                    connections,
                    concurrency,
                },
        } => {
            let settings = load(&common, None)?;
            anyhow::ensure!(clients.servers.len() == 1, "idle: give one --server");
            let options = crate::bench::load::IdleOptions {
                server: clients.servers[0].clone(),
                server_pid: clients.server_pids.first().copied(),
                connections,
                sources: clients.sources()?,
                concurrency,
                mint: minter(&settings)?,
            };
            for line in runtime.block_on(crate::bench::load::idle(options))? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Token {
            common,
            role,
            id,
            name,
            course,
            ttl,
        } => {
            let settings = load(&common, None)?;
            anyhow::ensure!(!id.trim().is_empty(), "--id must not be empty");
            let keys = crate::startup::token_keys(&settings)?;
            let ttl = ttl.unwrap_or(settings.auth.token_ttl_secs);
            let max = settings.auth.max_token_lifetime_secs;
            anyhow::ensure!(
                ttl <= max,
                "--ttl {ttl} is longer than auth.max_token_lifetime_secs ({max}): the token would be refused"
            );
            let claims = claims_for(role, &id, name, course, ttl);
            println!("{}", keys.mint(&claims)?);
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
