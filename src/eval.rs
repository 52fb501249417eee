//! Evaluations a course team runs: retrieval quality (recall@k, MRR, latency) per mode over a
//! question set, on a fresh index of a content folder; the output guard against leaks
//! ([`guard`]); and the flag rules on labelled learner messages ([`flags`]).
pub mod flags;
pub mod guard;

use std::collections::HashSet;
use std::path::Path;
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

#[derive(Debug, Serialize)]
pub struct ModeReport {
    pub mode: RetrievalMode,
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Questions whose expected files were not in the top 10.
    pub misses: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RetrievalReport {
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
    let mut questions = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let question: EvalQuestion = serde_json::from_str(line).with_context(|| {
            format!("{} line {}: not a question object", path.display(), idx + 1)
        })?;
        anyhow::ensure!(
            !question.expected_files.is_empty(),
            "{} line {}: expected_files is empty",
            path.display(),
            idx + 1
        );
        questions.push(question);
    }
    anyhow::ensure!(
        !questions.is_empty(),
        "{} holds no questions",
        path.display()
    );
    Ok(questions)
}

/// Ingests `content` into a fresh embedded index and scores every mode the embedders allow.
pub async fn retrieval(
    settings: &Settings,
    content: &Path,
    questions: &[EvalQuestion],
) -> anyhow::Result<RetrievalReport> {
    let work = tempfile::tempdir().context("cannot create a temporary index folder")?;
    let mut eval_settings = settings.clone();
    eval_settings.data_dir = work.path().to_path_buf();
    eval_settings.index = crate::config::IndexSettings::Edge {
        path: work.path().join("index"),
    };
    let retriever = crate::index::build_retriever(&eval_settings).await?;
    let started = Instant::now();
    let report = crate::index::index_dir(&retriever, &eval_settings, content, true, true).await?;
    let ingest_ms = started.elapsed().as_millis() as u64;
    for (file, reason) in &report.skipped {
        eprintln!("skipped {file}: {reason}");
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
        modes.push(score_mode(&retriever, mode, questions).await?);
    }
    Ok(RetrievalReport {
        content_dir: content.display().to_string(),
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
    let mut ranks = Vec::with_capacity(questions.len());
    let mut latencies = Vec::with_capacity(questions.len());
    let mut misses = Vec::new();
    for question in questions {
        let expected: HashSet<&str> = question.expected_files.iter().map(String::as_str).collect();
        let started = Instant::now();
        let passages = retriever
            .search_with_mode(&question.question, &scope, 10, mode)
            .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let rank = passages
            .iter()
            .position(|p| expected.contains(p.chunk.source.as_str()))
            .map(|i| i + 1);
        if rank.is_none() {
            misses.push(question.id.clone());
        }
        ranks.push(rank);
    }
    let n = questions.len() as f64;
    let recall = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    let mrr = ranks
        .iter()
        .map(|r| r.map_or(0.0, |r| 1.0 / r as f64))
        .sum::<f64>()
        / n;
    Ok(ModeReport {
        mode,
        questions: questions.len(),
        recall_at_1: recall(1),
        recall_at_5: recall(5),
        recall_at_10: recall(10),
        mrr,
        p50_ms: percentile(&mut latencies.clone(), 0.50),
        p99_ms: percentile(&mut latencies, 0.99),
        misses,
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

/// The report as a table for people.
pub fn render_table(report: &RetrievalReport) -> String {
    let mut out = format!(
        "content: {}  chunks: {}  embedder: {}  ingest: {} ms\n\n",
        report.content_dir, report.chunks, report.embedder, report.ingest_ms
    );
    out.push_str("mode     questions  recall@1  recall@5  recall@10    MRR   p50 ms   p99 ms\n");
    for m in &report.modes {
        out.push_str(&format!(
            "{:<8} {:>9}  {:>8.3}  {:>8.3}  {:>9.3}  {:>5.3}  {:>7.2}  {:>7.2}\n",
            format!("{:?}", m.mode).to_lowercase(),
            m.questions,
            m.recall_at_1,
            m.recall_at_5,
            m.recall_at_10,
            m.mrr,
            m.p50_ms,
            m.p99_ms
        ));
    }
    for (mode, reason) in &report.unavailable {
        out.push_str(&format!(
            "{:<8} unavailable: {reason}\n",
            format!("{mode:?}").to_lowercase()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut values, 0.5), 50.0);
        assert_eq!(percentile(&mut values, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }
}
