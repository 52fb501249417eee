//! A learner's project files: checked (names, paths, sizes, text only), read from archives and
//! shallow git clones within limits, stored in one transaction, cut at code boundaries and
//! indexed privately (only that learner's conversations retrieve them); and the project briefs
//! of the course.
//!
//! Nothing partial is kept: every file of a write is checked before anything is stored, the
//! files are stored in one transaction, then indexed.
pub mod archive;
pub mod brief;
pub mod chunk;
pub mod git;
pub mod remote;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest;

use crate::config::ProjectSettings;
use crate::learner::{LearnerStore, ProjectFile, WriteLocks};
use crate::retrieval::Retriever;
use crate::retrieval::chunk::Chunk;
use crate::retrieval::store::{IndexedPoint, point_id};
use crate::store::StoreError;

/// Longest accepted path of a project file, in bytes.
const MAX_PATH_BYTES: usize = 512;
/// The `kind` of a project file's chunks in the index.
pub const CHUNK_KIND: &str = "project_file";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "project name {0:?} is not valid: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    InvalidProject(String),
    #[error("path {path:?} is not accepted: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("file {path} is {bytes} bytes; the limit per file is {limit} bytes")]
    FileTooLarge {
        path: String,
        bytes: u64,
        limit: u64,
    },
    #[error("the project would hold {bytes} bytes; the limit per project is {limit} bytes")]
    ProjectTooLarge { bytes: u64, limit: u64 },
    #[error("the archive is {bytes} bytes; the limit is {limit} bytes")]
    ArchiveTooLarge { bytes: u64, limit: u64 },
    #[error("the {what} has more than {limit} entries; the limit is {limit}")]
    TooManyEntries { what: &'static str, limit: usize },
    #[error("archive entry {path} expands past {limit} bytes (a zip bomb?); nothing was stored")]
    Bomb { path: String, limit: u64 },
    #[error("file {path} is binary ({reason}); only text files are accepted")]
    Binary { path: String, reason: String },
    #[error("archive entry {path} is a link; links are not accepted")]
    Link { path: String },
    #[error("file {path} appears twice")]
    Duplicate { path: String },
    #[error("the body is not a zip, tar or tar.gz archive")]
    UnknownArchive,
    #[error("the archive cannot be read: {0}")]
    BadArchive(String),
    #[error("nothing to store: {0}")]
    NoFiles(&'static str),
    #[error("git source {url:?} is not accepted: {reason}")]
    GitUrl { url: String, reason: &'static str },
    #[error("cannot clone {url}: {reason}")]
    GitFailed { url: String, reason: String },
    #[error("cloning {url} took longer than {secs} s; it was stopped")]
    GitTimeout { url: String, secs: u64 },
    #[error("the repository {url} is larger than {limit} bytes; the clone was stopped")]
    GitTooLarge { url: String, limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("indexing project files")]
    Index(#[from] crate::retrieval::store::StoreError),
    #[error("embedding project files")]
    Embed(#[from] crate::retrieval::embed::EmbedError),
    #[error(
        "learner {learner} already has {count} projects, the limit; delete one before starting project {project:?}"
    )]
    TooManyProjects {
        learner: String,
        project: String,
        count: usize,
    },
    /// Checking or cutting files off the async threads failed (a panic).
    #[error("a blocking task checking or chunking project files failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ProjectError {
    /// A failure to store or index, not a fault of the files given: nothing the caller can fix.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Store(_) | Self::Index(_) | Self::Embed(_) | Self::Task(_)
        )
    }
}

/// Where a file came from, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Api,
    Archive,
    Chat,
    Git,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Archive => "archive",
            Self::Chat => "chat",
            Self::Git => "git",
        }
    }
}

/// A file as it arrives, before any check.
#[derive(Debug, Clone)]
pub struct IncomingFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// A file that passed every check: normalised path, text content.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedFile {
    pub path: String,
    pub text: String,
}

/// One stored file, as reported back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSummary {
    pub path: String,
    pub bytes: i64,
    pub sha256: String,
}

/// What a write did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteReport {
    pub project: String,
    pub files: Vec<FileSummary>,
    /// Files of the project removed because the write replaced the whole project.
    pub removed: Vec<String>,
    pub chunks: usize,
    pub project_bytes: u64,
}

/// A project name: a file name without separators, safe in a path and in an index id.
pub fn check_project_name(name: &str) -> Result<(), ProjectError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ProjectError::InvalidProject(
            name.chars().take(80).collect(),
        ))
    }
}

/// A relative, `/`-separated path without `.` or empty parts. Absolute paths (`/x`, `\x`,
/// `C:\x`), any `..` part, control characters and folder names are refused.
pub fn normalise_path(raw: &str) -> Result<String, ProjectError> {
    let refuse = |reason| {
        Err(ProjectError::InvalidPath {
            path: raw.chars().take(200).collect(),
            reason,
        })
    };
    if raw.trim().is_empty() {
        return refuse("it is empty");
    }
    if raw.len() > MAX_PATH_BYTES {
        return refuse("it is longer than 512 bytes");
    }
    if raw.chars().any(char::is_control) {
        return refuse("it contains control characters");
    }
    let unified = raw.replace('\\', "/");
    if unified.starts_with('/') {
        return refuse("it is absolute; give a path relative to the project");
    }
    let bytes = unified.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return refuse("it starts with a drive letter; give a path relative to the project");
    }
    if unified.contains(':') {
        // Not a file name on every system (Windows refuses it, and reads `x:` as a drive).
        return refuse("it contains `:`, which a file name may not hold");
    }
    if unified.ends_with('/') {
        return refuse("it names a folder, not a file");
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => continue,
            ".." => return refuse("it contains `..`; paths may not leave the project"),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return refuse("it names no file");
    }
    Ok(parts.join("/"))
}

/// The text of a file, or why it is not one: NUL bytes or invalid UTF-8 mean binary.
pub fn text_of(path: &str, bytes: Vec<u8>) -> Result<String, ProjectError> {
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Err(ProjectError::Binary {
            path: path.to_string(),
            reason: "it contains NUL bytes".into(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| ProjectError::Binary {
        path: path.to_string(),
        reason: format!(
            "it is not UTF-8 text; first bad byte at offset {}",
            e.utf8_error().valid_up_to()
        ),
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Checks every file of one write: paths, per-file size, text, duplicates. All or nothing.
pub fn check_files(
    files: Vec<IncomingFile>,
    settings: &ProjectSettings,
) -> Result<Vec<CheckedFile>, ProjectError> {
    let mut seen = HashSet::new();
    let mut checked = Vec::with_capacity(files.len());
    for file in files {
        let path = normalise_path(&file.path)?;
        let bytes = file.bytes.len() as u64;
        if bytes > settings.max_file_bytes {
            return Err(ProjectError::FileTooLarge {
                path,
                bytes,
                limit: settings.max_file_bytes,
            });
        }
        if !seen.insert(path.clone()) {
            return Err(ProjectError::Duplicate { path });
        }
        let text = text_of(&path, file.bytes)?;
        checked.push(CheckedFile { path, text });
    }
    Ok(checked)
}

/// Stores, indexes and removes learners' project files; reads project briefs.
pub struct Projects {
    learners: Arc<dyn LearnerStore>,
    retriever: Retriever,
    settings: ProjectSettings,
    content_dir: PathBuf,
    /// One write at a time per learner, so that size checks and index updates do not race,
    /// shared with the learner's erasure.
    locks: Arc<WriteLocks>,
    /// Projects one learner may keep; 0: no cap.
    max_projects: usize,
}

impl Projects {
    pub fn new(
        learners: Arc<dyn LearnerStore>,
        retriever: Retriever,
        settings: ProjectSettings,
        content_dir: PathBuf,
    ) -> Self {
        Self {
            learners,
            retriever,
            settings,
            content_dir,
            locks: Arc::new(WriteLocks::default()),
            max_projects: 0,
        }
    }

    /// Caps the projects one learner may keep (`quotas.projects_per_learner`; 0: no cap).
    pub fn with_max_projects(mut self, max_projects: usize) -> Self {
        self.max_projects = max_projects;
        self
    }

    /// The per-learner lock every write of project files takes: an erasure takes it too.
    pub fn write_locks(&self) -> &WriteLocks {
        &self.locks
    }

    pub fn settings(&self) -> &ProjectSettings {
        &self.settings
    }

    /// The brief of `project` in `course`, from `<content>/<course>/projects/<project>.md`.
    pub fn brief(&self, course: &str, project: &str) -> Option<brief::Brief> {
        brief::load(&self.content_dir, course, project)
    }

    async fn lock(&self, learner: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(learner).await
    }

    /// Checks `files`, stores them in one transaction (with `replace_all`, the project's other
    /// files go), then indexes them for `learner` only. `course` tags the indexed chunks so that
    /// course-scoped searches find them.
    #[tracing::instrument(skip(self, files), fields(n_files = files.len()))]
    pub async fn write(
        &self,
        learner: &str,
        course: &str,
        project: &str,
        files: Vec<IncomingFile>,
        origin: Origin,
        replace_all: bool,
    ) -> Result<WriteReport, ProjectError> {
        check_project_name(project)?;
        if files.is_empty() {
            return Err(ProjectError::NoFiles("no file was given"));
        }
        // Decoding and checking up to a project's worth of text: off the async threads.
        let settings = self.settings.clone();
        let checked = tokio::task::spawn_blocking(move || check_files(files, &settings)).await??;
        let _guard = self.lock(learner).await;
        let existing = self.learners.project_files(learner, Some(project)).await?;
        if existing.is_empty() && self.max_projects > 0 {
            let names = self.learners.project_names(learner).await?;
            if !names.iter().any(|name| name == project) && names.len() >= self.max_projects {
                return Err(ProjectError::TooManyProjects {
                    learner: learner.to_string(),
                    project: project.to_string(),
                    count: names.len(),
                });
            }
        }
        let new_paths: HashSet<String> = checked.iter().map(|f| f.path.clone()).collect();
        let kept_bytes: u64 = if replace_all {
            0
        } else {
            existing
                .iter()
                .filter(|f| !new_paths.contains(&f.path))
                .map(|f| f.bytes as u64)
                .sum()
        };
        let project_bytes = kept_bytes + checked.iter().map(|f| f.text.len() as u64).sum::<u64>();
        if project_bytes > self.settings.max_project_bytes {
            return Err(ProjectError::ProjectTooLarge {
                bytes: project_bytes,
                limit: self.settings.max_project_bytes,
            });
        }
        let now = crate::transcript::now_ms();
        let rows: Vec<ProjectFile> = checked
            .into_iter()
            .map(|f| ProjectFile {
                learner_id: learner.to_string(),
                project: project.to_string(),
                sha256: hex::encode(sha2::Sha256::digest(f.text.as_bytes())),
                bytes: f.text.len() as i64,
                path: f.path,
                content: f.text,
                origin: origin.as_str().to_string(),
                updated_at: now,
            })
            .collect();
        let removed: Vec<String> = if replace_all {
            existing
                .iter()
                .filter(|f| !new_paths.contains(&f.path))
                .map(|f| f.path.clone())
                .collect()
        } else {
            Vec::new()
        };
        // In an order a failure can be recovered from by repeating the request: the vectors of
        // files that go, then the rows, then the new vectors. A failure part-way leaves rows
        // without (current) vectors, which the repeat indexes again, never vectors of a file
        // that is gone.
        for path in &removed {
            self.retriever
                .store()
                .delete_source(&source_id(project, path), Some(learner))
                .await?;
        }
        self.learners
            .put_project_files(learner, project, &rows, replace_all)
            .await?;
        let chunks = self.index(learner, course, &rows).await?;
        Ok(WriteReport {
            project: project.to_string(),
            files: rows
                .iter()
                .map(|f| FileSummary {
                    path: f.path.clone(),
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            removed,
            chunks,
            project_bytes,
        })
    }

    /// Removes one file and its chunks; false when there was none.
    pub async fn delete(
        &self,
        learner: &str,
        project: &str,
        path: &str,
    ) -> Result<bool, ProjectError> {
        check_project_name(project)?;
        let path = normalise_path(path)?;
        let _guard = self.lock(learner).await;
        let exists = self
            .learners
            .project_files(learner, Some(project))
            .await?
            .iter()
            .any(|f| f.path == path);
        if !exists {
            return Ok(false);
        }
        // Vectors first: if the row's deletion then fails, the file is still listed and the
        // deletion can be repeated; the other way round, a failure would leave vectors of a
        // file that no longer exists reaching the learner's prompts.
        let store = self.retriever.store();
        store
            .delete_source(&source_id(project, &path), Some(learner))
            .await?;
        store.commit().await?;
        let removed = self
            .learners
            .delete_project_file(learner, project, &path)
            .await?;
        Ok(removed)
    }

    /// Indexes again every file of one learner, tagged with `course` (after the learner's
    /// course changed).
    pub async fn reindex_learner(
        &self,
        learner: &str,
        course: &str,
    ) -> Result<usize, ProjectError> {
        let _guard = self.lock(learner).await;
        let files = self.learners.project_files(learner, None).await?;
        self.index(learner, course, &files).await
    }

    /// Indexes every learner's files again (after the index was rebuilt from scratch).
    pub async fn reindex_all(&self) -> Result<usize, ProjectError> {
        let mut chunks = 0;
        for profile in self.learners.learners(None).await? {
            let course = profile.course.unwrap_or_default();
            chunks += self.reindex_learner(&profile.id, &course).await?;
        }
        Ok(chunks)
    }

    /// Replaces the chunks of `files` in the index, private to `learner`.
    async fn index(
        &self,
        learner: &str,
        course: &str,
        files: &[ProjectFile],
    ) -> Result<usize, ProjectError> {
        let store = self.retriever.store();
        let mut written = 0;
        for file in files {
            let source = source_id(&file.project, &file.path);
            // Cutting and BM25-encoding a file is CPU work: off the async threads.
            let (chunks, sparse) = {
                let retriever = self.retriever.clone();
                let (source, course, file) = (source.clone(), course.to_string(), file.clone());
                let chunk_tokens = self.settings.chunk_tokens;
                tokio::task::spawn_blocking(move || {
                    let chunks = file_chunks(
                        &source,
                        &course,
                        &file.project,
                        &file.path,
                        &file.content,
                        chunk_tokens,
                    );
                    let sparse: Vec<_> = chunks
                        .iter()
                        .map(|chunk| retriever.bm25().embed_document(&chunk.embedding_text()))
                        .collect();
                    (chunks, sparse)
                })
                .await?
            };
            let dense = match self.retriever.dense() {
                Some(embedder) if !chunks.is_empty() => Some(
                    embedder
                        .embed_documents(chunks.iter().map(Chunk::embedding_text).collect())
                        .await?,
                ),
                _ => None,
            };
            let points: Vec<IndexedPoint> = chunks
                .into_iter()
                .zip(sparse)
                .enumerate()
                .map(|(i, (chunk, sparse))| IndexedPoint {
                    id: point_id(&chunk.source, Some(learner), chunk.chunk_idx),
                    sparse,
                    dense: dense.as_ref().and_then(|d| d.get(i).cloned()),
                    learner: Some(learner.to_string()),
                    chunk,
                })
                .collect();
            store.delete_source(&source, Some(learner)).await?;
            written += points.len();
            if !points.is_empty() {
                store.upsert(points).await?;
            }
        }
        store.commit().await?;
        Ok(written)
    }
}

/// The index `source` of a project file: `project:<project>/<path>`.
pub fn source_id(project: &str, path: &str) -> String {
    format!("project:{project}/{path}")
}

/// A project file cut into index chunks: `title` is the path, `chapter` the project, the last
/// heading the line range (and the definition, for code).
pub fn file_chunks(
    source: &str,
    course: &str,
    project: &str,
    path: &str,
    text: &str,
    max_tokens: usize,
) -> Vec<Chunk> {
    chunk::chunk_file(path, text, max_tokens)
        .into_iter()
        .enumerate()
        .map(|(chunk_idx, piece)| {
            let mut heading_path = vec![path.to_string()];
            let anchor = match piece.lines {
                Some((start, end)) => {
                    heading_path.push(match &piece.name {
                        Some(name) => format!("lines {start}-{end}: {name}"),
                        None => format!("lines {start}-{end}"),
                    });
                    format!("#L{start}-L{end}")
                }
                None => format!("#part-{}", chunk_idx + 1),
            };
            Chunk {
                source: source.to_string(),
                course: course.to_string(),
                chapter: project.to_string(),
                chapter_title: format!("Project {project}"),
                title: path.to_string(),
                heading_path,
                url: format!("{source}{anchor}"),
                kind: CHUNK_KIND.to_string(),
                chunk_idx,
                text: piece.text,
            }
        })
        .collect()
}

/// The line range of an indexed project chunk, read back from its URL anchor.
pub fn chunk_lines(chunk: &Chunk) -> Option<(usize, usize)> {
    let anchor = chunk.url.rsplit_once("#L")?.1;
    let (start, end) = anchor.split_once("-L")?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProjectSettings {
        ProjectSettings {
            max_file_bytes: 100,
            max_project_bytes: 1000,
            max_archive_bytes: 1000,
            max_archive_entries: 10,
            git_timeout: std::time::Duration::from_secs(5),
            git_max_bytes: 10_000,
            git_allow_local: true,
            chunk_tokens: 64,
            top_k: 4,
            ..crate::config::Settings::defaults(std::path::Path::new("/nonexistent")).projects
        }
    }

    #[test]
    fn paths_are_normalised_to_relative_slash_separated_form() {
        assert_eq!(normalise_path("src/budget.py").unwrap(), "src/budget.py");
        assert_eq!(normalise_path("./src//budget.py").unwrap(), "src/budget.py");
        assert_eq!(
            normalise_path("src\\tests\\test_a.py").unwrap(),
            "src/tests/test_a.py"
        );
    }

    #[test]
    fn traversal_absolute_and_odd_paths_are_refused_with_a_reason() {
        for (path, reason) in [
            ("../etc/passwd", ".."),
            ("src/../../x", ".."),
            ("..\\x", ".."),
            ("/etc/passwd", "absolute"),
            ("\\windows\\x", "absolute"),
            ("C:\\x.py", "drive letter"),
            ("", "empty"),
            ("a/b/", "folder"),
            ("./.", "no file"),
            ("a\u{0}b", "control"),
        ] {
            let err = normalise_path(path).unwrap_err().to_string();
            assert!(err.contains(reason), "{path:?}: {err}");
        }
        assert!(normalise_path(&"a/".repeat(300)).is_err());
    }

    #[test]
    fn project_names_are_single_safe_words() {
        assert!(check_project_name("budget-tracker").is_ok());
        assert!(check_project_name("quiz_game.v2").is_ok());
        for bad in ["", ".git", "a/b", "..", "x y", &"p".repeat(65)] {
            assert!(check_project_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_and_non_utf8_files_are_refused() {
        assert!(matches!(
            text_of("a.png", vec![0x89, b'P', b'N', b'G', 0, 0]),
            Err(ProjectError::Binary { .. })
        ));
        let err = text_of("a.txt", vec![b'o', b'k', 0xff, 0xfe]).unwrap_err();
        assert!(err.to_string().contains("offset 2"), "{err}");
        assert_eq!(text_of("a.py", "\u{feff}x = 1".into()).unwrap(), "x = 1");
    }

    #[test]
    fn a_batch_is_refused_whole_when_one_file_is_bad() {
        let file = |path: &str, bytes: &[u8]| IncomingFile {
            path: path.into(),
            bytes: bytes.to_vec(),
        };
        let ok = check_files(
            vec![file("a.py", b"x = 1"), file("b.py", b"y = 2")],
            &settings(),
        );
        assert_eq!(ok.unwrap().len(), 2);
        let too_big = check_files(
            vec![file("a.py", b"x"), file("b.py", &[b'y'; 101])],
            &settings(),
        );
        assert!(matches!(
            too_big,
            Err(ProjectError::FileTooLarge { bytes: 101, .. })
        ));
        let twice = check_files(vec![file("a.py", b"x"), file("./a.py", b"y")], &settings());
        assert!(matches!(twice, Err(ProjectError::Duplicate { .. })));
    }

    #[test]
    fn chunks_of_a_file_carry_their_project_path_and_lines() {
        let text =
            "import csv\n\n\ndef parse_amount(text):\n    return float(text.replace(',', '.'))\n";
        let chunks = file_chunks("project:p/budget.py", "py", "p", "budget.py", text, 64);
        let def = chunks
            .iter()
            .find(|c| c.text.contains("def parse_amount"))
            .expect("a chunk with the function");
        assert_eq!(def.title, "budget.py");
        assert_eq!(def.chapter, "p");
        assert_eq!(def.kind, CHUNK_KIND);
        assert_eq!(chunk_lines(def), Some((4, 5)));
        assert!(
            def.heading_path[1].contains("def parse_amount"),
            "{:?}",
            def.heading_path
        );
    }
}
