//! Evaluations a course team runs: retrieval quality (recall@k, MRR, latency) per mode over
//! question sets, each on a fresh index of its own content folder, beside a plain BM25
//! baseline ([`baseline`]); the output guard against leaks ([`guard`]); the flag rules on
//! labelled learner messages ([`flags`]); and a candidate system prompt against a baseline on
//! the prompt eval cases ([`prompts`]).
pub mod baseline;
mod cache;
pub mod flags;
pub mod guard;
pub mod prompts;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{RetrievalMode, Settings};
use crate::retrieval::{Retriever, Scope};

/// One line of the questions file.
#[derive(Debug, Deserialize)]
pub struct EvalQuestion {
    pub id: String,
    pub question: String,
    pub expected_files: Vec<String>,
}

/// A question set: a content folder and the questions asked of it.
#[derive(Debug)]
pub struct EvalSet {
    pub name: String,
    pub content: PathBuf,
    pub questions: Vec<EvalQuestion>,
}

/// The folder layout of a set: `<dir>/corpus/` and `<dir>/questions.jsonl`.
pub const SET_CORPUS: &str = "corpus";
pub const SET_QUESTIONS: &str = "questions.jsonl";

impl EvalSet {
    /// A set from a content folder and a questions file, named `name`.
    pub fn from_parts(name: &str, content: &Path, questions: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            content.is_dir(),
            "set {name}: content folder {} is not a folder",
            content.display()
        );
        let questions = read_questions(questions)?;
        Ok(Self {
            name: name.to_string(),
            content: content.to_path_buf(),
            questions,
        })
    }

    /// The sets of a folder holding `corpus/`, `questions.jsonl` and any other question files
    /// (`*.jsonl`) over the same corpus: the first is named after the folder, the others
    /// `folder/stem`.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Vec<Self>> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| dir.display().to_string());
        let main = dir.join(SET_QUESTIONS);
        anyhow::ensure!(
            main.is_file(),
            "set {name}: {} is missing (a set folder holds {SET_CORPUS}/ and {SET_QUESTIONS})",
            main.display()
        );
        let corpus = dir.join(SET_CORPUS);
        let mut sets = vec![Self::from_parts(&name, &corpus, &main)?];
        let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list the set folder {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && *p != main)
            .collect();
        others.sort();
        for path in others {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            sets.push(Self::from_parts(&format!("{name}/{stem}"), &corpus, &path)?);
        }
        Ok(sets)
    }

    /// Every set folder directly under `root` (those holding a questions file), sorted by name.
    pub fn discover(root: &Path) -> anyhow::Result<Vec<Self>> {
        let entries = std::fs::read_dir(root)
            .with_context(|| format!("cannot list the set folder {}", root.display()))?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join(SET_QUESTIONS).is_file())
            .collect();
        dirs.sort();
        let mut sets = Vec::new();
        for dir in dirs {
            sets.extend(Self::from_dir(&dir)?);
        }
        Ok(sets)
    }
}

#[derive(Debug, Serialize)]
pub struct ModeReport {
    /// `bm25`, `dense`, `hybrid` or `baseline`.
    pub mode: String,
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Questions whose expected files were not in the top 10.
    pub misses: Vec<String>,
    /// The 1-based rank of the first expected file, per question id (`None`: not in the top 10).
    pub ranks: Vec<(String, Option<usize>)>,
}

#[derive(Debug, Serialize)]
pub struct RetrievalReport {
    pub set: String,
    pub content_dir: String,
    pub chunks: usize,
    pub ingest_ms: u64,
    pub embedder: String,
    pub modes: Vec<ModeReport>,
    /// Modes that could not run, with the reason.
    pub unavailable: Vec<(RetrievalMode, String)>,
}

pub fn read_questions(path: &Path) -> anyhow::Result<Vec<EvalQuestion>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read questions file {}", path.display()))?;
    parse_questions(&text, &path.display().to_string())
}

/// Questions from JSON Lines `text`; `origin` names the file in errors.
pub fn parse_questions(text: &str, origin: &str) -> anyhow::Result<Vec<EvalQuestion>> {
    let mut questions = Vec::new();
    let mut ids = HashSet::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let question: EvalQuestion = serde_json::from_str(line)
            .with_context(|| format!("{origin} line {}: not a question object", idx + 1))?;
        anyhow::ensure!(
            !question.expected_files.is_empty(),
            "{origin} line {}: expected_files is empty",
            idx + 1
        );
        anyhow::ensure!(
            ids.insert(question.id.clone()),
            "{origin} line {}: id {:?} is used twice",
            idx + 1,
            question.id
        );
        questions.push(question);
    }
    anyhow::ensure!(!questions.is_empty(), "{origin} holds no questions");
    Ok(questions)
}

/// Scores every set in turn (each on its own fresh index).
pub async fn retrieval_sets(
    settings: &Settings,
    sets: &[EvalSet],
) -> anyhow::Result<Vec<RetrievalReport>> {
    let mut reports = Vec::with_capacity(sets.len());
    for set in sets {
        reports.push(
            retrieval(settings, set)
                .await
                .with_context(|| format!("set {}", set.name))?,
        );
    }
    Ok(reports)
}

/// Ingests the set's content into a fresh embedded index and scores every mode the embedders
/// allow, then the plain baseline.
pub async fn retrieval(settings: &Settings, set: &EvalSet) -> anyhow::Result<RetrievalReport> {
    let work = tempfile::tempdir().context("cannot create a temporary index folder")?;
    let mut eval_settings = settings.clone();
    eval_settings.data_dir = work.path().to_path_buf();
    eval_settings.index = crate::config::IndexSettings::Edge {
        path: work.path().join("index"),
    };
    // Document vectors are kept between runs (in the configured data folder); questions are
    // always embedded afresh, so their latency is real.
    let cached = crate::index::build_dense(&eval_settings)?
        .map(|inner| Arc::new(cache::CachedEmbedder::open(inner, &settings.data_dir)));
    let retriever = Retriever::new(
        Arc::new(crate::retrieval::edge_store::EdgeStore::new(
            work.path().join("index"),
        )),
        cached
            .clone()
            .map(|c| c as Arc<dyn crate::retrieval::embed::DenseEmbedder>),
        eval_settings.retrieval.mode,
        eval_settings.retrieval.candidates,
    )
    .with_fusion(crate::retrieval::fusion::FusionWeights::dense_share(
        eval_settings.retrieval.dense_weight,
    ));
    let started = Instant::now();
    let report =
        crate::index::index_dir(&retriever, &eval_settings, &set.content, false, true, None)
            .await?;
    let ingest_ms = started.elapsed().as_millis() as u64;
    if let Some(cached) = &cached
        && let Err(e) = cached.save()
    {
        eprintln!("cannot keep the document vectors for the next run: {e}");
    }
    for (file, reason) in &report.skipped {
        eprintln!("{}: skipped {file}: {reason}", set.name);
    }
    let mut modes = Vec::new();
    let mut unavailable = Vec::new();
    for mode in [
        RetrievalMode::Bm25,
        RetrievalMode::Dense,
        RetrievalMode::Hybrid,
    ] {
        if mode != RetrievalMode::Bm25 && retriever.dense().is_none() {
            unavailable.push((
                mode,
                "no dense embedder (fetch the model or configure one)".into(),
            ));
            continue;
        }
        modes.push(score_mode(&retriever, mode, &set.questions).await?);
    }
    let baseline = baseline::Baseline::build(&set.content, settings.content.max_file_bytes)?;
    modes.push(score_ranked("baseline", &set.questions, |q| {
        Ok(baseline.search(q, 10))
    })?);
    Ok(RetrievalReport {
        set: set.name.clone(),
        content_dir: set.content.display().to_string(),
        chunks: retriever.store().count().await?,
        ingest_ms,
        embedder: retriever.embedder_id(),
        modes,
        unavailable,
    })
}

async fn score_mode(
    retriever: &Retriever,
    mode: RetrievalMode,
    questions: &[EvalQuestion],
) -> anyhow::Result<ModeReport> {
    let scope = Scope::default();
    let mut sources = Vec::with_capacity(questions.len());
    let mut latencies = Vec::with_capacity(questions.len());
    for question in questions {
        let started = Instant::now();
        let passages = retriever
            .search_with_mode(&question.question, &scope, 10, mode)
            .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        sources.push(
            passages
                .into_iter()
                .map(|p| p.chunk.source)
                .collect::<Vec<_>>(),
        );
    }
    let mut sources = sources.into_iter();
    let mut report = score_ranked(&format!("{mode:?}").to_lowercase(), questions, |_| {
        Ok(sources.next().unwrap_or_default())
    })?;
    report.p50_ms = percentile(&mut latencies.clone(), 0.50);
    report.p99_ms = percentile(&mut latencies, 0.99);
    Ok(report)
}

/// Scores ranked source lists (`search` gives the sources of the top passages, best first):
/// a question counts at the rank of the first passage from one of its expected files.
pub fn score_ranked(
    mode: &str,
    questions: &[EvalQuestion],
    mut search: impl FnMut(&str) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<ModeReport> {
    let mut ranks = Vec::with_capacity(questions.len());
    let mut misses = Vec::new();
    let mut latencies = Vec::with_capacity(questions.len());
    for question in questions {
        let expected: HashSet<&str> = question.expected_files.iter().map(String::as_str).collect();
        let started = Instant::now();
        let sources = search(&question.question)?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let rank = sources
            .iter()
            .take(10)
            .position(|s| expected.contains(s.as_str()))
            .map(|i| i + 1);
        if rank.is_none() {
            misses.push(question.id.clone());
        }
        ranks.push((question.id.clone(), rank));
    }
    let n = questions.len().max(1) as f64;
    let recall = |k: usize| {
        ranks
            .iter()
            .filter(|(_, r)| r.is_some_and(|r| r <= k))
            .count() as f64
            / n
    };
    let mrr = ranks
        .iter()
        .map(|(_, r)| r.map_or(0.0, |r| 1.0 / r as f64))
        .sum::<f64>()
        / n;
    Ok(ModeReport {
        mode: mode.to_string(),
        questions: questions.len(),
        recall_at_1: recall(1),
        recall_at_5: recall(5),
        recall_at_10: recall(10),
        mrr,
        p50_ms: percentile(&mut latencies.clone(), 0.50),
        p99_ms: percentile(&mut latencies, 0.99),
        misses,
        ranks,
    })
}

/// The `q` quantile (nearest rank) of `values`.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The reports as one table for people: a row per set and mode.
pub fn render_table(reports: &[RetrievalReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "set {}: content {}  chunks {}  embedder {}  ingest {} ms\n",
            r.set, r.content_dir, r.chunks, r.embedder, r.ingest_ms
        ));
    }
    out.push('\n');
    out.push_str(
        "set                        mode      questions  recall@1  recall@5  recall@10    MRR   p50 ms   p99 ms\n",
    );
    for r in reports {
        for m in &r.modes {
            out.push_str(&format!(
                "{:<26} {:<9} {:>9}  {:>8.3}  {:>8.3}  {:>9.3}  {:>5.3}  {:>7.2}  {:>7.2}\n",
                r.set,
                m.mode,
                m.questions,
                m.recall_at_1,
                m.recall_at_5,
                m.recall_at_10,
                m.mrr,
                m.p50_ms,
                m.p99_ms
            ));
        }
        for (mode, reason) in &r.unavailable {
            out.push_str(&format!(
                "{:<26} {:<9} unavailable: {reason}\n",
                r.set,
                format!("{mode:?}").to_lowercase()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(id: &str, expected: &[&str]) -> EvalQuestion {
        EvalQuestion {
            id: id.into(),
            question: format!("question {id}"),
            expected_files: expected.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_malformed_line_is_named_by_file_and_line() {
        let text =
            "{\"id\": \"a\", \"question\": \"q\", \"expected_files\": [\"x.md\"]}\n\nnot json\n";
        let err = parse_questions(text, "set/questions.jsonl").unwrap_err();
        assert!(
            err.to_string().contains("set/questions.jsonl line 3"),
            "{err}"
        );
    }

    #[test]
    fn empty_expected_files_and_repeated_ids_are_refused() {
        let empty = "{\"id\": \"a\", \"question\": \"q\", \"expected_files\": []}";
        assert!(
            parse_questions(empty, "f")
                .unwrap_err()
                .to_string()
                .contains("f line 1: expected_files is empty")
        );
        let twice = "{\"id\": \"a\", \"question\": \"q\", \"expected_files\": [\"x\"]}\n{\"id\": \"a\", \"question\": \"r\", \"expected_files\": [\"y\"]}";
        assert!(
            parse_questions(twice, "f")
                .unwrap_err()
                .to_string()
                .contains("line 2: id \"a\" is used twice")
        );
        assert!(parse_questions("\n", "f").is_err());
    }

    #[test]
    fn a_set_folder_without_questions_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = EvalSet::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("questions.jsonl is missing"), "{err}");
        std::fs::write(
            dir.path().join(SET_QUESTIONS),
            "{\"id\": \"a\", \"question\": \"q\", \"expected_files\": [\"x.md\"]}",
        )
        .unwrap();
        let err = EvalSet::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
        std::fs::create_dir(dir.path().join(SET_CORPUS)).unwrap();
        assert_eq!(EvalSet::from_dir(dir.path()).unwrap()[0].questions.len(), 1);
        std::fs::write(dir.path().join("pasted.jsonl"), "{\"id\": 1}").unwrap();
        let err = format!("{:#}", EvalSet::from_dir(dir.path()).unwrap_err());
        assert!(
            err.contains("pasted.jsonl line 1: not a question object"),
            "{err}"
        );
    }

    #[test]
    fn a_question_counts_at_the_rank_of_its_first_expected_file() {
        let questions = [
            question("first", &["a.md"]),
            question("third", &["c.md", "z.md"]),
            question("missed", &["q.md"]),
            question("eleventh", &["k.md"]),
        ];
        let ranked = |q: &str| -> Vec<String> {
            let list: &[&str] = match q {
                "question eleventh" => &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k.md"],
                _ => &["a.md", "b.md", "c.md", "a.md"],
            };
            list.iter().map(|s| s.to_string()).collect()
        };
        let report = score_ranked("bm25", &questions, |q| Ok(ranked(q))).unwrap();
        let ranks: Vec<Option<usize>> = report.ranks.iter().map(|(_, r)| *r).collect();
        assert_eq!(ranks, [Some(1), Some(3), None, None]);
        assert_eq!(report.recall_at_1, 0.25);
        assert_eq!(report.recall_at_5, 0.5);
        assert!((report.mrr - (1.0 + 1.0 / 3.0) / 4.0).abs() < 1e-12);
        assert_eq!(report.misses, ["missed", "eleventh"]);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut values, 0.5), 50.0);
        assert_eq!(percentile(&mut values, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }
}
