//! Course and project policies, kept with the course content:
//! `<content>/<course>/policy.toml` for the course and `<content>/<course>/projects/<project>.policy.toml`
//! beside a project's brief. Reference solutions and protected fragments live in a
//! `<project>.solution/` folder, which is never indexed, never served and never in a prompt:
//! the guard alone reads it. A policy that does not load names its file and key, and the last
//! good one stays live.
use std::collections::HashMap;
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

/// One policy file, loaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Policy {
    pub answer: Option<AnswerMode>,
    pub max_code_lines: Option<usize>,
    pub forbidden: Vec<String>,
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
    #[error("policy {path}: {message}")]
    Invalid { path: PathBuf, message: String },
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
    pub fn load(path: &Path, base: Option<&Reference>) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.to_path_buf(),
            file: path.display().to_string(),
            source: e,
        })?;
        let file: PolicyFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for word in &file.forbidden {
            if word.is_empty() || word.chars().any(|c| !(c.is_alphanumeric() || c == '_')) {
                return Err(invalid(format!(
                    "forbidden: {word:?} is not a single word or identifier"
                )));
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
                    .map_err(|e: WindowError| invalid(format!("window[{i}]: {e}")))?,
            );
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut references = Vec::new();
        let mut reference_files = Vec::new();
        let listed = file
            .reference_solutions
            .iter()
            .map(|p| (p, false, "reference_solutions"))
            .chain(file.protected.iter().map(|p| (p, true, "protected")));
        for (relative, protected, key) in listed {
            let (code, bytes) =
                read_reference(dir, relative).map_err(|m| invalid(format!("{key}: {m}")))?;
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
            answer: file.answer,
            max_code_lines: file.max_code_lines,
            forbidden: file.forbidden,
            windows,
            reference_files,
            references,
        })
    }
}

fn read_reference(dir: &Path, relative: &str) -> Result<(String, u64), String> {
    let path = Path::new(relative);
    let inside_solution_dir = path
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .is_some_and(|first| first.ends_with(SOLUTION_DIR_SUFFIX));
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
        for block in super::code_blocks(&text) {
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
            references: Arc::new(references),
            windows,
            course_code: self.course_code.clone(),
        }
    }
}

/// Every course's policies, reloadable while the server runs.
#[derive(Debug, Default)]
pub struct Policies {
    content_dir: PathBuf,
    courses: RwLock<HashMap<String, Arc<CoursePolicies>>>,
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
        errors
    }

    pub fn course(&self, course: &str) -> Arc<CoursePolicies> {
        self.courses
            .read()
            .expect("policy lock")
            .get(course)
            .cloned()
            .unwrap_or_default()
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
}
