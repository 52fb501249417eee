//! The command line: each subcommand is one library call.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::auth::{Role, claims_for};
use crate::config::{Overrides, Settings};
use crate::index::{build_retriever, index_dir, reindex_projects};
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
        /// (`discouraged=0.6`), `rules`, `segments`, `epochs`, `learning_rate`, `l2`,
        /// `max_positive_weight`, `lexical_weight`.
        #[arg(long = "param")]
        params: Vec<String>,
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
                let report = index_dir(&retriever, &settings, &dir, true, rebuild).await?;
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
