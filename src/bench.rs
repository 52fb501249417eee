//! The benchmarks: `fake_llm` and `load` (the service under many learners, issue 16) and, in
//! this file, `companion bench retrieval`: ingest throughput and query latency per retrieval mode at
//! growing corpus sizes, on the embedded index, printed as figures (not asserted anywhere).
//!
//! The corpus grows synthetically from a real content folder: each synthetic chunk is a real
//! chunk with its sentences reordered, some words swapped for words of other chunks, and a few
//! rare made-up terms, so BM25's vocabulary and postings grow like a real corpus's would.
//! Dense vectors: the model embeds up to `embed_sample` synthetic chunks for real (that is the
//! measured embedding rate); beyond that, vectors are real ones plus noise, so that 100k chunks
//! do not take an hour of CPU and the index still sees distinct, realistic vectors.
//!
//! With the in-process model it also times the model alone: a question on each matrix kernel
//! the CPU runs, and documents; built with `--features candle-reference`, candle's BERT beside
//! them.
pub mod fake_llm;
pub mod load;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::config::{IndexSettings, RetrievalMode, Settings};
use crate::eval::percentile;
use crate::retrieval::chunk::{self, Chunk, ChunkSizes};
use crate::retrieval::minilm::{Kernel, MiniLm};
use crate::retrieval::store::{IndexedPoint, point_id};
use crate::retrieval::{Retriever, Scope, document};

pub struct BenchOptions {
    pub content: PathBuf,
    pub sizes: Vec<usize>,
    /// Questions timed per mode and size.
    pub queries: usize,
    /// Question texts; the chunks' titles when empty.
    pub questions: Vec<String>,
    /// At most this many chunks are embedded by the model per size.
    pub embed_sample: usize,
}

#[derive(Debug, Serialize)]
pub struct ModeLatency {
    pub mode: RetrievalMode,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct QueryLatency {
    /// `lean/<kernel>` or `candle`.
    pub path: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct DocumentRate {
    /// `lean` or `candle`.
    pub path: String,
    pub chunks: usize,
    pub chunks_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct SizeReport {
    pub chunks: usize,
    /// BM25 + index write + commit (optimise, flush), chunks per second.
    pub index_chunks_per_s: f64,
    /// The dense model alone, chunks per second, over `embedded` chunks.
    pub embed_chunks_per_s: Option<f64>,
    pub embedded: usize,
    /// What a real ingest of this many chunks would sustain: embedding and indexing in series.
    pub ingest_chunks_per_s: f64,
    pub modes: Vec<ModeLatency>,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub embedder: String,
    pub base_chunks: usize,
    pub threads: usize,
    /// Query embedding with the in-process model alone, for a 20-word question: the lean
    /// path on each matrix kernel this CPU runs (widest first, the one the service uses), then
    /// (with the `candle-reference` feature) candle's general forward pass for comparison.
    /// Empty without the in-process model.
    pub query_embedding: Vec<QueryLatency>,
    /// Document embedding of real chunks (the first base chunks), chunks per second: the
    /// lean encoder the ingest uses, then (with `candle-reference`) candle's padded batches.
    /// Empty without the model.
    pub document_embedding: Vec<DocumentRate>,
    pub sizes: Vec<SizeReport>,
}

/// The 20-word question the benchmark embeds.
pub const BENCH_QUESTION: &str = "How do I write a for loop in Python that goes over a list and prints each item with its index?";

/// A question with pasted code, longer than the model's 256-token window (so the model reads
/// 256 tokens of it): the case learners hit all the time.
pub fn long_question() -> String {
    let mut code =
        String::from("my function gives the wrong total, where should I read?\n```python\n");
    for i in 0..40 {
        code.push_str(&format!(
            "total_{i} = compute_total(values[{i}], rate={i}.5)\n"
        ));
    }
    code.push_str("```");
    code
}

/// (p50, p99) in milliseconds over `n` synchronous runs of `embed` (after three warm-up runs):
/// what an embedding costs, less the hop to the blocking thread pool.
pub fn latency_ms(n: usize, mut embed: impl FnMut()) -> (f64, f64) {
    for _ in 0..3 {
        embed();
    }
    let n = n.max(1);
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            embed();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[(((n as f64) * q).ceil() as usize).clamp(1, n) - 1];
    (at(0.50), at(0.99))
}

/// Chunks per second embedding `texts` with `embed` (after one warm-up run).
fn chunks_per_s(
    texts: &[String],
    embed: impl Fn(&[String]) -> Result<Vec<Vec<f32>>, crate::retrieval::embed::EmbedError>,
) -> anyhow::Result<f64> {
    embed(texts)?; // warm-up
    let started = Instant::now();
    embed(texts)?;
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
}

/// Tiny deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// The real chunks of every Markdown/text file in `dir`.
pub fn base_chunks(dir: &Path, sizes: ChunkSizes) -> anyhow::Result<Vec<Chunk>> {
    let root = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "content".into());
    let mut chunks = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        let path = entry.path();
        let wanted = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "txt")
        );
        if !entry.file_type().is_file() || !wanted {
            continue;
        }
        let bytes = std::fs::read(path)?;
        let relative = path.strip_prefix(dir).unwrap_or(path);
        if let Ok(doc) = document::parse(relative, &root, &bytes, 10 * 1024 * 1024) {
            chunks.extend(chunk::chunk(&doc, sizes));
        }
    }
    anyhow::ensure!(
        !chunks.is_empty(),
        "{} holds no content to grow a corpus from",
        dir.display()
    );
    Ok(chunks)
}

/// Synthetic chunk number `i` derived from the base chunks.
fn synthetic(base: &[Chunk], i: usize, rng: &mut Rng) -> Chunk {
    let mut chunk = base[i % base.len()].clone();
    let donor = &base[rng.below(base.len())];
    let donor_words: Vec<&str> = donor.text.split_whitespace().collect();
    let mut sentences: Vec<String> = chunk
        .text
        .split_inclusive(['.', '\n'])
        .map(|s| s.to_string())
        .collect();
    for k in (1..sentences.len()).rev() {
        sentences.swap(k, rng.below(k + 1));
    }
    let mut words: Vec<String> = sentences
        .concat()
        .split_whitespace()
        .map(|w| w.to_string())
        .collect();
    for _ in 0..words.len() / 10 {
        let at = rng.below(words.len());
        if !donor_words.is_empty() {
            words[at] = donor_words[rng.below(donor_words.len())].to_string();
        }
    }
    for _ in 0..3 {
        words.push(format!("term{}", rng.below(50_000)));
    }
    chunk.text = words.join(" ");
    chunk.source = format!("synthetic/{i}/{}", chunk.source);
    chunk.chunk_idx = i;
    chunk
}

fn noisy(vector: &[f32], rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = vector.iter().map(|x| x + 0.08 * rng.unit()).collect();
    crate::retrieval::minilm::normalise(&mut v);
    v
}

pub async fn retrieval(settings: &Settings, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let sizes = ChunkSizes {
        max_tokens: settings.content.chunk_tokens,
        overlap_tokens: settings.content.chunk_overlap_tokens,
    };
    let base = base_chunks(&options.content, sizes)?;
    let questions: Vec<String> = if options.questions.is_empty() {
        base.iter().map(|c| c.section_label()).collect()
    } else {
        options.questions.clone()
    };
    let work = tempfile::tempdir().context("cannot create a temporary index folder")?;
    let mut bench_settings = settings.clone();
    bench_settings.data_dir = work.path().to_path_buf();
    let probe = crate::index::build_retriever(&bench_settings).await?;
    let (query_embedding, document_embedding) = match (&settings.embedding.provider, probe.dense())
    {
        (crate::config::EmbeddingProvider::Local { model_dir }, Some(_)) => {
            let dir = model_dir.clone();
            let texts: Vec<String> = base.iter().take(64).map(|c| c.embedding_text()).collect();
            tokio::task::spawn_blocking(move || {
                let model = MiniLm::load(&dir)?;
                let queries = query_latencies(&dir, &model)?;
                let documents = vec![DocumentRate {
                    path: "lean".into(),
                    chunks: texts.len(),
                    chunks_per_s: chunks_per_s(&texts, |t| model.embed_blocking(t))?,
                }];
                drop(model);
                #[cfg(feature = "candle-reference")]
                let (queries, documents) = with_candle_figures(&dir, &texts, queries, documents)?;
                anyhow::Ok((queries, documents))
            })
            .await??
        }
        _ => (Vec::new(), Vec::new()),
    };
    let mut report = BenchReport {
        embedder: probe.embedder_id(),
        base_chunks: base.len(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        query_embedding,
        document_embedding,
        sizes: Vec::new(),
    };
    drop(probe);
    for (round, &size) in options.sizes.iter().enumerate() {
        bench_settings.index = IndexSettings::Edge {
            path: work.path().join(format!("index-{round}")),
        };
        let retriever = crate::index::build_retriever(&bench_settings).await?;
        eprintln!("bench: {size} chunks");
        report
            .sizes
            .push(one_size(&retriever, &base, size, &questions, options).await?);
    }
    Ok(report)
}

/// Query embedding latency on each kernel this CPU runs (`widest`, the model as the service
/// loads it, first).
fn query_latencies(dir: &Path, widest: &MiniLm) -> anyhow::Result<Vec<QueryLatency>> {
    let mut out = Vec::new();
    let widest_exact = Kernel::available()
        .into_iter()
        .find(|k| !k.rounds_to_bf16());
    for (i, kernel) in Kernel::available().into_iter().enumerate() {
        let narrower;
        let model = if i == 0 {
            widest
        } else {
            narrower = MiniLm::load_with_kernel(dir, kernel)?;
            &narrower
        };
        // The kernel the service runs gets the full count; the narrower ones are context.
        let runs = if i == 0 { 200 } else { 30 };
        let (p50_ms, p99_ms) = latency_ms(runs, || {
            model
                .embed_query_blocking(BENCH_QUESTION)
                .expect("embedding");
        });
        out.push(QueryLatency {
            path: format!("lean/{}", kernel.name()),
            p50_ms,
            p99_ms,
        });
        // The long question on the service's kernel and, where that one rounds to bfloat16,
        // on the widest exact one too (what BF16 buys).
        if i == 0 || widest_exact == Some(kernel) {
            // The long question whole (256 tokens), then as retrieval embeds it: its prose
            // and the head of its code (`retrieval::query::dense_text`).
            let long = long_question();
            let searched = crate::retrieval::query::dense_text(&long).into_owned();
            for (label, text) in [("256 tokens", &long), ("256, as searched", &searched)] {
                let (p50_ms, p99_ms) = latency_ms(50, || {
                    model.embed_query_blocking(text).expect("embedding");
                });
                out.push(QueryLatency {
                    path: format!("lean/{} {label}", kernel.name()),
                    p50_ms,
                    p99_ms,
                });
            }
        }
    }
    Ok(out)
}

/// `queries` and `documents` followed by candle's BERT on the same model files: its query
/// latency and document rate, the figures the lean encoder is compared with.
#[cfg(feature = "candle-reference")]
fn with_candle_figures(
    dir: &Path,
    texts: &[String],
    mut queries: Vec<QueryLatency>,
    mut documents: Vec<DocumentRate>,
) -> anyhow::Result<(Vec<QueryLatency>, Vec<DocumentRate>)> {
    let reference = crate::retrieval::minilm::Reference::load(dir)?;
    let (p50_ms, p99_ms) = latency_ms(100, || {
        reference
            .embed_blocking(&[BENCH_QUESTION])
            .expect("embedding");
    });
    queries.push(QueryLatency {
        path: "candle".into(),
        p50_ms,
        p99_ms,
    });
    documents.push(DocumentRate {
        path: "candle".into(),
        chunks: texts.len(),
        chunks_per_s: chunks_per_s(texts, |t| reference.embed_blocking(t))?,
    });
    Ok((queries, documents))
}

async fn one_size(
    retriever: &Retriever,
    base: &[Chunk],
    size: usize,
    questions: &[String],
    options: &BenchOptions,
) -> anyhow::Result<SizeReport> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ size as u64);
    let chunks: Vec<Chunk> = (0..size).map(|i| synthetic(base, i, &mut rng)).collect();

    // Dense vectors: a real sample (timed), the rest derived from it.
    let mut embed_rate = None;
    let mut embedded = 0;
    let dense: Option<Vec<Vec<f32>>> = match retriever.dense() {
        Some(embedder) => {
            let sample = size.min(options.embed_sample.max(1));
            let texts: Vec<String> = chunks[..sample]
                .iter()
                .map(|c| c.embedding_text())
                .collect();
            let started = Instant::now();
            let real = embedder.embed_documents(texts).await?;
            embed_rate = Some(sample as f64 / started.elapsed().as_secs_f64());
            embedded = sample;
            let mut all = real.clone();
            for _ in sample..size {
                all.push(noisy(&real[rng.below(real.len())], &mut rng));
            }
            Some(all)
        }
        None => None,
    };

    retriever.store().prepare(retriever.schema(), true).await?;
    let started = Instant::now();
    let mut points = Vec::with_capacity(1024);
    for (i, chunk) in chunks.into_iter().enumerate() {
        points.push(IndexedPoint {
            id: point_id(&chunk.source, None, i),
            sparse: retriever.bm25().embed_document(&chunk.embedding_text()),
            dense: dense.as_ref().map(|d| d[i].clone()),
            learner: None,
            chunk,
        });
        if points.len() == 1024 {
            retriever
                .store()
                .upsert(std::mem::take(&mut points))
                .await?;
        }
    }
    retriever.store().upsert(points).await?;
    retriever.store().commit().await?;
    let index_rate = size as f64 / started.elapsed().as_secs_f64();
    let ingest_rate = match embed_rate {
        Some(embed) => 1.0 / (1.0 / embed + 1.0 / index_rate),
        None => index_rate,
    };

    let mut modes = Vec::new();
    for mode in [
        RetrievalMode::Bm25,
        RetrievalMode::Dense,
        RetrievalMode::Hybrid,
    ] {
        if mode != RetrievalMode::Bm25 && retriever.dense().is_none() {
            continue;
        }
        let scope = Scope::default();
        for q in questions.iter().take(5) {
            retriever.search_with_mode(q, &scope, 5, mode).await?;
        }
        let mut times = Vec::with_capacity(options.queries);
        for i in 0..options.queries {
            let q = &questions[i % questions.len()];
            let started = Instant::now();
            retriever.search_with_mode(q, &scope, 5, mode).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        modes.push(ModeLatency {
            mode,
            p50_ms: percentile(&mut times.clone(), 0.50),
            p99_ms: percentile(&mut times, 0.99),
        });
    }
    Ok(SizeReport {
        chunks: size,
        index_chunks_per_s: index_rate,
        embed_chunks_per_s: embed_rate,
        embedded,
        ingest_chunks_per_s: ingest_rate,
        modes,
    })
}

/// What the benchmark prints, without the `candle-reference` feature, where candle's figures
/// would be.
const CANDLE_HINT: &str = "candle's figures beside these: cargo run --release --features candle-reference -- bench retrieval ...";

pub fn render(report: &BenchReport) -> String {
    let mut out = format!(
        "embedder: {}  base chunks: {}  threads: {}\n",
        report.embedder, report.base_chunks, report.threads
    );
    if !report.query_embedding.is_empty() {
        out.push_str(
            "query embedding, in-process model (p50/p99 ms): a 20-word question, then one with pasted code (256 tokens)\n",
        );
        let best = report.query_embedding[0].p50_ms;
        for q in &report.query_embedding {
            out.push_str(&format!(
                "  {:<32} {:>7.2} / {:>7.2}   {:>5.2}× the first line's p50\n",
                q.path,
                q.p50_ms,
                q.p99_ms,
                q.p50_ms / best
            ));
        }
    }
    match report.document_embedding.as_slice() {
        [lean, candle, ..] => out.push_str(&format!(
            "document embedding, {} real chunks: lean {:.1} ch/s, candle {:.1} ch/s ({:.2}× candle)\n",
            lean.chunks,
            lean.chunks_per_s,
            candle.chunks_per_s,
            lean.chunks_per_s / candle.chunks_per_s
        )),
        [lean] => out.push_str(&format!(
            "document embedding, {} real chunks: lean {:.1} ch/s\n",
            lean.chunks, lean.chunks_per_s
        )),
        [] => {}
    }
    if !report.query_embedding.is_empty() && !cfg!(feature = "candle-reference") {
        out.push_str(CANDLE_HINT);
        out.push('\n');
    }
    out.push_str(
        "\n  chunks  ingest ch/s  embed ch/s (n)   index ch/s   bm25 p50/p99 ms   dense p50/p99 ms  hybrid p50/p99 ms\n",
    );
    for s in &report.sizes {
        let lat = |mode: RetrievalMode| {
            s.modes
                .iter()
                .find(|m| m.mode == mode)
                .map_or("-".to_string(), |m| {
                    format!("{:.2}/{:.2}", m.p50_ms, m.p99_ms)
                })
        };
        out.push_str(&format!(
            "{:>8}  {:>11.0}  {:>14}  {:>11.0}  {:>16}  {:>17}  {:>17}\n",
            s.chunks,
            s.ingest_chunks_per_s,
            s.embed_chunks_per_s
                .map_or("-".to_string(), |r| format!("{r:.0} ({})", s.embedded)),
            s.index_chunks_per_s,
            lat(RetrievalMode::Bm25),
            lat(RetrievalMode::Dense),
            lat(RetrievalMode::Hybrid),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_chunks_are_distinct_and_keep_their_metadata() {
        let base = vec![Chunk {
            source: "a.md".into(),
            course: "c".into(),
            chapter: "1".into(),
            chapter_title: "One".into(),
            title: "Loops".into(),
            heading_path: vec!["Loops".into()],
            url: "/course/c/a".into(),
            kind: "course".into(),
            chunk_idx: 0,
            text: "A loop repeats. A while loop checks first. A for loop walks a list.".into(),
        }];
        let mut rng = Rng(7);
        let a = synthetic(&base, 0, &mut rng);
        let b = synthetic(&base, 1, &mut rng);
        assert_ne!(a.text, b.text);
        assert_ne!(a.source, b.source);
        assert_eq!(a.course, "c");
        assert!(a.text.contains("loop"));
    }

    #[test]
    #[cfg(not(feature = "candle-reference"))]
    fn without_candle_the_report_says_how_to_get_its_figures() {
        let report = BenchReport {
            embedder: "minilm:all-MiniLM-L6-v2".into(),
            base_chunks: 1,
            threads: 2,
            query_embedding: vec![QueryLatency {
                path: "lean/avx2".into(),
                p50_ms: 5.0,
                p99_ms: 6.0,
            }],
            document_embedding: vec![DocumentRate {
                path: "lean".into(),
                chunks: 64,
                chunks_per_s: 28.0,
            }],
            sizes: Vec::new(),
        };
        let text = render(&report);
        assert!(text.contains("lean 28.0 ch/s\n"), "{text}");
        let mentions: Vec<&str> = text.lines().filter(|l| l.contains("candle")).collect();
        assert_eq!(mentions, vec![CANDLE_HINT], "{text}");
    }

    #[test]
    #[ignore = "benchmark; run with --ignored --nocapture"]
    fn query_latency_is_printed() {
        let Some(m) = crate::retrieval::minilm::fetched::model() else {
            return;
        };
        let (p50, p99) = latency_ms(200, || {
            m.embed_query_blocking(BENCH_QUESTION).expect("embedding");
        });
        println!("minilm query latency over 200 runs: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
}
