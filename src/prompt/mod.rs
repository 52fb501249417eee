//! Prompts: the versioned templates in `prompts/` and the token-budgeted assembly of what the
//! model receives (system prompt, history, delimited course passages, the question).
pub mod budget;

use minijinja::Environment;
use serde::Serialize;

pub use budget::{AssembledPrompt, Budget, HistoryTurn, assemble};

const SYSTEM_TEMPLATE: &str = include_str!("../../prompts/system.md");
const OFFLINE_TEMPLATE: &str = include_str!("../../prompts/offline.md");

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt template {name}: {reason}")]
    Template { name: &'static str, reason: String },
}

/// The compiled templates and the version of the system prompt.
pub struct Prompts {
    env: Environment<'static>,
    system_version: String,
}

/// What the system prompt may mention.
#[derive(Debug, Serialize)]
pub struct SystemContext<'a> {
    pub learner_name: &'a str,
    pub course: &'a str,
    pub page_title: Option<&'a str>,
}

/// One line of the offline reply.
#[derive(Debug, Serialize)]
pub struct OfflinePassage {
    pub n: usize,
    pub section: String,
    pub url: String,
    pub snippet: String,
}

impl Prompts {
    /// Loads the templates shipped with the binary.
    pub fn builtin() -> Result<Self, PromptError> {
        let (version, system) = split_version(SYSTEM_TEMPLATE);
        let mut env = Environment::new();
        env.add_template_owned("system", system.to_string())
            .map_err(|e| PromptError::Template {
                name: "system",
                reason: e.to_string(),
            })?;
        env.add_template("offline", OFFLINE_TEMPLATE)
            .map_err(|e| PromptError::Template {
                name: "offline",
                reason: e.to_string(),
            })?;
        Ok(Self {
            env,
            system_version: version,
        })
    }

    pub fn system_version(&self) -> &str {
        &self.system_version
    }

    pub fn render_system(&self, context: &SystemContext<'_>) -> Result<String, PromptError> {
        self.render("system", context)
    }

    pub fn render_offline(&self, passages: &[OfflinePassage]) -> Result<String, PromptError> {
        self.render(
            "offline",
            minijinja::context! { passages => minijinja::Value::from(minijinja::value::Serde(passages)) },
        )
    }

    fn render(&self, name: &'static str, context: impl Serialize) -> Result<String, PromptError> {
        let template = self.env.get_template(name).map_err(|e| PromptError::Template {
            name,
            reason: e.to_string(),
        })?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(&context)))
            .map(|s| s.trim().to_string())
            .map_err(|e| PromptError::Template {
                name,
                reason: e.to_string(),
            })
    }
}

/// Splits `version: "..."` front matter from a template.
fn split_version(source: &str) -> (String, &str) {
    if let Some(rest) = source.strip_prefix("---\n") {
        if let Some(end) = rest.find("\n---\n") {
            let version = rest[..end]
                .lines()
                .find_map(|l| l.strip_prefix("version:"))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| "unversioned".to_string());
            return (version, &rest[end + 5..]);
        }
    }
    ("unversioned".to_string(), source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_system_prompt_has_a_version_and_renders_the_learner() {
        let prompts = Prompts::builtin().unwrap();
        assert_eq!(prompts.system_version(), "system-v1");
        let text = prompts
            .render_system(&SystemContext {
                learner_name: "Ada",
                course: "python-foundations",
                page_title: Some("While loops"),
            })
            .unwrap();
        assert!(text.contains("Ada"));
        assert!(text.contains("\"While loops\""));
        assert!(!text.starts_with("---"));
    }

    #[test]
    fn the_offline_reply_lists_passages_with_links() {
        let prompts = Prompts::builtin().unwrap();
        let text = prompts
            .render_offline(&[OfflinePassage {
                n: 1,
                section: "Control flow › While loops".into(),
                url: "/course/x#y".into(),
                snippet: "A while loop...".into(),
            }])
            .unwrap();
        assert!(text.contains("not available"));
        assert!(text.contains("[1] Control flow › While loops (/course/x#y)"));
    }
}
