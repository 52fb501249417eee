//! Replays: real past answers of a course, chosen by a filter, answered again from their
//! stored prompts (`record`) with a candidate version, beside the originals. The rules here
//! (what a filter may ask, how many turns one replay takes); the SQL is `store::replays`, the
//! run `chat::rerun`.
use serde::{Deserialize, Serialize};

/// The most turns one replay answers again.
pub const MAX_REPLAY_TURNS: usize = 200;
/// Turns a replay takes when the filter does not say.
pub const DEFAULT_REPLAY_TURNS: usize = 50;
/// The most replayed turns one page of results holds.
pub const MAX_REPLAY_PAGE: usize = 100;

/// Which past answers a replay takes: the newest `limit` of the course's answers with a
/// stored prompt that match every condition given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    /// Only answers a learner gave a thumbs down.
    #[serde(default)]
    pub thumbs_down: bool,
    /// Only answers whose question (or the answer itself) raised a flag.
    #[serde(default)]
    pub flagged: bool,
    /// Written at or after this time (ms since the epoch).
    #[serde(default)]
    pub from_ms: Option<i64>,
    /// Written before this time (ms since the epoch).
    #[serde(default)]
    pub to_ms: Option<i64>,
    /// Only answers written with this prompt version.
    #[serde(default)]
    pub prompt_version: Option<String>,
    /// How many turns at most (1 to [`MAX_REPLAY_TURNS`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("a replay takes at most {MAX_REPLAY_TURNS} turns; {0} were asked for")]
    TooMany(usize),
    #[error("a replay takes at least one turn")]
    NoTurnAsked,
    #[error("the date range is empty: from_ms {from} is not before to_ms {to}")]
    EmptyRange { from: i64, to: i64 },
    #[error(
        "no answer of this course that kept its prompt matches the filter (offline replies keep none)"
    )]
    NothingMatches,
    #[error("no replay {0}")]
    NotFound(String),
    #[error("replay {0} is not running")]
    NotRunning(String),
}

impl ReplayFilter {
    /// The filter's turn count, checked.
    pub fn checked_limit(&self) -> Result<usize, ReplayError> {
        if let (Some(from), Some(to)) = (self.from_ms, self.to_ms)
            && from >= to
        {
            return Err(ReplayError::EmptyRange { from, to });
        }
        match self.limit.unwrap_or(DEFAULT_REPLAY_TURNS) {
            0 => Err(ReplayError::NoTurnAsked),
            n if n > MAX_REPLAY_TURNS => Err(ReplayError::TooMany(n)),
            n => Ok(n),
        }
    }
}

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStatus {
    Running,
    Done,
    Cancelled,
    Failed,
}

impl ReplayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One replay and its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub id: String,
    pub course: String,
    pub candidate: String,
    pub filter: ReplayFilter,
    pub status: ReplayStatus,
    pub total_turns: i64,
    pub done_turns: i64,
    /// The model the candidate's answers came from; `instructed-fake` without a model.
    pub model: String,
    /// No model is configured: the candidate's answers come from the deterministic fake of
    /// `eval prompts`, which follows a few plain instructions of the prompt, not a real model.
    pub offline: bool,
    pub created_by: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// One replayed turn: the original question and answer, and the candidate's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayTurn {
    pub n: i64,
    pub message_id: String,
    pub question: String,
    pub original: String,
    pub original_version: Option<String>,
    pub candidate: Option<String>,
    /// pending | done | failed | cancelled
    pub status: String,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_between_one_and_the_most_turns_over_a_real_range() {
        assert_eq!(
            ReplayFilter::default().checked_limit(),
            Ok(DEFAULT_REPLAY_TURNS)
        );
        let asked = |limit| ReplayFilter {
            limit: Some(limit),
            ..Default::default()
        };
        assert_eq!(asked(200).checked_limit(), Ok(200));
        assert_eq!(asked(201).checked_limit(), Err(ReplayError::TooMany(201)));
        assert_eq!(asked(0).checked_limit(), Err(ReplayError::NoTurnAsked));
        let range = ReplayFilter {
            from_ms: Some(10),
            to_ms: Some(10),
            ..Default::default()
        };
        assert_eq!(
            range.checked_limit(),
            Err(ReplayError::EmptyRange { from: 10, to: 10 })
        );
        for status in [
            ReplayStatus::Running,
            ReplayStatus::Done,
            ReplayStatus::Cancelled,
            ReplayStatus::Failed,
        ] {
            assert_eq!(ReplayStatus::parse(status.as_str()), Some(status));
        }
    }
}
