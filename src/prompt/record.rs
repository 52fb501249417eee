//! What the model received for one answer, kept with the answer: every chat message with its
//! role, text and tokens, each part's tokens, what the budget left out, and what a replay needs
//! to put the same context under another system prompt (the values the system template was
//! rendered with and the blocks of the user message as they went in). Plain data; the store
//! keeps it as JSON beside the message (migration 0014).
use serde::{Deserialize, Serialize};

use super::SystemContext;
use super::budget::{AssembledPrompt, Budget, Dropped, PromptBlocks};
use crate::llm::{ChatMessage, Role};

/// The prompt of one answer, as the model received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// The course the turn was about (the ask's, else the learner's), if any.
    pub course_id: Option<String>,
    /// The learner's current project, whose policy applied.
    #[serde(default)]
    pub project: Option<String>,
    /// Every chat message sent, in order.
    pub messages: Vec<RecordedMessage>,
    /// The prompt's tokens, overheads included.
    pub tokens: usize,
    /// The most it could take: the model window minus the answer's reserve.
    pub limit: usize,
    /// Each part's tokens (`system`, `profile`, `mentor`, `brief`, `attachments`, `snippets`,
    /// `passages`, `history`, `earlier_questions`, `question`, `framing`): they add up to
    /// `tokens`.
    pub parts: Vec<PartTokens>,
    /// What the budget left out or cut.
    pub dropped: Vec<Dropped>,
    /// What the system template was rendered with.
    pub system: SystemValues,
    /// The user message's blocks and the history turns as they went in.
    pub blocks: PromptBlocks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub role: Role,
    pub content: String,
    /// The content's tokens (the message's own overhead is counted in `framing`).
    pub tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartTokens {
    pub part: String,
    pub tokens: usize,
}

/// The values a system template is rendered with, kept so that another version can be
/// rendered for the same turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemValues {
    pub learner_name: String,
    pub course: String,
    pub page_title: Option<String>,
    pub locale: String,
    pub answer_policy: Option<String>,
}

impl SystemValues {
    pub fn context(&self) -> SystemContext<'_> {
        SystemContext {
            learner_name: &self.learner_name,
            course: &self.course,
            page_title: self.page_title.as_deref(),
            locale: &self.locale,
            answer_policy: self.answer_policy.as_deref(),
        }
    }
}

impl From<&SystemContext<'_>> for SystemValues {
    fn from(context: &SystemContext<'_>) -> Self {
        Self {
            learner_name: context.learner_name.to_string(),
            course: context.course.to_string(),
            page_title: context.page_title.map(str::to_string),
            locale: context.locale.to_string(),
            answer_policy: context.answer_policy.map(str::to_string),
        }
    }
}

impl PromptRecord {
    /// The record of `prompt`, assembled within `budget` from a system prompt rendered with
    /// `system`.
    pub fn new(
        budget: &Budget,
        prompt: &AssembledPrompt,
        course_id: Option<String>,
        system: SystemValues,
    ) -> Self {
        Self {
            course_id,
            project: None,
            messages: prompt
                .messages
                .iter()
                .map(|m| RecordedMessage {
                    role: m.role,
                    content: m.content.clone(),
                    tokens: budget.count(&m.content),
                })
                .collect(),
            tokens: prompt.tokens,
            limit: budget.available(),
            parts: prompt
                .counted
                .iter()
                .map(|p| PartTokens {
                    part: p.part.to_string(),
                    tokens: p.tokens,
                })
                .collect(),
            dropped: prompt.dropped.clone(),
            system,
            blocks: prompt.blocks.clone(),
        }
    }

    /// The messages as the model received them.
    pub fn chat_messages(&self) -> Vec<ChatMessage> {
        self.messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role,
                content: m.content.clone(),
            })
            .collect()
    }
}
