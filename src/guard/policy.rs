//! Course and project policies, kept with the course content:
//! `<content>/<course>/policy.toml` for the course and `<content>/<course>/projects/<project>.policy.toml`
//! beside a project's brief. Reference solutions and protected fragments live in a
//! `<project>.solution/` folder, which is never indexed, never served and never in a prompt:
//! the guard alone reads it. A policy that does not load names its file and key, and the last
//! good one stays live.
//!
//! A course's team may also write a policy through the API: an override, kept in the database
//! (migration 0016) so that every node reads the same text, parsed by the same rules as a file
//! and standing instead of that file until it is deleted ([`PolicyOverride`],
//! [`Policies::set_overrides`]).
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::fingerprint::Reference;
use super::window::{Window, WindowError, WindowMode};

/// The largest reference solution file read (a deliverable, not a dataset).
const MAX_REFERENCE_BYTES: u64 = 256 * 1024;
/// The folder suffix that keeps a project's reference files out of the index and the prompts.
pub const SOLUTION_DIR_SUFFIX: &str = ".solution";

/// How much the companion may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Hints and questions only; code no longer than a few lines.
    Hints,
    /// Concepts explained with small generic examples.
    #[default]
    Explain,
    /// Full solutions allowed (ungraded practice).
    Solutions,
}

impl AnswerMode {
    /// The longest code block when the policy names no limit.
    pub fn default_max_code_lines(self) -> Option<usize> {
        match self {
            AnswerMode::Hints => Some(4),
            AnswerMode::Explain => Some(15),
            AnswerMode::Solutions => None,
        }
    }
}

/// Whether a folder or file of the course content is private to the guard: a `.solution`
/// folder, or a policy file. The index and the course site skip these.
pub fn is_private(name: &str) -> bool {
    name.ends_with(SOLUTION_DIR_SUFFIX) || name == "policy.toml" || name.ends_with(".policy.toml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    answer: Option<AnswerMode>,
    max_code_lines: Option<usize>,
    #[serde(default)]
    forbidden: Vec<String>,
    /// Paths relative to the policy's folder, inside a `<project>.solution/` folder.
    #[serde(default)]
    reference_solutions: Vec<String>,
    #[serde(default)]
    protected: Vec<String>,
    #[serde(default, rename = "window")]
    windows: Vec<WindowFile>,
    unfenced_code: Option<UnfencedCode>,
}

/// What the guard does with lines that read as code outside fences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnfencedCode {
    /// Held until a line of prose ends the run, then checked like a fenced block (prose that
    /// may still be code waits for the end of its line).
    #[default]
    Hold,
    /// Let through as prose, as it streams: only fenced blocks are checked.
    Pass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    start: String,
    end: String,
    mode: WindowMode,
    #[serde(default)]
    label: String,
}

/// Where a live policy comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySource {
    /// The policy file beside the course content.
    #[default]
    File,
    /// An override written through the API: who wrote it, when (ms since the epoch), and its
    /// version (the number of changes to this policy so far).
    Override { version: i64, by: String, at: i64 },
}

/// One policy (a file or an override), loaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Policy {
    pub source: PolicySource,
    /// The TOML as written (reference files appear in it by name only).
    pub text: String,
    pub answer: Option<AnswerMode>,
    pub max_code_lines: Option<usize>,
    pub forbidden: Vec<String>,
    pub unfenced_code: Option<UnfencedCode>,
    pub windows: Vec<Window>,
    /// The reference files by name and size (their content never leaves this module).
    pub reference_files: Vec<ReferenceFile>,
    #[serde(skip)]
    pub references: Vec<Arc<Reference>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReferenceFile {
    pub path: String,
    pub bytes: u64,
    pub protected: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `origin` names the file, or the override (`override of <course>[/<project>]`).
    #[error("policy {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("no course {0:?} in the course content")]
    UnknownCourse(String),
    #[error("policy {path}: cannot read {file}: {source}")]
    Read {
        path: PathBuf,
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// References smaller than this (in tokens) are not cut further into units.
const MIN_UNIT_TOKENS: usize = 24;

impl Policy {
    /// Reads and checks one policy file; grams of `base` (the course's own code) never count.
    /// A project's file (`<project>.policy.toml`) may name only files of `<project>.solution/`.
    pub fn load(path: &Path, base: Option<&Reference>) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.to_path_buf(),
            file: path.display().to_string(),
            source: e,
        })?;
        let project = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".policy.toml"));
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir, project, base).map_err(|message| PolicyError::Invalid {
            origin: path.display().to_string(),
            message,
        })
    }

    /// Checks a policy's text, its reference files read from `dir` (the policy's folder);
    /// `project`: the project it is for, whose `.solution/` folder alone it may name. The
    /// error names the key (and, for TOML, the line).
    pub fn parse(
        text: &str,
        dir: &Path,
        project: Option<&str>,
        base: Option<&Reference>,
    ) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for word in &file.forbidden {
            if word.is_empty() || word.chars().any(|c| !(c.is_alphanumeric() || c == '_')) {
                return Err(format!(
                    "forbidden: {word:?} is not a single word or identifier"
                ));
            }
        }
        let mut windows = Vec::new();
        for (i, w) in file.windows.iter().enumerate() {
            let label = if w.label.is_empty() {
                format!("window {}", i + 1)
            } else {
                w.label.clone()
            };
            windows.push(
                Window::parse(&w.start, &w.end, w.mode, &label)
                    .map_err(|e: WindowError| format!("window[{i}]: {e}"))?,
            );
        }
        let mut references = Vec::new();
        let mut reference_files = Vec::new();
        let listed = file
            .reference_solutions
            .iter()
            .map(|p| (p, false, "reference_solutions"))
            .chain(file.protected.iter().map(|p| (p, true, "protected")));
        for (relative, protected, key) in listed {
            let (code, bytes) =
                read_reference(dir, relative, project).map_err(|m| format!("{key}: {m}"))?;
            // The whole file, and each of its top-level units: half of one function is a
            // leak even when it is a small share of the file.
            let mut parts = vec![Reference::new(relative.clone(), &code)];
            let units = super::fingerprint::units(&code);
            if units.len() > 1 {
                parts.extend(
                    units
                        .iter()
                        .map(|(first, text)| Reference::new(format!("{relative} › {first}"), text))
                        .filter(|unit| unit.n_tokens() >= MIN_UNIT_TOKENS),
                );
            }
            references.extend(parts.into_iter().map(|r| {
                Arc::new(match base {
                    Some(base) => r.without(base),
                    None => r,
                })
            }));
            reference_files.push(ReferenceFile {
                path: relative.clone(),
                bytes,
                protected,
            });
        }
        Ok(Self {
            source: PolicySource::File,
            text: text.to_string(),
            answer: file.answer,
            max_code_lines: file.max_code_lines,
            forbidden: file.forbidden,
            unfenced_code: file.unfenced_code,
            windows,
            reference_files,
            references,
        })
    }
}

fn read_reference(
    dir: &Path,
    relative: &str,
    project: Option<&str>,
) -> Result<(String, u64), String> {
    let path = Path::new(relative);
    let first = path
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str());
    let inside_solution_dir = first.is_some_and(|first| first.ends_with(SOLUTION_DIR_SUFFIX));
    if let (Some(project), true) = (project, inside_solution_dir) {
        let own = format!("{project}{SOLUTION_DIR_SUFFIX}");
        if first != Some(own.as_str()) {
            return Err(format!(
                "{relative:?} is not in the project's own folder `{own}/`"
            ));
        }
    }
    let plain = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || !inside_solution_dir {
        return Err(format!(
            "{relative:?} must be a relative path inside a `<project>{SOLUTION_DIR_SUFFIX}/` folder beside the policy (the folder that is never indexed)"
        ));
    }
    let full = dir.join(path);
    let meta = std::fs::metadata(&full).map_err(|e| format!("{relative:?}: {e}"))?;
    if meta.len() > MAX_REFERENCE_BYTES {
        return Err(format!(
            "{relative:?} is {} bytes, more than the {MAX_REFERENCE_BYTES} a reference solution may have",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&full).map_err(|e| format!("{relative:?}: {e}"))?;
    if bytes.contains(&0) {
        return Err(format!("{relative:?} is a binary file, not code"));
    }
    let code = String::from_utf8(bytes).map_err(|_| format!("{relative:?} is not UTF-8 text"))?;
    Ok((code, meta.len()))
}

/// Every fenced code block of the course's Markdown pages (the private folders left out).
fn course_code(course_dir: &Path) -> Option<Arc<Reference>> {
    let mut code = String::new();
    let files = walkdir::WalkDir::new(course_dir)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !is_private(&e.file_name().to_string_lossy()))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("md"));
    for file in files {
        let Ok(text) = std::fs::read_to_string(file.path()) else {
            continue;
        };
        for block in super::fenced_code_blocks(&text) {
            code.push_str(&block);
            code.push('\n');
        }
    }
    (!code.is_empty()).then(|| Arc::new(Reference::new("the course's own examples", &code)))
}

/// A course's policy and its projects' policies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoursePolicies {
    pub course: Option<Arc<Policy>>,
    pub projects: HashMap<String, Arc<Policy>>,
    /// Every code block of the course's own pages: what an answer may always quote.
    #[serde(skip)]
    pub course_code: Option<Arc<Reference>>,
}

/// What holds for one turn: the course's policy with the project's over it.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub answer: AnswerMode,
    pub max_code_lines: Option<usize>,
    pub forbidden: Vec<String>,
    pub unfenced_code: UnfencedCode,
    /// Shared with the policy: a turn clones pointers, never the grams.
    pub references: Arc<Vec<Arc<Reference>>>,
    pub windows: Vec<Window>,
    pub course_code: Option<Arc<Reference>>,
}

impl CoursePolicies {
    pub fn effective(&self, project: Option<&str>) -> Effective {
        let project = project.and_then(|p| self.projects.get(p));
        let layers: Vec<&Arc<Policy>> = self.course.iter().chain(project).collect();
        let answer = layers
            .iter()
            .rev()
            .find_map(|p| p.answer)
            .unwrap_or_default();
        let max_code_lines = layers
            .iter()
            .rev()
            .find_map(|p| p.max_code_lines)
            .or_else(|| answer.default_max_code_lines());
        let unfenced_code = layers
            .iter()
            .rev()
            .find_map(|p| p.unfenced_code)
            .unwrap_or_default();
        let mut references = Vec::new();
        let mut forbidden = Vec::new();
        let mut windows = Vec::new();
        for layer in &layers {
            references.extend(layer.references.iter().cloned());
            forbidden.extend(layer.forbidden.iter().cloned());
            windows.extend(layer.windows.iter().cloned());
        }
        Effective {
            answer,
            max_code_lines,
            forbidden,
            unfenced_code,
            references: Arc::new(references),
            windows,
            course_code: self.course_code.clone(),
        }
    }
}

/// A policy written through the API, as the database keeps it: it stands instead of the file
/// of its course (or project) until it is deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOverride {
    pub course: String,
    /// `None`: the course's own policy.
    pub project: Option<String>,
    pub text: String,
    pub version: i64,
    pub by: String,
    /// When it was written, in ms since the epoch.
    pub at: i64,
}

impl PolicyOverride {
    fn source(&self) -> PolicySource {
        PolicySource::Override {
            version: self.version,
            by: self.by.clone(),
            at: self.at,
        }
    }
}

/// One change of a policy through the API, for its history: a text written, or the override
/// deleted (the file holds again).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyChange {
    pub course: String,
    pub project: Option<String>,
    /// 1 for the first change of this policy, then one more per change.
    pub version: i64,
    /// The text written; `None` when the override was deleted.
    pub text: Option<String>,
    pub by: String,
    pub at: i64,
}

/// A course, and a project of it or `None` for the course's own policy.
type OverrideKey = (String, Option<String>);

/// The overrides as the database last gave them, and the policy each is in force as.
#[derive(Debug, Default)]
struct Overrides {
    texts: Vec<PolicyOverride>,
    live: HashMap<OverrideKey, Arc<Policy>>,
}

fn override_origin(course: &str, project: Option<&str>) -> String {
    match project {
        Some(project) => format!("override of {course}/projects/{project}"),
        None => format!("override of {course}"),
    }
}

/// A project name as a path segment may carry it: letters, digits, `-` and `_`.
fn is_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Every course's policies, reloadable while the server runs.
#[derive(Debug, Default)]
pub struct Policies {
    content_dir: PathBuf,
    courses: RwLock<HashMap<String, Arc<CoursePolicies>>>,
    /// The policies written through the API, which stand instead of the files.
    overrides: RwLock<Overrides>,
    /// Each file's last good policy, kept when a reload finds the file broken.
    last_good: RwLock<HashMap<PathBuf, Arc<Policy>>>,
    /// What each course folder held when it was last read: a reload that finds the same
    /// files, sizes and times keeps that course's policies without reading or fingerprinting.
    stamps: RwLock<HashMap<String, Stamp>>,
}

/// Every file below a course folder (the private solution folders included): path, size and
/// modification time, in walk order.
type Stamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn stamp(course_dir: &Path) -> Stamp {
    walkdir::WalkDir::new(course_dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.into_path(), meta.len(), meta.modified().ok()))
        })
        .collect()
}

impl Policies {
    /// Loads every policy below `content_dir`; the first broken file is an error.
    pub fn load(content_dir: &Path) -> Result<Self, PolicyError> {
        let policies = Self {
            content_dir: content_dir.to_path_buf(),
            ..Self::default()
        };
        let errors = policies.reload();
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(policies),
        }
    }

    /// Reads every policy again. A broken file keeps its last good policy; its error is
    /// returned (and should be logged) naming the file and the key.
    pub fn reload(&self) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        let mut courses = HashMap::new();
        let mut reread = HashSet::new();
        let Ok(entries) = std::fs::read_dir(&self.content_dir) else {
            return errors;
        };
        let mut last_good = self.last_good.write().expect("policy lock");
        let mut load = |path: PathBuf, base: Option<&Reference>| -> Option<Arc<Policy>> {
            match Policy::load(&path, base) {
                Ok(policy) => {
                    let policy = Arc::new(policy);
                    last_good.insert(path, policy.clone());
                    Some(policy)
                }
                Err(e) => {
                    errors.push(e);
                    last_good.get(&path).cloned()
                }
            }
        };
        for entry in entries.flatten() {
            let course_dir = entry.path();
            let Some(course) = course_dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if course.starts_with('.') || !course_dir.is_dir() {
                continue;
            }
            let stamp = stamp(&course_dir);
            let unchanged = self.stamps.read().expect("policy lock").get(&course) == Some(&stamp);
            if unchanged
                && let Some(policies) = self.courses.read().expect("policy lock").get(&course)
            {
                courses.insert(course, policies.clone());
                continue;
            }
            reread.insert(course.clone());
            self.stamps
                .write()
                .expect("policy lock")
                .insert(course.clone(), stamp);
            let course_code = course_code(&course_dir);
            let base = course_code.as_deref();
            let mut policies = CoursePolicies::default();
            let course_file = course_dir.join("policy.toml");
            if course_file.is_file() {
                policies.course = load(course_file, base);
            }
            if let Ok(projects) = std::fs::read_dir(course_dir.join("projects")) {
                for project in projects.flatten() {
                    let path = project.path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    if let Some(project) = name.strip_suffix(".policy.toml") {
                        let project = project.to_string();
                        if let Some(policy) = load(path, base) {
                            policies.projects.insert(project, policy);
                        }
                    }
                }
            }
            policies.course_code = course_code;
            courses.insert(course, Arc::new(policies));
        }
        drop(last_good);
        *self.courses.write().expect("policy lock") = courses;
        // An override's references and the course code they are read against may have
        // changed with the files: those of a course read again are compiled again.
        errors.extend(self.compile_overrides(None, &reread));
        errors
    }

    /// The course's policies as they stand: the files', each replaced by its override if one
    /// was written.
    pub fn course(&self, course: &str) -> Arc<CoursePolicies> {
        let files = self
            .courses
            .read()
            .expect("policy lock")
            .get(course)
            .cloned()
            .unwrap_or_default();
        let overrides = self.overrides.read().expect("policy lock");
        let mut mine = overrides
            .live
            .iter()
            .filter(|((c, _), _)| c == course)
            .peekable();
        if mine.peek().is_none() {
            return files;
        }
        let mut merged = files.as_ref().clone();
        for ((_, project), policy) in mine {
            match project {
                None => merged.course = Some(policy.clone()),
                Some(project) => {
                    merged.projects.insert(project.clone(), policy.clone());
                }
            }
        }
        Arc::new(merged)
    }

    /// Checks `text` as the policy of `course` (of its `project` when given) as it would be
    /// read in force: the course must be in the content, and reference files are read from
    /// the policy's folder there (a project's from its own `<project>.solution/` only).
    pub fn check(
        &self,
        course: &str,
        project: Option<&str>,
        text: &str,
    ) -> Result<Policy, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            origin: override_origin(course, project),
            message,
        };
        let base = self
            .courses
            .read()
            .expect("policy lock")
            .get(course)
            .map(|policies| policies.course_code.clone())
            .ok_or_else(|| PolicyError::UnknownCourse(course.to_string()))?;
        let course_dir = self.content_dir.join(course);
        let dir = match project {
            None => course_dir,
            Some(project) if is_project_name(project) => course_dir.join("projects"),
            Some(project) => {
                return Err(invalid(format!(
                    "{project:?} is not a project name (letters, digits, `-` and `_`)"
                )));
            }
        };
        Policy::parse(text, &dir, project, base.as_deref()).map_err(invalid)
    }

    /// Puts `texts` (every override, as the database holds them) in force instead of their
    /// files; an override no longer in `texts` gives its file back. A text that does not load
    /// here (a reference file gone from this node's content) keeps the override's last good
    /// policy on this node, else the file's; its error is returned, to be logged.
    pub fn set_overrides(&self, texts: Vec<PolicyOverride>) -> Vec<PolicyError> {
        self.compile_overrides(Some(texts), &HashSet::new())
    }

    /// Compiles the overrides (`texts`, or the ones last set), reusing what an unchanged
    /// override compiled to unless its course is in `again`.
    fn compile_overrides(
        &self,
        texts: Option<Vec<PolicyOverride>>,
        again: &HashSet<String>,
    ) -> Vec<PolicyError> {
        let (texts, mut previous) = {
            let overrides = self.overrides.read().expect("policy lock");
            if texts.is_none() && !overrides.texts.iter().any(|o| again.contains(&o.course)) {
                return Vec::new();
            }
            (
                texts.unwrap_or_else(|| overrides.texts.clone()),
                overrides.live.clone(),
            )
        };
        let mut errors = Vec::new();
        let mut live = HashMap::new();
        for text in &texts {
            let key = (text.course.clone(), text.project.clone());
            let kept = previous.remove(&key);
            if let Some(kept) = &kept
                && kept.source == text.source()
                && !again.contains(&text.course)
            {
                live.insert(key, kept.clone());
                continue;
            }
            match self.check(&text.course, text.project.as_deref(), &text.text) {
                Ok(mut policy) => {
                    policy.source = text.source();
                    live.insert(key, Arc::new(policy));
                }
                Err(e) => {
                    errors.push(e);
                    if let Some(kept) = kept {
                        live.insert(key, kept);
                    }
                }
            }
        }
        *self.overrides.write().expect("policy lock") = Overrides { texts, live };
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let projects = dir.path().join("py/projects");
        std::fs::create_dir_all(projects.join("tracker.solution")).unwrap();
        std::fs::write(
            projects.join("tracker.solution/main.py"),
            "def f(x):\n    return x * 2\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("py/policy.toml"),
            "answer = \"explain\"\nforbidden = [\"answer_key\"]\n",
        )
        .unwrap();
        std::fs::write(
            projects.join("tracker.policy.toml"),
            "answer = \"hints\"\nreference_solutions = [\"tracker.solution/main.py\"]\n\n[[window]]\nstart = \"2026-12-14T09:00:00[Europe/Paris]\"\nend = \"2026-12-14T12:00:00[Europe/Paris]\"\nmode = \"off\"\nlabel = \"the final quiz\"\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn the_project_policy_stands_over_the_course_policy() {
        let dir = course_dir();
        let policies = Policies::load(dir.path()).unwrap();
        let effective = policies.course("py").effective(Some("tracker"));
        assert_eq!(effective.answer, AnswerMode::Hints);
        assert_eq!(effective.max_code_lines, Some(4));
        assert_eq!(effective.forbidden, vec!["answer_key"]);
        assert_eq!(effective.references.len(), 1);
        assert_eq!(effective.windows.len(), 1);
        let course_only = policies.course("py").effective(None);
        assert_eq!(course_only.answer, AnswerMode::Explain);
        assert!(course_only.references.is_empty());
    }

    #[test]
    fn a_reload_keeps_an_unchanged_course_as_it_was_and_reads_an_edited_one_again() {
        let dir = course_dir();
        let policies = Policies::load(dir.path()).unwrap();
        let before = policies.course("py");

        assert!(policies.reload().is_empty());
        let unchanged = policies.course("py");
        assert!(
            Arc::ptr_eq(&before, &unchanged),
            "re-read though nothing changed"
        );

        std::fs::write(
            dir.path().join("py/policy.toml"),
            "answer = \"solutions\"\nforbidden = [\"answer_key\", \"grade\"]\n",
        )
        .unwrap();
        assert!(policies.reload().is_empty());
        let edited = policies.course("py");
        assert!(!Arc::ptr_eq(&before, &edited));
        let course_only = edited.effective(None);
        assert_eq!(course_only.answer, AnswerMode::Solutions);
        assert_eq!(course_only.forbidden, vec!["answer_key", "grade"]);
    }

    #[test]
    fn an_unknown_key_names_the_file_and_the_key_and_the_last_good_policy_stays() {
        let dir = course_dir();
        let policies = Policies::load(dir.path()).unwrap();
        std::fs::write(dir.path().join("py/policy.toml"), "answr = \"hints\"\n").unwrap();
        let errors = policies.reload();
        let message = errors[0].to_string();
        assert!(
            message.contains("py/policy.toml") && message.contains("answr"),
            "{message}"
        );
        assert_eq!(
            policies.course("py").effective(None).forbidden,
            vec!["answer_key"]
        );
        assert!(Policies::load(dir.path()).is_err());
    }

    #[test]
    fn a_reference_outside_a_solution_folder_binary_or_huge_is_refused() {
        let dir = course_dir();
        let projects = dir.path().join("py/projects");
        let policy = projects.join("tracker.policy.toml");
        std::fs::write(projects.join("notes.md"), "x").unwrap();
        std::fs::write(&policy, "reference_solutions = [\"notes.md\"]\n").unwrap();
        assert!(
            Policy::load(&policy, None)
                .unwrap_err()
                .to_string()
                .contains("never indexed")
        );
        std::fs::write(projects.join("tracker.solution/blob.bin"), [0u8, 1, 2]).unwrap();
        std::fs::write(&policy, "protected = [\"tracker.solution/blob.bin\"]\n").unwrap();
        assert!(
            Policy::load(&policy, None)
                .unwrap_err()
                .to_string()
                .contains("binary")
        );
        std::fs::write(
            projects.join("tracker.solution/huge.py"),
            "x = 1\n".repeat(60_000),
        )
        .unwrap();
        std::fs::write(
            &policy,
            "reference_solutions = [\"tracker.solution/huge.py\"]\n",
        )
        .unwrap();
        assert!(
            Policy::load(&policy, None)
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
        std::fs::write(
            &policy,
            "reference_solutions = [\"tracker.solution/../../policy.toml\"]\n",
        )
        .unwrap();
        assert!(Policy::load(&policy, None).is_err());
    }

    #[test]
    fn a_window_ending_before_it_starts_names_the_window() {
        let dir = course_dir();
        let policy = dir.path().join("py/policy.toml");
        std::fs::write(
            &policy,
            "[[window]]\nstart = \"2026-12-14T12:00:00Z\"\nend = \"2026-12-14T09:00:00Z\"\nmode = \"off\"\n",
        )
        .unwrap();
        let message = Policy::load(&policy, None).unwrap_err().to_string();
        assert!(
            message.contains("window[0]") && message.contains("ends"),
            "{message}"
        );
    }

    fn override_of(project: Option<&str>, text: &str, version: i64) -> PolicyOverride {
        PolicyOverride {
            course: "py".into(),
            project: project.map(str::to_string),
            text: text.into(),
            version,
            by: "team-1".into(),
            at: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_override_stands_instead_of_its_file_until_it_is_removed() {
        let dir = course_dir();
        let policies = Policies::load(dir.path()).unwrap();
        let errors = policies.set_overrides(vec![
            override_of(
                Some("tracker"),
                "answer = \"explain\"\nmax_code_lines = 2\n",
                1,
            ),
            override_of(None, "forbidden = [\"grade\"]\n", 1),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let course = policies.course("py");
        let project = &course.projects["tracker"];
        assert_eq!(
            project.source,
            PolicySource::Override {
                version: 1,
                by: "team-1".into(),
                at: 1_700_000_000_000
            }
        );
        let effective = course.effective(Some("tracker"));
        assert_eq!(effective.answer, AnswerMode::Explain);
        assert_eq!(effective.max_code_lines, Some(2));
        assert_eq!(effective.forbidden, vec!["grade"]);
        // The override replaces the file whole: its references and windows are gone too.
        assert!(effective.references.is_empty());
        assert!(effective.windows.is_empty());

        assert!(policies.set_overrides(Vec::new()).is_empty());
        let back = policies.course("py");
        assert_eq!(back.projects["tracker"].source, PolicySource::File);
        assert_eq!(back.effective(Some("tracker")).answer, AnswerMode::Hints);
        assert_eq!(back.effective(None).forbidden, vec!["answer_key"]);
    }

    #[test]
    fn an_override_that_no_longer_loads_keeps_its_last_good_policy() {
        let dir = course_dir();
        let policies = Policies::load(dir.path()).unwrap();
        let good = "reference_solutions = [\"tracker.solution/main.py\"]\nmax_code_lines = 3\n";
        assert!(
            policies
                .set_overrides(vec![override_of(Some("tracker"), good, 1)])
                .is_empty()
        );
        // The reference file is gone from this node's content and the text is written again.
        std::fs::remove_file(dir.path().join("py/projects/tracker.solution/main.py")).unwrap();
        let errors = policies.set_overrides(vec![override_of(Some("tracker"), good, 2)]);
        let message = errors[0].to_string();
        assert!(
            message.contains("override of py/projects/tracker") && message.contains("main.py"),
            "{message}"
        );
        let effective = policies.course("py").effective(Some("tracker"));
        assert_eq!(effective.max_code_lines, Some(3));
        assert_eq!(effective.references.len(), 1, "the last good policy stays");
    }

    #[test]
    fn an_override_is_checked_by_the_rules_of_a_file() {
        let dir = course_dir();
        let policies = Policies::load(dir.path()).unwrap();
        let check = |project: Option<&str>, text: &str| {
            policies
                .check("py", project, text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let unknown = check(Some("tracker"), "answer = \"hints\"\nanswr = 1\n").unwrap_err();
        assert!(
            unknown.contains("answr") && unknown.contains("line 2"),
            "{unknown}"
        );
        let window = check(
            None,
            "[[window]]\nstart = \"2026-12-14T12:00:00Z\"\nend = \"2026-12-14T09:00:00Z\"\nmode = \"off\"\n",
        )
        .unwrap_err();
        assert!(window.contains("window[0]"), "{window}");
        std::fs::create_dir_all(dir.path().join("py/projects/other.solution")).unwrap();
        std::fs::write(
            dir.path().join("py/projects/other.solution/x.py"),
            "x = 1\n",
        )
        .unwrap();
        let foreign = check(
            Some("tracker"),
            "reference_solutions = [\"other.solution/x.py\"]\n",
        )
        .unwrap_err();
        assert!(foreign.contains("tracker.solution/"), "{foreign}");
        let missing = check(
            Some("tracker"),
            "reference_solutions = [\"tracker.solution/nope.py\"]\n",
        )
        .unwrap_err();
        assert!(missing.contains("nope.py"), "{missing}");
        assert!(check(Some("../py"), "").is_err());
        assert!(matches!(
            policies.check("no-such-course", None, ""),
            Err(PolicyError::UnknownCourse(_))
        ));
        assert!(
            check(
                Some("tracker"),
                "reference_solutions = [\"tracker.solution/main.py\"]\n"
            )
            .is_ok()
        );
    }
}
