//! How long each stage of a turn took, for the node's `/metrics`: measured where the turn runs,
//! so that what the service adds to the model's own delay can be told apart from it.
use std::time::{Duration, Instant};

/// A turn's stages, each `None` when the turn did not reach it (a replay, an offline answer
/// has no model stages).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Committing the question (and its conversation).
    pub store_question: Option<Duration>,
    /// Embedding the question and searching the course and the learner's files (at the same
    /// time as `prepare`: the turn waits for the slower of the two).
    pub retrieve: Option<Duration>,
    /// The prompt versions chosen, the answer's row written and the history read (at once, and
    /// at the same time as `retrieve`).
    pub prepare: Option<Duration>,
    /// The prompt assembled within its budget and the output guard set up, until the model is
    /// asked.
    pub assemble: Option<Duration>,
    /// From asking the model to its first token: the model's own delay (and the network's).
    pub llm_first_token: Option<Duration>,
    /// From the model's first token to its last.
    pub stream: Option<Duration>,
    /// The answer's final write.
    pub store_answer: Option<Duration>,
    /// From the start of the turn to the model's first token.
    pub first_token_after: Option<Duration>,
    /// From the start of the turn to the first delta sent to the learner (after the output
    /// guard, which may hold the model's first tokens: a code block until it closes).
    pub first_delta_after: Option<Duration>,
}

impl Stages {
    /// What the turn added before the learner's first delta: everything from the start of the
    /// turn to that delta but the model's delay to its first token.
    pub fn added_before_first_delta(&self) -> Option<Duration> {
        Some(
            self.first_delta_after?
                .saturating_sub(self.llm_first_token?),
        )
    }
}

/// Times the stages one after another: each lap is the time since the last.
#[derive(Debug)]
pub struct StageClock {
    started: Instant,
    mark: Instant,
    pub stages: Stages,
}

impl StageClock {
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            mark: now,
            stages: Stages::default(),
        }
    }

    /// The time since the last lap (or the start), and a new lap begins.
    pub fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let lap = now - self.mark;
        self.mark = now;
        lap
    }

    /// The time since the turn started.
    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Notes that a delta was sent to the learner; only the first counts.
    pub fn delta_sent(&mut self) {
        if self.stages.first_delta_after.is_none() {
            self.stages.first_delta_after = Some(self.since_start());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_turn_added_is_its_time_to_the_first_delta_less_the_models_delay() {
        let stages = Stages {
            first_token_after: Some(Duration::from_millis(312)),
            first_delta_after: Some(Duration::from_millis(340)),
            llm_first_token: Some(Duration::from_millis(300)),
            ..Default::default()
        };
        assert_eq!(
            stages.added_before_first_delta(),
            Some(Duration::from_millis(40))
        );
        let no_delta = Stages {
            first_delta_after: None,
            ..stages
        };
        assert_eq!(no_delta.added_before_first_delta(), None);
        assert_eq!(Stages::default().added_before_first_delta(), None);
    }

    #[test]
    fn laps_follow_one_another_and_add_up_to_the_time_since_the_start() {
        let mut clock = StageClock::start();
        std::thread::sleep(Duration::from_millis(5));
        let first = clock.lap();
        std::thread::sleep(Duration::from_millis(5));
        let second = clock.lap();
        assert!(first >= Duration::from_millis(5) && second >= Duration::from_millis(5));
        assert!(clock.since_start() >= first + second);
    }
}
