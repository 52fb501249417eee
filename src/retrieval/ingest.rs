//! Ingestion of a content folder into the index: incremental by content hash (unchanged files
//! skipped, changed ones replaced, deleted ones removed), refusing bad files one by one.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::Retriever;
use super::chunk::{self, ChunkSizes};
use super::document;
use super::embed::EmbedError;
use super::store::{IndexedPoint, StoreError, point_id};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("content folder {0} does not exist or is not a folder")]
    NoContentDir(String),
    #[error("cannot read the index manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// What an ingest did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestReport {
    pub files_seen: usize,
    pub files_indexed: usize,
    pub files_unchanged: usize,
    pub files_removed: usize,
    /// (source, reason) of every file refused.
    pub skipped: Vec<(String, String)>,
    pub chunks_written: usize,
    pub rebuilt: bool,
    pub elapsed_ms: u64,
}

/// The record of what the index holds: the content files ingested (by hash) and the
/// embedders and chunk sizes that made them. Kept beside an embedded index (a file), or in the
/// shared database for a Qdrant server that several nodes use.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Embedders and chunk sizes that produced the index.
    signature: String,
    files: BTreeMap<String, String>,
}

impl Manifest {
    /// A stored manifest; one that does not parse means nothing is known (a rebuild).
    pub fn from_json(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises")
    }

    /// The manifest file at `path` (none yet: an empty manifest).
    pub fn read(path: &Path) -> Result<Self, IngestError> {
        match std::fs::read_to_string(path) {
            Ok(json) => Ok(Self::from_json(&json)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(IngestError::Manifest {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the manifest file at `path` whole (a temp file renamed over it).
    pub fn write(&self, path: &Path) -> Result<(), IngestError> {
        let err = |e: std::io::Error| IngestError::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

pub struct IngestOptions<'a> {
    pub content_dir: &'a Path,
    /// What the index holds, as the last ingest recorded it.
    pub manifest: Manifest,
    pub sizes: ChunkSizes,
    pub max_file_bytes: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Drop everything and index from scratch.
    pub rebuild: bool,
}

/// Brings the index in line with the content folder; returns what it did and the manifest
/// to record for the next run.
pub async fn ingest(
    retriever: &Retriever,
    options: IngestOptions<'_>,
) -> Result<(IngestReport, Manifest), IngestError> {
    let started = std::time::Instant::now();
    let dir = options.content_dir;
    if !dir.is_dir() {
        return Err(IngestError::NoContentDir(dir.display().to_string()));
    }
    let signature = format!(
        "v1;{};chunk={}/{}",
        retriever.embedder_id(),
        options.sizes.max_tokens,
        options.sizes.overlap_tokens
    );
    let mut manifest = options.manifest;
    let rebuild = options.rebuild || manifest.signature != signature;
    retriever
        .store()
        .prepare(retriever.schema(), rebuild)
        .await?;
    if rebuild {
        manifest = Manifest {
            signature,
            files: BTreeMap::new(),
        };
    }
    let root_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "content".into());
    let files = content_files(dir);
    let mut report = IngestReport {
        files_seen: files.len(),
        rebuilt: rebuild,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (idx, path) in files.iter().enumerate() {
        let relative = path.strip_prefix(dir).unwrap_or(path);
        let source = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        seen.insert(source.clone());
        if options.progress {
            draw_progress(idx + 1, files.len(), &source);
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.skipped.push((source, format!("cannot read: {e}")));
                continue;
            }
        };
        let hash = hex::encode(sha2::Sha256::digest(&bytes));
        if manifest.files.get(&source) == Some(&hash) {
            report.files_unchanged += 1;
            continue;
        }
        let doc = match document::parse(relative, &root_name, &bytes, options.max_file_bytes) {
            Ok(doc) => doc,
            Err(e) => {
                report.skipped.push((source, e.to_string()));
                continue;
            }
        };
        let chunks = chunk::chunk(&doc, options.sizes);
        let dense = match retriever.dense() {
            Some(embedder) => Some(
                embedder
                    .embed_documents(chunks.iter().map(|c| c.embedding_text()).collect())
                    .await?,
            ),
            None => None,
        };
        let points: Vec<IndexedPoint> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| IndexedPoint {
                id: point_id(&chunk.source, None, chunk.chunk_idx),
                sparse: retriever.bm25().embed_document(&chunk.embedding_text()),
                dense: dense.as_ref().map(|d| d[i].clone()),
                learner: None,
                chunk,
            })
            .collect();
        retriever.store().delete_source(&source, None).await?;
        report.chunks_written += points.len();
        retriever.store().upsert(points).await?;
        manifest.files.insert(source, hash);
        report.files_indexed += 1;
    }
    let removed: Vec<String> = manifest
        .files
        .keys()
        .filter(|s| !seen.contains(*s))
        .cloned()
        .collect();
    for source in removed {
        retriever.store().delete_source(&source, None).await?;
        manifest.files.remove(&source);
        report.files_removed += 1;
    }
    if options.progress {
        eprintln!();
    }
    if report.files_indexed > 0 || report.files_removed > 0 || rebuild {
        retriever.store().commit().await?;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok((report, manifest))
}

/// Markdown and text files below `dir`, hidden ones excluded, in a stable order.
/// The indexable files under `dir` (Markdown and text; hidden files and reference solutions
/// left out), sorted.
pub(crate) fn content_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            // Hidden files, and a project's reference solutions: never indexed.
            e.depth() == 0 || !(name.starts_with('.') || crate::guard::policy::is_private(&name))
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("md" | "markdown" | "txt")
            )
        })
        .collect();
    files.sort();
    files
}

fn draw_progress(done: usize, total: usize, current: &str) {
    let width = 30;
    let filled = done * width / total.max(1);
    let name: String = current
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    eprint!(
        "\r[{}{}] {done}/{total} {name:<40}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}
