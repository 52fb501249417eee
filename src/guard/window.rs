//! Assessment windows: for a stated time (with its time zone), the companion is off for a
//! course or a project, or limited to explaining concepts. The server enforces them, whatever
//! the widget does, with a clock the tests can set.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

/// What the companion does during a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowMode {
    /// No answers for the course (or project) at all.
    Off,
    /// Concepts only: no help on the project, its files and brief kept out of the prompt, and
    /// no code longer than a few lines.
    Concepts,
}

/// One assessment window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    /// The end as written, with its zone, for the learner's message.
    pub end_local: String,
    pub mode: WindowMode,
    pub label: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WindowError {
    #[error(
        "{field} {value:?} is not a date and time with a time zone (for example \"2026-12-14T09:00:00[Europe/Paris]\" or \"2026-12-14T09:00:00+01:00\")"
    )]
    Time { field: &'static str, value: String },
    #[error("the window {label:?} ends ({end}) before it starts ({start})")]
    EndsBeforeStart {
        label: String,
        start: String,
        end: String,
    },
}

impl Window {
    pub fn parse(
        start: &str,
        end: &str,
        mode: WindowMode,
        label: &str,
    ) -> Result<Self, WindowError> {
        let start_at = parse_time("start", start)?;
        let end_at = parse_time("end", end)?;
        if end_at <= start_at {
            return Err(WindowError::EndsBeforeStart {
                label: label.to_string(),
                start: start.to_string(),
                end: end.to_string(),
            });
        }
        Ok(Self {
            start: start_at,
            end: end_at,
            end_local: end.to_string(),
            mode,
            label: label.to_string(),
        })
    }

    pub fn contains(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.end
    }

    /// What a learner reads when the window stops or limits an answer.
    pub fn message(&self, locale: &str) -> String {
        let french = locale.split(['-', '_']).next() == Some("fr");
        match (self.mode, french) {
            (WindowMode::Off, false) => format!(
                "The companion is paused for this course during {} until {}. Good luck!",
                self.label, self.end_local
            ),
            (WindowMode::Off, true) => format!(
                "Le compagnon est en pause pour ce cours pendant {} jusqu'à {}. Bon courage !",
                self.label, self.end_local
            ),
            (WindowMode::Concepts, false) => format!(
                "During {} (until {}) I can explain course concepts, but not help with your project.",
                self.label, self.end_local
            ),
            (WindowMode::Concepts, true) => format!(
                "Pendant {} (jusqu'à {}), je peux expliquer les notions du cours, mais pas t'aider sur ton projet.",
                self.label, self.end_local
            ),
        }
    }
}

fn parse_time(field: &'static str, value: &str) -> Result<Timestamp, WindowError> {
    if let Ok(zoned) = value.parse::<Zoned>() {
        return Ok(zoned.timestamp());
    }
    value.parse::<Timestamp>().map_err(|_| WindowError::Time {
        field,
        value: value.to_string(),
    })
}

/// The time the server goes by. Real by default; tests move it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Seconds added to the system time (tests only move this).
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let offset = self.offset_secs.load(Ordering::Relaxed);
        Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(offset))
            .unwrap_or_else(|_| Timestamp::now())
    }

    /// Moves this clock (and every clone of it) so that it reads `at` now.
    pub fn set(&self, at: Timestamp) {
        let offset = at.as_second() - Timestamp::now().as_second();
        self.offset_secs.store(offset, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_in_a_named_zone_holds_between_its_instants() {
        let window = Window::parse(
            "2026-12-14T09:00:00[Europe/Paris]",
            "2026-12-14T12:00:00[Europe/Paris]",
            WindowMode::Off,
            "the final quiz",
        )
        .unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(!window.contains(at("2026-12-14T07:59:59Z")));
        assert!(window.contains(at("2026-12-14T08:00:00Z")));
        assert!(window.contains(at("2026-12-14T10:59:59Z")));
        assert!(!window.contains(at("2026-12-14T11:00:00Z")));
    }

    #[test]
    fn a_window_ending_before_it_starts_or_without_a_zone_is_refused() {
        let err = Window::parse(
            "2026-12-14T12:00:00+01:00",
            "2026-12-14T09:00:00+01:00",
            WindowMode::Off,
            "quiz",
        )
        .unwrap_err();
        assert!(matches!(err, WindowError::EndsBeforeStart { .. }));
        let err = Window::parse(
            "2026-12-14 09:00",
            "2026-12-15T09:00:00Z",
            WindowMode::Off,
            "q",
        )
        .unwrap_err();
        assert_eq!(
            err,
            WindowError::Time {
                field: "start",
                value: "2026-12-14 09:00".into()
            }
        );
    }

    #[test]
    fn the_learner_reads_until_when_in_their_language() {
        let window = Window::parse(
            "2026-12-14T09:00:00Z",
            "2026-12-14T12:00:00Z",
            WindowMode::Off,
            "l'examen",
        )
        .unwrap();
        assert!(
            window
                .message("fr-FR")
                .contains("jusqu'à 2026-12-14T12:00:00Z")
        );
        assert!(window.message("en").contains("until 2026-12-14T12:00:00Z"));
    }

    #[test]
    fn a_clock_set_by_a_test_moves_every_clone() {
        let clock = Clock::default();
        let copy = clock.clone();
        let at: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        clock.set(at);
        assert!((copy.now().as_second() - at.as_second()).abs() <= 1);
    }
}
