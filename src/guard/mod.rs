//! The output guard: course rules enforced on what the model writes before a learner sees it.
//! Prose flows as it streams (a line that may still be code waits for its end, and a possible
//! citation or forbidden word at its very end for the next delta); each fenced code block is
//! held until it closes, and each run of lines that read as code outside fences until a line of
//! prose ends it, then checked against
//! the project's reference solutions and protected fragments, the policy's length limit and its
//! forbidden words. A block that fails is replaced by a coaching note in the learner's language
//! (the texts the answering path rendered from the course's `coaching` template, else the
//! guard's own, which the shipped template renders word for word); the original stays in the
//! transcript with the rule that fired.
//!
//! - [`policy`]: course and project policies read from the course content.
//! - [`window`]: assessment windows (the companion off or limited for a while).
//! - [`fingerprint`]: normalised token grams of code.
//! - [`stream`]: prose and held code blocks out of a streamed answer.
//! - [`unfenced`]: whether a line outside fences reads as code.
//! - `prose`: citations and forbidden words in prose.
pub mod fingerprint;
pub mod policy;
mod prose;
pub mod stream;
pub mod unfenced;
pub mod window;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use fingerprint::Reference;
use prose::ProseFilter;
use stream::{CodeBlock, Piece, Splitter};

/// A block reproducing at least this share of its grams from a reference is a copy of it...
const MIN_CONTAINMENT: f32 = 0.5;
/// ...when it also shows this many of the reference's tokens (or half of a shorter reference):
/// a generic three-line loop shares a few grams with any solution, a solution's body does not.
const MIN_COPIED_TOKENS: usize = 24;
/// Across the answers of one conversation, a learner sees less than this share of a reference
/// (a whole file, or one of its top-level units such as a function): a solution handed out a
/// few lines a turn stops before a third of any function is out.
const MAX_SHOWN_SHARE: f32 = 0.3;

/// The rules one turn's answer is checked against.
#[derive(Debug, Clone, Default)]
pub struct TurnRules {
    /// Reference solutions and protected fragments of the learner's graded deliverable.
    pub references: Arc<Vec<Arc<Reference>>>,
    /// The longest code block (non-blank lines) allowed; `None` for no limit.
    pub max_code_lines: Option<usize>,
    /// Words and identifiers kept out of answers (single words, any case).
    pub forbidden: Vec<String>,
    /// How many passages the turn gave the model: `[1]` to `[n]` are valid citations.
    pub n_passages: usize,
    /// The learner's locale, for the coaching note.
    pub locale: String,
    /// Code the learner was already shown in this conversation (earlier answers' blocks), so a
    /// solution cut into pieces across turns is seen whole.
    pub shown_before: Vec<String>,
    /// Every code block of the course's own pages: quoting the course is always allowed.
    pub course_code: Option<Arc<Reference>>,
    /// The learner's own text this turn (question, attachments, their project's files): a block
    /// that quotes it back gives away nothing, whatever it resembles.
    pub learner_text: Vec<String>,
    /// Lines that read as code outside fences let through as prose (the policy's
    /// `unfenced_code = "pass"`); held and checked otherwise.
    pub pass_unfenced: bool,
}

/// A block this much made of the learner's own text is a quotation of it.
const MIN_QUOTED: f32 = 0.8;

/// Which rule withheld a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The block reproduces a reference solution or protected fragment.
    Solution,
    /// Longer than the policy allows.
    Length,
    /// Holds a word the policy keeps out of answers.
    Forbidden,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Solution, Rule::Length, Rule::Forbidden];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Solution => "solution",
            Rule::Length => "length",
            Rule::Forbidden => "forbidden",
        }
    }
}

/// One block the learner did not see, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withheld {
    pub rule: Rule,
    pub reason: String,
    /// How strongly the rule fired: the share of a reference shown, lines over the limit, ...
    pub score: f32,
    /// The block as the model wrote it.
    pub original: String,
}

/// What the guard did to one answer: carried by the `done` frame and the stored message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardReport {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<Withheld>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub citations_removed: Vec<u32>,
    #[serde(default)]
    pub citations_kept: usize,
    /// Passages were given and the answer cited none of them.
    #[serde(default)]
    pub uncited: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words_removed: Vec<String>,
    #[serde(default)]
    pub blocks_checked: usize,
    /// Of those, runs of code written outside fences.
    #[serde(default)]
    pub unfenced_checked: usize,
}

impl GuardReport {
    /// Whether the learner saw something other than what the model wrote.
    pub fn changed_answer(&self) -> bool {
        !self.withheld.is_empty()
            || !self.citations_removed.is_empty()
            || !self.words_removed.is_empty()
    }
}

/// The coaching notes of one answer, per rule, as the course's template rendered them for the
/// learner. A rule without one (a template that failed to render) gets the guard's own note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoachingNotes {
    pub solution: Option<String>,
    pub length: Option<String>,
    pub forbidden: Option<String>,
}

impl CoachingNotes {
    /// The note for `rule`, if one was given and it says something.
    pub fn get(&self, rule: Rule) -> Option<&str> {
        let note = match rule {
            Rule::Solution => &self.solution,
            Rule::Length => &self.length,
            Rule::Forbidden => &self.forbidden,
        };
        note.as_deref().filter(|n| !n.trim().is_empty())
    }

    pub fn set(&mut self, rule: Rule, note: String) {
        let slot = match rule {
            Rule::Solution => &mut self.solution,
            Rule::Length => &mut self.length,
            Rule::Forbidden => &mut self.forbidden,
        };
        *slot = Some(note);
    }
}

/// Stands between the model's stream and the learner for one answer.
pub struct OutputGuard {
    rules: TurnRules,
    coaching: CoachingNotes,
    splitter: Splitter,
    prose: ProseFilter,
    /// Per reference, which of its tokens this conversation has shown.
    shown: Vec<Vec<bool>>,
    /// The learner's own text, as a reference a block may quote.
    own: Option<Reference>,
    report: GuardReport,
}

impl OutputGuard {
    pub fn new(rules: TurnRules) -> Self {
        let mut shown: Vec<Vec<bool>> = rules
            .references
            .iter()
            .map(|r| vec![false; r.n_tokens()])
            .collect();
        for code in &rules.shown_before {
            for (reference, seen) in rules.references.iter().zip(shown.iter_mut()) {
                let overlap = reference.overlap(code);
                for (s, c) in seen.iter_mut().zip(overlap.covered) {
                    *s |= c;
                }
            }
        }
        let own = (!rules.learner_text.is_empty())
            .then(|| Reference::new("the learner's own text", &rules.learner_text.join("\n")));
        Self {
            prose: ProseFilter::new(rules.n_passages, &rules.forbidden),
            splitter: if rules.pass_unfenced {
                Splitter::fenced_only()
            } else {
                Splitter::default()
            },
            shown,
            own,
            rules,
            coaching: CoachingNotes::default(),
            report: GuardReport::default(),
        }
    }

    /// Uses these notes where a block is withheld (the course's coaching template, rendered
    /// for this learner) instead of the guard's own.
    pub fn with_coaching(mut self, notes: CoachingNotes) -> Self {
        self.coaching = notes;
        self
    }

    /// Takes one delta of the model's answer; returns what the learner may see now.
    pub fn push(&mut self, delta: &str) -> String {
        let pieces = self.splitter.push(delta);
        self.release(pieces)
    }

    /// The end of the stream: releases (or withholds) whatever is still held.
    pub fn finish(&mut self) -> String {
        let pieces = self.splitter.finish();
        let mut out = self.release(pieces);
        out.push_str(&self.prose.flush());
        out
    }

    /// Whether a code block is being held right now.
    pub fn is_holding_code(&self) -> bool {
        self.splitter.is_in_block()
    }

    /// The report so far; complete after [`finish`](Self::finish).
    pub fn report(&self) -> GuardReport {
        let mut report = self.report.clone();
        report.citations_kept = self.prose.report.citations_kept;
        report.citations_removed = self.prose.report.citations_removed.clone();
        report.words_removed = self.prose.report.words_removed.clone();
        report.uncited = self.rules.n_passages > 0 && report.citations_kept == 0;
        report
    }

    fn release(&mut self, pieces: Vec<Piece>) -> String {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Prose(text) => out.push_str(&self.prose.push(&text)),
                Piece::Code(block) => {
                    out.push_str(&self.prose.flush());
                    out.push_str(&self.check(block));
                }
            }
        }
        out
    }

    /// A held block: itself if it passes, a coaching note if not.
    fn check(&mut self, block: CodeBlock) -> String {
        self.report.blocks_checked += 1;
        if block.opening.is_empty() {
            self.report.unfenced_checked += 1;
        }
        let verdict = self.verdict(&block);
        match verdict {
            None => {
                self.remember_shown(&block.body);
                block.text()
            }
            Some((rule, reason, score)) => {
                self.report.withheld.push(Withheld {
                    rule,
                    reason,
                    score,
                    original: block.text(),
                });
                match self.coaching.get(rule) {
                    Some(note) => quoted_note(note),
                    None => coaching_note(rule, &self.rules.locale),
                }
            }
        }
    }

    fn verdict(&self, block: &CodeBlock) -> Option<(Rule, String, f32)> {
        let quoted = self
            .own
            .iter()
            .chain(self.rules.course_code.as_deref())
            .any(|own| own.overlap(&block.body).containment >= MIN_QUOTED);
        let references = if quoted {
            &[][..]
        } else {
            &self.rules.references[..]
        };
        for (reference, seen) in references.iter().zip(&self.shown) {
            let overlap = reference.overlap(&block.body);
            if overlap.containment < MIN_CONTAINMENT {
                continue;
            }
            let n = reference.n_tokens().max(1);
            let copied = overlap.copied;
            let shown_after = seen
                .iter()
                .zip(&overlap.covered)
                .filter(|(s, c)| **s || **c)
                .count();
            let share_after = shown_after as f32 / n as f32;
            if copied >= MIN_COPIED_TOKENS.min(n.div_ceil(2)) || share_after >= MAX_SHOWN_SHARE {
                return Some((
                    Rule::Solution,
                    format!(
                        "{copied} tokens of the block reproduce {} ({n} tokens; {:.0}% of it shown in this conversation with this block)",
                        reference.name,
                        share_after * 100.0
                    ),
                    share_after,
                ));
            }
        }
        if let Some(max) = self.rules.max_code_lines.filter(|_| !quoted) {
            let lines = block.n_lines();
            if lines > max {
                return Some((
                    Rule::Length,
                    format!("{lines} lines of code where the policy allows {max}"),
                    lines as f32 / max.max(1) as f32,
                ));
            }
        }
        let lower = block.body.to_lowercase();
        for word in &self.rules.forbidden {
            let word = word.to_lowercase();
            let found = lower
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == word);
            if found {
                return Some((Rule::Forbidden, format!("holds the word {word:?}"), 1.0));
            }
        }
        None
    }

    fn remember_shown(&mut self, code: &str) {
        for (reference, seen) in self.rules.references.iter().zip(self.shown.iter_mut()) {
            let overlap = reference.overlap(code);
            if overlap.containment >= MIN_CONTAINMENT {
                for (s, c) in seen.iter_mut().zip(overlap.covered) {
                    *s |= c;
                }
            }
        }
    }
}

/// The guard's own note for `rule`, in the learner's language, as the learner reads it where a
/// block was withheld. `prompts/coaching.md`, the shipped coaching template, renders the same
/// words (tested where both are in reach, in `chat`).
pub fn coaching_note(rule: Rule, locale: &str) -> String {
    quoted_note(builtin_note(rule, locale))
}

/// A note as a Markdown quotation of its own, every line of it, apart from the text around it.
fn quoted_note(note: &str) -> String {
    let quoted: Vec<String> = note
        .trim()
        .lines()
        .map(|line| match line.trim_end() {
            "" => ">".to_string(),
            line => format!("> {line}"),
        })
        .collect();
    format!("\n{}\n\n", quoted.join("\n"))
}

/// The words of the guard's own note.
pub fn builtin_note(rule: Rule, locale: &str) -> &'static str {
    let french = locale
        .split(['-', '_'])
        .next()
        .is_some_and(|primary| primary.eq_ignore_ascii_case("fr"));
    match (rule, french) {
        (Rule::Length | Rule::Solution, false) => {
            "I won't write this part of your graded project for you. Let's build it together: \
             which step would you like to try first? Write it, and I'll give you feedback on it."
        }
        (Rule::Length | Rule::Solution, true) => {
            "Je ne vais pas écrire cette partie de ton projet noté à ta place. Construisons-la \
             ensemble : par quelle étape veux-tu commencer ? Écris-la, et je te ferai un retour."
        }
        (Rule::Forbidden, false) => {
            "I left out an example here that your course asks me not to give. Ask me about the \
             idea behind it instead."
        }
        (Rule::Forbidden, true) => {
            "J'ai retiré ici un exemple que ton cours me demande de ne pas donner. Demande-moi \
             plutôt l'idée qui se cache derrière."
        }
    }
}

/// The code of an earlier answer, as a learner saw it: fenced blocks and runs of unfenced code.
pub fn code_blocks(text: &str) -> Vec<String> {
    blocks(Splitter::default(), text)
}

/// The fenced code blocks of a text alone (a course page's examples).
pub fn fenced_code_blocks(text: &str) -> Vec<String> {
    blocks(Splitter::fenced_only(), text)
}

fn blocks(mut splitter: Splitter, text: &str) -> Vec<String> {
    let mut pieces = splitter.push(text);
    pieces.extend(splitter.finish());
    pieces
        .into_iter()
        .filter_map(|p| match p {
            Piece::Code(block) => Some(block.body),
            Piece::Prose(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
