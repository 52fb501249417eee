//! A/B experiments between prompt versions, as pure rules: a split must add up to 100, a
//! learner's arm is a hash of the experiment and the learner (the same arm on every node and
//! every turn, with no state), and the thumbs-up rate of an arm comes with a Wilson 95%
//! interval.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::versions::VersionError;

/// One arm: a version and the share of learners who get it, in whole percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub version: String,
    pub percent: u32,
}

/// An experiment as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub id: String,
    pub course: String,
    pub template: super::TemplateName,
    pub arms: Vec<Arm>,
    pub running: bool,
    pub created_by: String,
    pub started_at: i64,
    pub stopped_at: Option<i64>,
}

/// What the answers of one arm show, counted over the stored messages and their feedback.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArmStats {
    pub version: String,
    pub answers: u64,
    pub thumbs_up: u64,
    pub thumbs_down: u64,
    pub comments: u64,
    /// Answers whose question or answer raised a flag.
    pub flagged: u64,
    pub cancelled: u64,
    /// Mean length of the answers as the learner got them, in characters.
    pub mean_answer_chars: Option<f64>,
    /// Share of answers that cited a course passage (answers the guard found uncited are not).
    pub citation_rate: Option<f64>,
    pub mean_first_token_ms: Option<f64>,
    /// Thumbs up over thumbs given, with its Wilson 95% interval.
    pub thumbs_up_rate: Option<f64>,
    pub thumbs_up_interval: Option<(f64, f64)>,
}

/// The sums the store counts for one arm.
#[derive(Debug, Clone, Default)]
pub struct ArmCounts {
    pub version: String,
    pub answers: u64,
    pub thumbs_up: u64,
    pub thumbs_down: u64,
    pub comments: u64,
    pub flagged: u64,
    pub cancelled: u64,
    pub cited: u64,
    pub chars: u64,
    pub first_token_ms_sum: u64,
    pub first_token_n: u64,
}

impl ArmCounts {
    /// Means, rates and the interval of these counts.
    pub fn stats(&self) -> ArmStats {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let rated = self.thumbs_up + self.thumbs_down;
        ArmStats {
            version: self.version.clone(),
            answers: self.answers,
            thumbs_up: self.thumbs_up,
            thumbs_down: self.thumbs_down,
            comments: self.comments,
            flagged: self.flagged,
            cancelled: self.cancelled,
            mean_answer_chars: ratio(self.chars, self.answers),
            citation_rate: ratio(self.cited, self.answers),
            mean_first_token_ms: ratio(self.first_token_ms_sum, self.first_token_n),
            thumbs_up_rate: ratio(self.thumbs_up, rated),
            thumbs_up_interval: wilson_95(self.thumbs_up, rated),
        }
    }
}

/// Most arms an experiment may have.
const MAX_ARMS: usize = 10;

/// Whether learners may be split between versions of `template`: an arm's figures are counted
/// per version an answer records, which it does for its system prompt or offline reply only.
pub fn check_template(template: super::TemplateName) -> Result<(), VersionError> {
    if template.allows_experiments() {
        return Ok(());
    }
    Err(VersionError::Invalid(format!(
        "an experiment splits answers between versions of the system prompt or the offline \
         reply, whose figures each answer records; a {} version is chosen by label \
         (production), not by experiment",
        template.as_str()
    )))
}

/// Checks a split: two to ten arms, each a different version with more than 0 percent, adding
/// up to exactly 100.
pub fn check_split(arms: &[Arm]) -> Result<(), VersionError> {
    if arms.len() < 2 || arms.len() > MAX_ARMS {
        return Err(VersionError::Invalid(format!(
            "an experiment has 2 to {MAX_ARMS} arms, not {}",
            arms.len()
        )));
    }
    if let Some(arm) = arms.iter().find(|a| a.percent == 0) {
        return Err(VersionError::Invalid(format!(
            "the arm of {:?} has 0 percent",
            arm.version
        )));
    }
    let total: u64 = arms.iter().map(|a| u64::from(a.percent)).sum();
    if total != 100 {
        return Err(VersionError::Invalid(format!(
            "the arms' percentages add up to {total}, not 100"
        )));
    }
    for (i, arm) in arms.iter().enumerate() {
        if arms[..i].iter().any(|a| a.version == arm.version) {
            return Err(VersionError::Invalid(format!(
                "version {:?} is in two arms",
                arm.version
            )));
        }
    }
    Ok(())
}

/// The arm of `learner` in `experiment`: SHA-256 of both ids mapped to a bucket of 10,000 and
/// the arms laid end to end over the buckets. Deterministic across nodes and releases.
pub fn assign<'a>(experiment: &str, learner: &str, arms: &'a [Arm]) -> Option<&'a Arm> {
    let digest = Sha256::digest(format!("{experiment}\u{1f}{learner}").as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let bucket = u64::from_be_bytes(head) % 10_000;
    let mut upper = 0u64;
    for arm in arms {
        upper += u64::from(arm.percent) * 100;
        if bucket < upper {
            return Some(arm);
        }
    }
    arms.last()
}

/// The Wilson score interval at 95% for `successes` out of `n`: `(low, high)`, `None` with no
/// trials.
pub fn wilson_95(successes: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let margin = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denominator = 1.0 + z2 / n;
    Some((
        ((centre - margin) / denominator).max(0.0),
        ((centre + margin) / denominator).min(1.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_answers_templates_take_experiments() {
        check_template(crate::prompt::TemplateName::System).unwrap();
        check_template(crate::prompt::TemplateName::Offline).unwrap();
        for template in [
            crate::prompt::TemplateName::Coaching,
            crate::prompt::TemplateName::Digest,
        ] {
            let error = check_template(template).unwrap_err().to_string();
            assert!(error.contains(template.as_str()), "{error}");
        }
    }

    fn arms(split: &[(&str, u32)]) -> Vec<Arm> {
        split
            .iter()
            .map(|(v, p)| Arm {
                version: v.to_string(),
                percent: *p,
            })
            .collect()
    }

    #[test]
    fn a_thousand_learners_land_within_three_points_of_the_split_and_keep_their_arm() {
        for split in [
            vec![("a", 50), ("b", 50)],
            vec![("a", 80), ("b", 20)],
            vec![("a", 10), ("b", 30), ("c", 60)],
        ] {
            let arms = arms(&split);
            let mut counts = std::collections::HashMap::new();
            for n in 0..1_000 {
                let learner = format!("learner-{n}");
                let arm = assign("exp-1", &learner, &arms).unwrap();
                // The same learner always gets the same arm.
                for _ in 0..3 {
                    assert_eq!(assign("exp-1", &learner, &arms).unwrap(), arm);
                }
                *counts.entry(arm.version.clone()).or_insert(0u32) += 1;
            }
            for (version, percent) in &split {
                let got = f64::from(counts.get(*version).copied().unwrap_or(0)) / 10.0;
                eprintln!("split {split:?}: {version} configured {percent}%, got {got:.1}%");
                assert!(
                    (got - f64::from(*percent)).abs() <= 3.0,
                    "{version}: {got}% for {percent}%"
                );
            }
        }
    }

    #[test]
    fn another_experiment_reshuffles_the_learners() {
        let arms = arms(&[("a", 50), ("b", 50)]);
        let moved = (0..1_000)
            .filter(|n| {
                let learner = format!("learner-{n}");
                assign("exp-1", &learner, &arms) != assign("exp-2", &learner, &arms)
            })
            .count();
        assert!((350..650).contains(&moved), "{moved}");
    }

    #[test]
    fn a_split_must_add_up_to_a_hundred_over_distinct_versions() {
        check_split(&arms(&[("a", 50), ("b", 50)])).unwrap();
        for bad in [
            arms(&[("a", 50), ("b", 40)]),
            arms(&[("a", 60), ("b", 50)]),
            arms(&[("a", 100)]),
            arms(&[("a", 100), ("b", 0)]),
            arms(&[("a", 50), ("a", 50)]),
            arms(&[("a", u32::MAX), ("b", 101)]),
        ] {
            assert!(check_split(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_wilson_interval_matches_the_textbook_values() {
        assert_eq!(wilson_95(0, 0), None);
        let (low, high) = wilson_95(8, 10).unwrap();
        assert!(
            (low - 0.4902).abs() < 1e-3 && (high - 0.9433).abs() < 1e-3,
            "{low} {high}"
        );
        let (low, high) = wilson_95(0, 5).unwrap();
        assert_eq!(low, 0.0);
        assert!((high - 0.4345).abs() < 1e-3, "{high}");
    }
}
