//! Prompt versions as data and the rules a version must pass before it is stored: which
//! templates a course may override, the variables each documents in its header (the shipped
//! default's `{#- variables: ... -#}` comment is the contract), a syntax check with the line of
//! the error, no variable outside the documented ones, and a render for a sample learner that
//! fits the token budget (for the coaching note, one render per rule and language, none of them
//! empty; a digest must read its `data`). Also the stable ids of the shipped defaults
//! (`default:system@<sha>`).
use std::collections::BTreeSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    Budget, CoachingContext, DigestContext, OfflineFile, OfflinePassage, OfflineReply,
    SystemContext,
};

/// A template a course may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateName {
    /// The system prompt of every answer the model writes.
    System,
    /// The reply a learner gets when no model is configured.
    Offline,
    /// The note the output guard shows where it withheld a code block.
    Coaching,
    /// The request for the mentor's digest, when a model writes it.
    Digest,
}

impl TemplateName {
    pub const ALL: [TemplateName; 4] = [
        TemplateName::System,
        TemplateName::Offline,
        TemplateName::Coaching,
        TemplateName::Digest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Offline => "offline",
            Self::Coaching => "coaching",
            Self::Digest => "digest",
        }
    }

    /// Whether an A/B experiment may split learners between versions of this template. Its
    /// figures are counted per version an answer was written with, which an answer records for
    /// its system prompt (or, offline, its reply) only; a coaching note or a digest is chosen by
    /// label.
    pub fn allows_experiments(self) -> bool {
        matches!(self, Self::System | Self::Offline)
    }

    /// The shipped default's source, front matter and header included.
    pub fn shipped(self) -> &'static str {
        match self {
            Self::System => super::SYSTEM_TEMPLATE,
            Self::Offline => super::OFFLINE_TEMPLATE,
            Self::Coaching => super::COACHING_TEMPLATE,
            Self::Digest => super::DIGEST_TEMPLATE,
        }
    }

    /// The stable id of the shipped default: `default:<name>@<first 12 hex of its SHA-256>`,
    /// so that a message written with it names exactly which text it was.
    pub fn default_version_id(self) -> String {
        let digest = Sha256::digest(self.shipped().as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("default:{}@{hex}", self.as_str())
    }

    /// The variables the shipped default documents in its header.
    pub fn documented_variables(self) -> BTreeSet<String> {
        documented_variables(self.shipped())
    }
}

impl std::str::FromStr for TemplateName {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, VersionError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| VersionError::UnknownTemplate(s.chars().take(40).collect()))
    }
}

/// One stored version: immutable once written.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PromptVersion {
    pub id: String,
    /// The course it belongs to, or `*` for every course.
    pub course: String,
    pub template: TemplateName,
    pub text: String,
    pub author: String,
    pub message: String,
    /// The version it was edited from; `None` for a course's first.
    pub parent: Option<String>,
    pub created_at: i64,
}

/// A new version as an editor sends it.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub course: String,
    pub template: TemplateName,
    pub text: String,
    pub author: String,
    pub message: String,
    /// The version the editor started from: the newest one of the course's template, or
    /// `None` to save on whatever is newest.
    pub parent: Option<String>,
}

/// What a label points to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Label {
    pub course: String,
    pub template: TemplateName,
    pub label: String,
    pub version: String,
    pub updated_by: String,
    pub updated_at: i64,
}

/// Why a version, a label or an experiment was refused.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "unknown prompt template {0:?}: a course may override system, offline, coaching or digest"
    )]
    UnknownTemplate(String),
    #[error("template syntax error on line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("the template uses variables its header does not document: {}; documented: {}", .unknown.join(", "), .documented.join(", "))]
    UnknownVariables {
        unknown: Vec<String>,
        documented: Vec<String>,
    },
    #[error("rendering the template for a sample learner failed: {0}")]
    Render(String),
    #[error(
        "the template renders to {tokens} tokens for a sample learner; the budget allows {limit}"
    )]
    OverBudget { tokens: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("version {0:?} not found")]
    NotFound(String),
    /// Another editor saved first: the editor's parent is no longer the newest version.
    #[error(
        "another version was saved since {parent:?}: the newest is {head:?}; reload it and edit from there"
    )]
    StaleParent {
        parent: Option<String>,
        head: Option<String>,
    },
    #[error("{0}")]
    Conflict(String),
}

/// Longest message, author or text of a version, in characters / bytes.
const MAX_MESSAGE_CHARS: usize = 500;
const MAX_TEXT_BYTES: usize = 100_000;
/// The offline reply goes to the learner as it is: it has no model window, only this cap.
const MAX_OFFLINE_TOKENS: usize = 4_000;
/// A coaching note stands in for one code block: a few sentences, not a lecture.
const MAX_COACHING_TOKENS: usize = 300;
/// The rules a coaching note is rendered for, as the guard names them.
pub const COACHING_RULES: [&str; 3] = ["solution", "length", "forbidden"];

/// Globals and functions of minijinja that a template may use besides its variables.
const BUILTIN_NAMES: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "loop",
    "true",
    "false",
    "none",
];

/// The names a template header documents: the lines `name: what it is` of its first
/// `{# ... #}` comment after the `variables` line.
pub fn documented_variables(source: &str) -> BTreeSet<String> {
    let body = strip_front_matter(source);
    let Some(start) = body.find("{#") else {
        return BTreeSet::new();
    };
    let Some(len) = body[start..].find("#}") else {
        return BTreeSet::new();
    };
    body[start + 2..start + len]
        .lines()
        .skip_while(|l| !l.contains("variables"))
        .skip(1)
        .filter_map(|l| {
            let (name, _) = l.trim().split_once(':')?;
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            ok.then(|| name.to_string())
        })
        .collect()
}

/// The template without its `---` front matter.
pub fn strip_front_matter(source: &str) -> &str {
    source
        .strip_prefix("---\n")
        .and_then(|rest| rest.find("\n---\n").map(|end| &rest[end + 5..]))
        .unwrap_or(source)
}

/// Checks a version before it is stored: its message and size, its syntax, its variables
/// against the shipped default's header, and a render for a sample learner within `budget`.
pub fn validate(
    template: TemplateName,
    text: &str,
    message: &str,
    budget: &Budget,
) -> Result<(), VersionError> {
    if text.trim().is_empty() {
        return Err(VersionError::Invalid("the template text is empty".into()));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(VersionError::Invalid(format!(
            "the template text is {} bytes; at most {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    if message.trim().is_empty() || message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(VersionError::Invalid(format!(
            "a version needs a message of 1 to {MAX_MESSAGE_CHARS} characters saying what changed"
        )));
    }
    let compiled = super::Template::compile(template, "candidate", text).map_err(|e| match e {
        super::PromptError::Syntax { line, reason, .. } => VersionError::Syntax { line, reason },
        other => VersionError::Render(other.to_string()),
    })?;
    let documented = template.documented_variables();
    let mut unknown: Vec<String> = compiled
        .undeclared_variables()
        .into_iter()
        .filter(|v| !documented.contains(v) && !BUILTIN_NAMES.contains(&v.as_str()))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(VersionError::UnknownVariables {
            unknown,
            documented: documented.into_iter().collect(),
        });
    }
    let within = |rendered: Result<String, super::PromptError>, limit: usize| {
        let rendered = rendered.map_err(|e| VersionError::Render(e.to_string()))?;
        let tokens = budget.count(&rendered);
        if tokens > limit {
            return Err(VersionError::OverBudget { tokens, limit });
        }
        Ok(rendered)
    };
    match template {
        TemplateName::System => {
            within(
                compiled.render_system(&sample_learner()),
                system_token_limit(budget),
            )?;
        }
        TemplateName::Offline => {
            within(
                compiled.render_offline(&sample_offline()),
                MAX_OFFLINE_TOKENS,
            )?;
        }
        TemplateName::Coaching => {
            // Every rule in both languages the product speaks: a note that renders empty would
            // leave the learner with nothing where the block was.
            for rule in COACHING_RULES {
                for locale in ["en", "fr-FR"] {
                    let context = CoachingContext {
                        rule,
                        locale,
                        max_code_lines: Some(8),
                    };
                    let note = within(compiled.render_coaching(&context), MAX_COACHING_TOKENS)?;
                    if note.trim().is_empty() {
                        return Err(VersionError::Invalid(format!(
                            "the coaching note renders empty for the rule {rule:?} in {locale:?}: \
                             the learner would see nothing where the block was"
                        )));
                    }
                }
            }
        }
        TemplateName::Digest => {
            if !compiled.undeclared_variables().contains("data") {
                return Err(VersionError::Invalid(
                    "a digest template must use `data`: the learner's facts the model writes from"
                        .into(),
                ));
            }
            within(compiled.render_digest(&sample_digest()), budget.available())?;
        }
    }
    Ok(())
}

/// The most tokens a system prompt may take: what leaves room, in the model's window, for a
/// question of the longest kept length, the course passages and the answer.
pub fn system_token_limit(budget: &Budget) -> usize {
    budget
        .available()
        .saturating_sub(budget.max_question_tokens + budget.parts.passages)
}

/// A learner with every optional value present and long-ish, so a version is measured at its
/// largest.
fn sample_learner() -> SystemContext<'static> {
    SystemContext {
        learner_name: "Marie-Hélène Castellanos-Whitfield",
        course: "python-foundations",
        page_title: Some("Control flow: while loops, break, continue and loop invariants"),
        locale: "fr-FR",
        answer_policy: Some(
            "hints only: guide with questions and hints, never write the learner's code. \
             Code blocks longer than 8 lines are withheld.",
        ),
    }
}

fn sample_offline() -> OfflineReply {
    OfflineReply {
        passages: (1..=5)
            .map(|n| OfflinePassage {
                n,
                section: format!("Chapter {n} › A section with a fairly long heading"),
                url: format!("/course/python-foundations/chapter-{n}#a-section"),
                snippet: "A while loop runs its body again and again as long as its \
                    condition is true; something in the body must change the condition."
                    .repeat(2),
            })
            .collect(),
        files: vec![OfflineFile {
            path: "budget/main.py".into(),
            lines: Some("4–18".into()),
        }],
        goals: vec!["Handle the decimal comma in parse_amount".into()],
    }
}

/// A learner's activity of a busy week, as the digest's data block holds it.
fn sample_digest() -> DigestContext {
    let question = r#"      {"text": "Why does my while loop never stop when the balance is negative?", "answer_status": "complete", "rating": "down"},"#;
    let data = format!(
        "{{\n  \"learner_id\": \"marie-helene\",\n  \"n_questions\": 24,\n  \"chapters\": [\n{}\n  ],\n  \"stuck\": [],\n  \"open_flags\": [],\n  \"goals\": []\n}}",
        [question; 24].join("\n")
    );
    DigestContext {
        language: super::language_name("fr-FR"),
        learner: "Marie-Hélène Castellanos-Whitfield".into(),
        since: "2031-03-03".into(),
        data,
    }
}

/// A label name: lower-case letters, digits, `-` and `_`, 1 to 40 characters.
pub fn check_label(label: &str) -> Result<(), VersionError> {
    let ok = !label.is_empty()
        && label.len() <= 40
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(VersionError::Invalid(format!(
            "label {:?} is not a label: use 1 to 40 lower-case letters, digits, - or _",
            label.chars().take(60).collect::<String>()
        )))
    }
}

/// A course id as a prompt's scope: a course (letters, digits, `-`, `_`, `.`) or `*`.
pub fn check_course(course: &str) -> Result<(), VersionError> {
    let ok = course == "*"
        || (!course.is_empty()
            && course.len() <= 100
            && course
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    if ok {
        Ok(())
    } else {
        Err(VersionError::Invalid(format!(
            "{:?} is not a course id",
            course.chars().take(60).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget::new(16_000, 1_024, "gpt-4o-mini")
    }

    #[test]
    fn the_shipped_templates_document_their_variables_and_pass_their_own_checks() {
        let system = TemplateName::System.documented_variables();
        assert!(system.contains("learner_name") && system.contains("answer_policy"));
        assert!(
            TemplateName::Offline
                .documented_variables()
                .contains("passages")
        );
        for template in TemplateName::ALL {
            let text = strip_front_matter(template.shipped());
            validate(template, text, "shipped", &budget()).unwrap();
        }
    }

    #[test]
    fn a_default_id_names_the_template_and_its_text() {
        let id = TemplateName::System.default_version_id();
        assert!(id.starts_with("default:system@"), "{id}");
        assert_eq!(id.len(), "default:system@".len() + 12);
        assert_ne!(id, TemplateName::Offline.default_version_id());
    }

    #[test]
    fn a_syntax_error_is_refused_with_its_line() {
        let text = "You help {{ learner_name }}.\nAnswer in {{ language }}.\n{{ course | }}\n";
        match validate(TemplateName::System, text, "try", &budget()) {
            Err(VersionError::Syntax { line, .. }) => assert_eq!(line, 3, "{text}"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let text = "Hello {{ learner_name }\n";
        assert!(matches!(
            validate(TemplateName::System, text, "try", &budget()),
            Err(VersionError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn an_undocumented_variable_is_refused_and_named() {
        let text = "You help {{ learner_name }} with {{ secret_key }} and {{ grade.value }}.";
        match validate(TemplateName::System, text, "try", &budget()) {
            Err(VersionError::UnknownVariables {
                unknown,
                documented,
            }) => {
                assert_eq!(unknown, vec!["grade".to_string(), "secret_key".to_string()]);
                assert!(documented.contains(&"course".to_string()));
            }
            other => panic!("expected unknown variables, got {other:?}"),
        }
        // Loop variables and the documented ones pass.
        let ok = "{% for p in passages %}[{{ p.n }}] {{ loop.index }}{% endfor %}";
        validate(TemplateName::Offline, ok, "loop", &budget()).unwrap();
    }

    #[test]
    fn a_template_past_the_token_budget_is_refused() {
        let text = format!(
            "You help {{{{ learner_name }}}}. {}",
            "Be kind. ".repeat(5_000)
        );
        match validate(TemplateName::System, &text, "long", &budget()) {
            Err(VersionError::OverBudget { tokens, limit }) => {
                assert!(tokens > limit, "{tokens} <= {limit}");
                assert_eq!(limit, system_token_limit(&budget()));
            }
            other => panic!("expected over budget, got {other:?}"),
        }
    }

    #[test]
    fn empty_texts_messages_and_bad_labels_are_refused() {
        assert!(validate(TemplateName::System, "  ", "m", &budget()).is_err());
        assert!(validate(TemplateName::System, "hi", "", &budget()).is_err());
        check_label("production").unwrap();
        check_label("exp-2_b").unwrap();
        assert!(check_label("Prod").is_err());
        assert!(check_label("").is_err());
        assert!(check_label(&"a".repeat(41)).is_err());
        check_course("python-foundations").unwrap();
        check_course("*").unwrap();
        assert!(check_course("a b").is_err());
        // There is no history summary: history is cut to the budget, never summarised.
        assert!("history".parse::<TemplateName>().is_err());
        assert!("digest-v9".parse::<TemplateName>().is_err());
        assert_eq!(
            "offline".parse::<TemplateName>().unwrap(),
            TemplateName::Offline
        );
        assert_eq!(
            "coaching".parse::<TemplateName>().unwrap(),
            TemplateName::Coaching
        );
        assert_eq!(
            "digest".parse::<TemplateName>().unwrap(),
            TemplateName::Digest
        );
    }

    #[test]
    fn the_coaching_note_and_the_digest_document_their_variables() {
        let coaching = TemplateName::Coaching.documented_variables();
        for name in ["rule", "locale", "language", "french", "max_code_lines"] {
            assert!(coaching.contains(name), "{name} in {coaching:?}");
        }
        let digest = TemplateName::Digest.documented_variables();
        for name in ["language", "learner", "since", "data"] {
            assert!(digest.contains(name), "{name} in {digest:?}");
        }
        assert!(TemplateName::System.allows_experiments());
        assert!(!TemplateName::Coaching.allows_experiments());
        assert!(!TemplateName::Digest.allows_experiments());
    }

    #[test]
    fn a_coaching_note_that_renders_empty_for_a_rule_or_reads_an_undocumented_value_is_refused() {
        let only_solution = "{% if rule == \"solution\" %}Let's build it together.{% endif %}";
        match validate(TemplateName::Coaching, only_solution, "m", &budget()) {
            Err(VersionError::Invalid(message)) => {
                assert!(message.contains("\"length\""), "{message}")
            }
            other => panic!("expected an empty note refused, got {other:?}"),
        }
        match validate(
            TemplateName::Coaching,
            "{{ reason }}: try again",
            "m",
            &budget(),
        ) {
            Err(VersionError::UnknownVariables { unknown, .. }) => {
                assert_eq!(unknown, vec!["reason".to_string()])
            }
            other => panic!("expected an unknown variable, got {other:?}"),
        }
        let long = format!("{{{{ rule }}}} {}", "Try it yourself first. ".repeat(200));
        assert!(matches!(
            validate(TemplateName::Coaching, &long, "m", &budget()),
            Err(VersionError::OverBudget { limit: 300, .. })
        ));
        let ok = "{% if french %}Essaie d'abord ({{ rule }}).{% else %}Try it first ({{ rule }}, \
                  at most {{ max_code_lines }} lines).{% endif %}";
        validate(TemplateName::Coaching, ok, "m", &budget()).unwrap();
    }

    #[test]
    fn a_digest_template_must_read_the_facts() {
        match validate(
            TemplateName::Digest,
            "Write in {{ language }}.",
            "m",
            &budget(),
        ) {
            Err(VersionError::Invalid(message)) => assert!(message.contains("data"), "{message}"),
            other => panic!("expected the missing data refused, got {other:?}"),
        }
        validate(
            TemplateName::Digest,
            "Write in {{ language }} about {{ learner }} since {{ since }}:\n{{ data }}",
            "m",
            &budget(),
        )
        .unwrap();
        assert!(matches!(
            validate(TemplateName::Digest, "{{ data }} {% if %}", "m", &budget()),
            Err(VersionError::Syntax { line: 1, .. })
        ));
    }
}
