//! Flags for the mentor: the rules that notice a learner who needs a human. The learner asks
//! for one (in words, English or French, or with the widget's "ask my mentor" button), sounds
//! discouraged or about to drop out, seems stuck (the same question again and again, several
//! thumbs-down), shows distress (urgent), or, when one is configured, an OpenAI-compatible
//! moderation endpoint says so. What a message says is read by [`super::intent`] (these keyword
//! rules first, then the nearest labelled examples); a repeated signal joins the learner's open
//! flag of its kind instead of stacking a new one. Detection runs beside the answer and never
//! fails a turn: errors are logged.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use serde::Deserialize;

use super::intent::{Evidence, Intents, Signal, rule_signals};
use super::{Feedback, Flag, FlagKind, Rating, Severity};
use crate::store::{Store, StoreError};
use crate::transcript::now_ms;

/// Earlier questions this similar to a new one count as the same question.
const SAME_QUESTION_SIMILARITY: f64 = 0.6;
/// A question asked this many times before (plus this time) means the learner is stuck.
const REPEATS_FOR_STUCK: usize = 2;
/// Thumbs-down within [`RECENT`] that mean the learner is stuck.
const DOWNS_FOR_STUCK: usize = 3;
/// How far back repeats and thumbs-down are looked for.
const RECENT: Duration = Duration::from_secs(24 * 3600);
/// Messages of the last day the rules read: the newest ones.
const RECENT_MESSAGES: usize = 500;
const EXCERPT_CHARS: usize = 160;
/// How long the "ask my mentor" button waits for the classifier to read its note.
const BUTTON_READ: Duration = Duration::from_secs(2);
pub const THUMBS_DOWN_REASON: &str = "several thumbs-down";

/// Lowercase words with accents folded; every other character separates words.
pub fn words(text: &str) -> Vec<String> {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        folded.push(fold_accent(c));
    }
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn fold_accent(c: char) -> char {
    match c {
        'à' | 'â' | 'ä' | 'á' | 'ã' => 'a',
        'ç' => 'c',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'î' | 'ï' | 'í' | 'ì' => 'i',
        'ô' | 'ö' | 'ó' | 'ò' | 'õ' => 'o',
        'ù' | 'û' | 'ü' | 'ú' => 'u',
        'ÿ' => 'y',
        'ñ' => 'n',
        other => other,
    }
}

/// Whether `phrase` (already folded, words separated by one space) occurs as whole words.
fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let phrase: Vec<&str> = phrase.split(' ').collect();
    words
        .windows(phrase.len())
        .any(|window| window.iter().zip(&phrase).all(|(w, p)| w == p))
}

const HUMAN_VERBS: &[&str] = &[
    // English
    "talk",
    "speak",
    "chat",
    "ask",
    "contact",
    "reach",
    "call",
    "see",
    "meet",
    "message",
    "email",
    "need",
    "want",
    "get", // French
    "parler",
    "voir",
    "contacter",
    "joindre",
    "appeler",
    "besoin",
    "veux",
    "voudrais",
    "demander",
    "rencontrer",
    "ecrire",
];
const HUMAN_TARGETS: &[&str] = &[
    "human",
    "humans",
    "mentor",
    "mentors",
    "mentore",
    "teacher",
    "tutor",
    "instructor",
    "humain",
    "humaine",
    "tuteur",
    "tutrice",
    "professeur",
    "prof",
    "formateur",
    "formatrice",
    "real person",
    "actual person",
    "real human",
    "vraie personne",
    "personne reelle",
    "vrai humain",
];
/// How many words after the verb the target may come ("talk to my own mentor").
const HUMAN_REACH: usize = 4;

/// The words that show the learner asks for a human, if they do.
pub fn asks_for_human(text: &str) -> Option<String> {
    let words = words(text);
    for (i, word) in words.iter().enumerate() {
        if !HUMAN_VERBS.contains(&word.as_str()) {
            continue;
        }
        let end = (i + 1 + HUMAN_REACH).min(words.len());
        for j in i + 1..end {
            for target in HUMAN_TARGETS {
                let target_words: Vec<&str> = target.split(' ').collect();
                let fits = j + target_words.len() <= words.len()
                    && target_words
                        .iter()
                        .enumerate()
                        .all(|(k, t)| words[j + k] == *t);
                if fits {
                    return Some(words[i..j + target_words.len()].join(" "));
                }
            }
        }
    }
    None
}

/// Wording about self-harm, despair or safety (folded, whole words). English then French.
const DISTRESS_PHRASES: &[&str] = &[
    "kill myself",
    "killing myself",
    "suicide",
    "suicidal",
    "end my life",
    "ending my life",
    "want to die",
    "wanna die",
    "hurt myself",
    "hurting myself",
    "harm myself",
    "self harm",
    "cut myself",
    "no reason to live",
    "better off dead",
    "can t go on",
    "cannot go on",
    "can t take it anymore",
    "cant take it anymore",
    "feel hopeless",
    "feel so hopeless",
    "feeling hopeless",
    "panic attack",
    "panic attacks",
    "nervous breakdown",
    "being abused",
    "being harassed",
    "harassing me",
    "threatening me",
    "threatened me",
    "not safe at home",
    "unsafe at home",
    "i am depressed",
    "i m depressed",
    "me suicider",
    "suicidaire",
    "envie de mourir",
    "veux mourir",
    "en finir",
    "mettre fin a mes jours",
    "me faire du mal",
    "n en peux plus",
    "plus envie de vivre",
    "crise d angoisse",
    "crise de panique",
    "harcele",
    "harcelee",
    "harcelement",
    "je suis deprime",
    "je suis deprimee",
    "desespere",
    "desesperee",
    "me menace",
];

/// The distress or safety wording in `text`, if any.
pub fn distress(text: &str) -> Option<&'static str> {
    let words = words(text);
    DISTRESS_PHRASES
        .iter()
        .copied()
        .find(|phrase| contains_phrase(&words, phrase))
}

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "my", "me", "you", "your", "is", "are", "was", "do", "does", "did",
    "to", "of", "in", "on", "it", "and", "or", "how", "what", "why", "can", "this", "that", "for",
    "with", "again", "please", "be", "so", "le", "la", "les", "un", "une", "des", "de", "du", "je",
    "j", "tu", "il", "mon", "ma", "mes", "est", "et", "ou", "pourquoi", "comment", "quoi", "que",
    "qu", "ce", "ca", "pas", "ne", "en", "au", "aux", "s", "t", "d", "l",
];

/// The content words of a question, for comparing questions.
pub fn key_words(text: &str) -> BTreeSet<String> {
    words(text)
        .into_iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| {
            // A crude stem: "loops" and "loop" are the same word here.
            if w.len() > 3 && w.ends_with('s') {
                w[..w.len() - 1].to_string()
            } else {
                w
            }
        })
        .collect()
}

/// Jaccard similarity of two questions' content words, 0 to 1.
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (key_words(a), key_words(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let shared = a.intersection(&b).count() as f64;
    shared / a.union(&b).count() as f64
}

/// Weeks a kind's trend covers on the mentor's page.
pub const TREND_WEEKS: usize = 8;
pub const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// How many of `times` fall in each of the `weeks` weeks before `now`, oldest week first (the
/// last one ends at `now`); times outside are ignored.
pub fn weekly_counts(times: &[i64], now: i64, weeks: usize) -> Vec<u32> {
    let mut counts = vec![0u32; weeks];
    for &at in times {
        if at > now {
            continue;
        }
        let ago = ((now - at) / WEEK_MS) as usize;
        if ago < weeks {
            counts[weeks - 1 - ago] += 1;
        }
    }
    counts
}

/// A short, one-line quote of `text`.
pub fn excerpt(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= EXCERPT_CHARS {
        return line;
    }
    let cut: String = line.chars().take(EXCERPT_CHARS).collect();
    format!("{cut}…")
}

/// A moderation endpoint's verdict on one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub flagged: bool,
    pub categories: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ModerationResponse {
    #[serde(default)]
    results: Vec<ModerationResult>,
}

#[derive(Debug, Deserialize)]
struct ModerationResult {
    #[serde(default)]
    flagged: bool,
    #[serde(default)]
    categories: std::collections::BTreeMap<String, Option<bool>>,
}

/// An OpenAI-compatible `/moderations` endpoint, asked through async-openai.
pub struct Moderation {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
}

impl Moderation {
    pub fn new(base_url: &str, api_key: &str, model: &str, timeout: Duration) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/').to_string())
            .with_api_key(api_key.to_string());
        Self {
            client: Client::with_config(config),
            model: model.to_string(),
            timeout,
        }
    }

    pub async fn check(&self, text: &str) -> Result<Verdict, String> {
        let request = serde_json::json!({"model": self.model, "input": text});
        let moderations = self.client.moderations();
        let call = moderations.create_byot::<_, ModerationResponse>(request);
        let response = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no verdict within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        let mut verdict = Verdict {
            flagged: false,
            categories: Vec::new(),
        };
        for result in response.results {
            verdict.flagged |= result.flagged;
            verdict.categories.extend(
                result
                    .categories
                    .into_iter()
                    .filter(|(_, on)| *on == Some(true))
                    .map(|(name, _)| name),
            );
        }
        Ok(verdict)
    }
}

/// Categories that make a moderation flag urgent.
fn urgent_category(category: &str) -> bool {
    category.starts_with("self-harm")
        || category.starts_with("self_harm")
        || category.starts_with("violence")
        || category == "harassment/threatening"
        || category == "sexual/minors"
}

/// A new question, as the detection hook sees it.
#[derive(Debug, Clone)]
pub struct QuestionRef {
    pub learner_id: String,
    pub conversation_id: String,
    pub message_id: String,
    pub text: String,
}

/// What the mentor reads for a kind read in a message.
fn signal_reason(signal: &Signal, text: &str) -> String {
    let what = match signal.kind {
        FlagKind::HumanRequested => "asked for a human",
        FlagKind::Discouraged => "sounds discouraged or close to giving up",
        _ => "distress or safety wording",
    };
    let why = match &signal.evidence {
        Evidence::Words(words) => format!("{words:?}"),
        Evidence::Nearest { .. } => signal.describe(),
    };
    format!("{what} ({why}): \"{}\"", excerpt(text))
}

/// Applies the rules and records the flags they raise.
pub struct Flagger {
    store: Store,
    moderation: Option<Moderation>,
    intents: Option<Arc<Intents>>,
}

impl Flagger {
    pub fn new(store: Store, moderation: Option<Moderation>) -> Self {
        Self {
            store,
            moderation,
            intents: None,
        }
    }

    /// Reads intent with the nearest examples too, not the keyword rules alone.
    pub fn with_intents(mut self, intents: Arc<Intents>) -> Self {
        self.intents = Some(intents);
        self
    }

    /// The kinds read in `text`: by the classifier when there is one (the keyword rules alone
    /// if it fails, logged), else by the keyword rules.
    pub async fn read(&self, text: &str) -> Vec<Signal> {
        self.read_with(text, false).await
    }

    /// The kinds read in the note of the "ask my mentor" button: as [`Flagger::read`], with its
    /// clauses also read one by one (a request and its reason, "call me, no one would notice
    /// if I was gone").
    pub async fn read_note(&self, text: &str) -> Vec<Signal> {
        self.read_with(text, true).await
    }

    /// [`Flagger::read`], the clauses read one by one too when `clauses`.
    async fn read_with(&self, text: &str, clauses: bool) -> Vec<Signal> {
        let Some(intents) = &self.intents else {
            return rule_signals(text);
        };
        let started = Instant::now();
        let read = if clauses {
            intents.classify_clauses(text).await
        } else {
            intents.classify(text).await
        };
        match read {
            Ok(signals) => {
                tracing::debug!(
                    elapsed_us = started.elapsed().as_micros() as u64,
                    n_signals = signals.len(),
                    "intent read"
                );
                signals
            }
            Err(error) => {
                tracing::warn!(%error, "intent classifier failed: keyword rules only");
                rule_signals(text)
            }
        }
    }

    /// Runs every rule on a newly stored question; returns the flags raised (a signal that
    /// joined an open flag raises none). Never fails: a rule that cannot run is logged and
    /// skipped.
    #[tracing::instrument(skip_all, fields(learner = %q.learner_id, message = %q.message_id))]
    pub async fn on_question(&self, q: &QuestionRef) -> Vec<Flag> {
        let mut raised = Vec::new();
        let flag = |kind, severity, reason: String| {
            Flag::new(
                &q.learner_id,
                Some(&q.conversation_id),
                Some(&q.message_id),
                kind,
                severity,
                reason,
            )
        };
        for signal in self.read(&q.text).await {
            let severity = if signal.kind == FlagKind::Distress {
                Severity::Urgent
            } else {
                Severity::Normal
            };
            let new = flag(signal.kind, severity, signal_reason(&signal, &q.text))
                .with_score(f64::from(signal.score));
            match self.group(new, &q.message_id).await {
                Ok(Some(flag)) => raised.push(flag),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, kind = signal.kind.as_str(), "cannot store a flag")
                }
            }
        }
        let mut others = Vec::new();
        match self.repeats(q).await {
            Ok(Some(n)) => others.push(flag(
                FlagKind::Stuck,
                Severity::Normal,
                format!(
                    "asked the same question {} times: \"{}\"",
                    n + 1,
                    excerpt(&q.text)
                ),
            )),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "repeat detection failed"),
        }
        if let Some(moderation) = &self.moderation {
            match moderation.check(&q.text).await {
                Ok(verdict) if verdict.flagged => {
                    let severity = if verdict.categories.iter().any(|c| urgent_category(c)) {
                        Severity::Urgent
                    } else {
                        Severity::Normal
                    };
                    let categories = if verdict.categories.is_empty() {
                        "unspecified".to_string()
                    } else {
                        verdict.categories.join(", ")
                    };
                    others.push(flag(
                        FlagKind::Moderation,
                        severity,
                        format!(
                            "moderation flagged it ({categories}): \"{}\"",
                            excerpt(&q.text)
                        ),
                    ));
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "moderation check failed"),
            }
        }
        raised.extend(self.record(others).await);
        raised
    }

    /// Stores `flag` with its message as its first signal, unless the learner already has an
    /// open flag of its kind at least as severe: the message then joins that one (the mentor
    /// sees one flag with its signals, not a stack), also when two messages are read at the
    /// same moment (the store's upsert). The new flag, if one was stored.
    async fn group(&self, flag: Flag, message_id: &str) -> Result<Option<Flag>, StoreError> {
        let raised = self
            .store
            .raise_or_join_flag(&flag, Some(message_id))
            .await?;
        match &raised {
            Some(flag) => tracing::info!(
                kind = flag.kind.as_str(),
                severity = flag.severity.as_str(),
                "flag raised"
            ),
            None => tracing::info!(kind = flag.kind.as_str(), "signal joined an open flag"),
        }
        Ok(raised)
    }

    /// How many earlier recent questions are the same as this one, when that makes the learner
    /// stuck and no open flag already says so.
    async fn repeats(&self, q: &QuestionRef) -> Result<Option<usize>, StoreError> {
        let since = now_ms() - RECENT.as_millis() as i64;
        // The newest questions of the day, however many came before them.
        let recent = self
            .store
            .latest_learner_messages(&q.learner_id, since, RECENT_MESSAGES)
            .await?;
        let same: Vec<_> = recent
            .iter()
            // Only questions asked before this one (ids are time-ordered UUIDv7).
            .filter(|m| m.role == "learner" && m.id.as_str() < q.message_id.as_str())
            .filter(|m| similarity(&m.text, &q.text) >= SAME_QUESTION_SIMILARITY)
            .collect();
        if same.len() < REPEATS_FOR_STUCK {
            return Ok(None);
        }
        for earlier in &same {
            if self
                .store
                .has_open_flag(&q.learner_id, FlagKind::Stuck, Some(&earlier.id))
                .await?
            {
                return Ok(None);
            }
        }
        Ok(Some(same.len()))
    }

    /// After a rating: several thumbs-down recently mean the learner is stuck.
    pub async fn on_feedback(&self, feedback: &Feedback) -> Result<Option<Flag>, StoreError> {
        if feedback.rating != Rating::Down {
            return Ok(None);
        }
        let since = now_ms() - RECENT.as_millis() as i64;
        let downs = self
            .store
            .feedback_since(&feedback.learner_id, since)
            .await?
            .into_iter()
            .filter(|f| f.rating == Rating::Down)
            .count();
        if downs < DOWNS_FOR_STUCK {
            return Ok(None);
        }
        let already = self
            .store
            .flags(&feedback.learner_id, true)
            .await?
            .iter()
            .any(|f| f.kind == FlagKind::Stuck && f.reason.starts_with(THUMBS_DOWN_REASON));
        if already {
            return Ok(None);
        }
        let message = self.store.message(&feedback.message_id).await?;
        let flag = Flag::new(
            &feedback.learner_id,
            message.as_ref().map(|m| m.conversation_id.as_str()),
            Some(&feedback.message_id),
            FlagKind::Stuck,
            Severity::Normal,
            format!("{THUMBS_DOWN_REASON}: {downs} answers rated down in the last 24 hours"),
        );
        self.store.add_flag(&flag).await?;
        Ok(Some(flag))
    }

    /// The learner pressed "ask my mentor" (with an optional message).
    pub async fn on_mentor_request(
        &self,
        learner_id: &str,
        conversation_id: &str,
        text: Option<&str>,
    ) -> Result<Flag, StoreError> {
        let since = now_ms() - RECENT.as_millis() as i64;
        let last_question = self
            .store
            .latest_learner_messages(learner_id, since, RECENT_MESSAGES)
            .await?
            .into_iter()
            .rev()
            .find(|m| m.role == "learner" && m.conversation_id == conversation_id);
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        // The button's words are read as a question's are (the classifier, not the keyword
        // rules alone): distress in them makes the request urgent.
        let urgent = match text {
            // The button answers at once: a classifier still warming up (its bank is trained
            // on first use) is not waited for past BUTTON_READ, the keyword rules read alone.
            Some(text) => tokio::time::timeout(BUTTON_READ, self.read_note(text))
                .await
                .unwrap_or_else(|_| rule_signals(text))
                .into_iter()
                .find(|s| s.kind == FlagKind::Distress)
                .map(|signal| match &signal.evidence {
                    Evidence::Words(words) => format!("{words:?}"),
                    Evidence::Nearest { .. } => signal.describe(),
                }),
            None => None,
        };
        let mut reason = "asked for their mentor with the \"ask my mentor\" button".to_string();
        if let Some(text) = text {
            reason.push_str(&format!(": \"{}\"", excerpt(text)));
        }
        if let Some(why) = &urgent {
            reason.push_str(&format!(" (distress or safety wording: {why})"));
        }
        // A request repeated while the earlier one is open joins it (the mentor sees one flag),
        // unless it says something new or is more urgent.
        let open = self
            .store
            .flags(learner_id, true)
            .await?
            .into_iter()
            .find(|f| {
                f.kind == FlagKind::HumanRequested
                    && f.conversation_id.as_deref() == Some(conversation_id)
                    && (text.is_none() || f.reason == reason)
                    && (urgent.is_none() || f.severity == Severity::Urgent)
            });
        if let Some(flag) = open {
            return Ok(flag);
        }
        let flag = Flag::new(
            learner_id,
            Some(conversation_id),
            last_question.as_ref().map(|m| m.id.as_str()),
            FlagKind::HumanRequested,
            if urgent.is_some() {
                Severity::Urgent
            } else {
                Severity::Normal
            },
            reason,
        );
        self.store.add_flag(&flag).await?;
        Ok(flag)
    }

    /// The output guard withheld part of an answer: the mentor and the course team see which
    /// rule fired and why (the withheld text stays on the message).
    pub async fn on_withheld(
        &self,
        learner_id: &str,
        conversation_id: &str,
        answer_id: &str,
        reasons: &[String],
    ) -> Vec<Flag> {
        let flag = Flag::new(
            learner_id,
            Some(conversation_id),
            Some(answer_id),
            FlagKind::Policy,
            Severity::Normal,
            format!(
                "the output guard withheld part of an answer ({})",
                reasons.join("; ")
            ),
        );
        self.record(vec![flag]).await
    }

    async fn record(&self, flags: Vec<Flag>) -> Vec<Flag> {
        let mut recorded = Vec::new();
        for flag in flags {
            match self.store.add_flag(&flag).await {
                Ok(()) => {
                    tracing::info!(
                        kind = flag.kind.as_str(),
                        severity = flag.severity.as_str(),
                        "flag raised"
                    );
                    recorded.push(flag);
                }
                Err(error) => {
                    tracing::warn!(%error, kind = flag.kind.as_str(), "cannot store a flag")
                }
            }
        }
        recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_for_a_human_is_noticed_in_english_and_french() {
        assert!(asks_for_human("Can I talk to my mentor about this?").is_some());
        assert!(asks_for_human("I want to speak with a real person please").is_some());
        assert!(asks_for_human("Je voudrais parler à mon mentor").is_some());
        assert!(asks_for_human("j'ai besoin d'un humain").is_some());
        assert!(asks_for_human("Est-ce que je peux contacter ma tutrice ?").is_some());
    }

    #[test]
    fn ordinary_questions_do_not_ask_for_a_human() {
        assert!(asks_for_human("Why does my while loop never stop?").is_none());
        assert!(asks_for_human("How do I call a function with two arguments?").is_none());
        assert!(asks_for_human("Pourquoi ma boucle ne s'arrête pas ?").is_none());
    }

    #[test]
    fn distress_wording_is_found_and_programming_words_are_not() {
        assert_eq!(
            distress("honestly I want to die, nothing works"),
            Some("want to die")
        );
        assert_eq!(
            distress("Je n'en peux plus, j'ai envie de tout arrêter"),
            Some("n en peux plus")
        );
        assert!(distress("I am being harassed in the forum").is_some());
        assert!(distress("How do I kill a process that hangs?").is_none());
        assert!(distress("my loop is stuck forever, help").is_none());
    }

    #[test]
    fn the_same_question_in_other_words_is_similar_and_a_different_one_is_not() {
        let a = "Why does my while loop never stop?";
        assert!(similarity(a, "why does my while loop never stop") >= SAME_QUESTION_SIMILARITY);
        assert!(similarity(a, "My while loops never stop, why?") >= SAME_QUESTION_SIMILARITY);
        assert!(similarity(a, "What is a dictionary comprehension?") < SAME_QUESTION_SIMILARITY);
        assert_eq!(similarity("?", a), 0.0);
    }

    #[test]
    fn accents_fold_and_punctuation_separates_words() {
        assert_eq!(words("Où est l'Élève ?"), vec!["ou", "est", "l", "eleve"]);
    }

    #[test]
    fn signals_are_counted_in_the_week_they_came_oldest_week_first() {
        let now = 100 * WEEK_MS;
        let times = [
            now,                   // this week
            now - 1,               // this week
            now - WEEK_MS,         // last week (exactly one week ago)
            now - 3 * WEEK_MS - 5, // four weeks back
            now - 8 * WEEK_MS,     // out of the window
            now + 10,              // in the future: ignored
        ];
        assert_eq!(weekly_counts(&times, now, 4), [1, 0, 1, 2]);
        assert_eq!(weekly_counts(&[], now, 3), [0, 0, 0]);
    }

    #[test]
    fn excerpts_are_one_bounded_line() {
        let long = "word ".repeat(100);
        let short = excerpt(&long);
        assert!(short.chars().count() <= EXCERPT_CHARS + 1);
        assert!(!excerpt("a\nb").contains('\n'));
    }
}
