//! Intent in the learner's own words: whether a message asks for a human, says the learner is
//! discouraged or about to drop out, or shows distress. The keyword rules of [`super::flags`]
//! are the fast first pass; then the message, and each of its sentences, is read by a small
//! head trained on a bank of labelled example messages in English and French
//! (`intent_examples.jsonl`, ordinary questions and hard negatives such as "kill the process"
//! among them): one logistic regression per kind over the dense embedding (the in-process
//! model by default) and hashed lexical features (words, word pairs, letter 3- and 4-grams,
//! which carry the French and the typos the English-trained model reads poorly). A kind is
//! raised when its probability passes its threshold; the nearest example of the kind is kept
//! as the evidence the mentor reads. The bank is embedded and the head trained once, on first
//! use (about a second), deterministically.
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::OnceCell;

use super::FlagKind;
use super::flags::{asks_for_human, distress, words};
use crate::retrieval::embed::{DenseEmbedder, EmbedError};

/// The labelled examples compiled in: one JSON object a line, `{"kinds", "lang", "text"}`.
pub const EXAMPLES: &str = include_str!("intent_examples.jsonl");

/// The kinds read from a message's words, in the order they are reported.
pub const KINDS: [FlagKind; 3] = [
    FlagKind::HumanRequested,
    FlagKind::Discouraged,
    FlagKind::Distress,
];

/// Sentences of one message compared on their own, beyond the whole message.
const MAX_SEGMENTS: usize = 6;
/// A piece shorter than this many words joins its neighbour ("lol", "ok so").
const MIN_SEGMENT_WORDS: usize = 3;
/// Characters of a message read at most (the model reads 256 tokens of each text anyway).
const MAX_CHARS: usize = 1500;

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("examples line {line}: {message}")]
    BadExample { line: usize, message: String },
    #[error("the example bank is empty")]
    NoExamples,
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// One labelled message of the bank (or of an evaluation set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// Empty: an ordinary message that must raise nothing.
    pub kinds: Vec<FlagKind>,
    #[serde(default)]
    pub lang: String,
    pub text: String,
}

/// Reads the bank's JSON Lines; every kind must be one of [`KINDS`].
pub fn parse_examples(text: &str) -> Result<Vec<Example>, IntentError> {
    let mut examples = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| IntentError::BadExample {
            line: idx + 1,
            message,
        };
        let example: Example = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if let Some(kind) = example.kinds.iter().find(|k| !KINDS.contains(k)) {
            return Err(bad(format!(
                "kind {:?} is not read from words",
                kind.as_str()
            )));
        }
        if example.text.trim().is_empty() {
            return Err(bad("empty text".into()));
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(IntentError::NoExamples);
    }
    Ok(examples)
}

/// How a message is read. The defaults were chosen by cross-validation on the bank
/// (`companion eval flags --cross-validate 5`), never on an evaluation set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// The probability each kind of [`KINDS`] needs, in that order.
    pub thresholds: [f32; 3],
    /// Whether the keyword rules raise signals too (the first pass).
    pub rules: bool,
    /// Whether each sentence is read on its own too, beyond the whole message, and how much
    /// more than the kind's threshold a sentence alone needs (a short piece read apart is
    /// noisier than the whole message).
    pub segments: bool,
    pub segment_margin: f32,
    /// Whether text-speak and contractions are spelled out before reading ("jsuis" is "je
    /// suis", "idk" is "i don t know"), for the model and the lexical features alike.
    pub normalise: bool,
    /// Whether the words after a negation ("not", "never", "pas", "jamais") are features of
    /// their own too, so "not giving up" and "giving up" can weigh differently.
    pub negation: bool,
    /// The head's training: full-batch steps, step size, L2 penalty, the most a rare
    /// positive class is up-weighted, and how much the lexical features weigh beside the
    /// embedding (each block has unit length).
    pub epochs: usize,
    pub learning_rate: f32,
    pub l2: f32,
    pub max_positive_weight: f32,
    pub lexical_weight: f32,
    /// How much the embedding weighs (each block has unit length): a model whose vectors all
    /// lie close together (E5's cosines crowd between 0.7 and 0.9) needs more.
    pub dense_weight: f32,
}

impl Default for Params {
    fn default() -> Self {
        // 5-fold cross-validation on the bank (820 examples): sentences read apart raised
        // more ordinary messages than they found, and so did a rare kind up-weighted past 2;
        // distress gets the lowest threshold (a miss costs more than a false alarm). Spelling
        // out text-speak and marking negation changed nothing measurable on a grown bank
        // (1,327 examples), so they stay off. With multilingual-e5-small the embedding weighs
        // 3 (1: recall 0.92 / 0.83 / 0.90 for human / discouraged / distress, 3.6% of ordinary
        // messages raised; 3 with thresholds 0.7 / 0.6 / 0.4: 0.94 / 0.86 / 0.97, 3.3%; 10:
        // more recall, 7.6% raised).
        Self {
            thresholds: [0.7, 0.6, 0.4],
            rules: true,
            segments: false,
            segment_margin: 0.0,
            normalise: false,
            negation: false,
            epochs: 300,
            learning_rate: 2.0,
            l2: 1e-4,
            max_positive_weight: 2.0,
            lexical_weight: 1.0,
            dense_weight: 3.0,
        }
    }
}

impl Params {
    /// Sets one parameter by name (`name=value`), for the evaluation's cross-validation.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?} is not name=value"))?;
        let number = |v: &str| v.parse::<f32>().map_err(|e| format!("{name}: {e}"));
        match name {
            "human_requested" => self.thresholds[0] = number(value)?,
            "discouraged" => self.thresholds[1] = number(value)?,
            "distress" => self.thresholds[2] = number(value)?,
            "rules" => self.rules = value == "true",
            "segments" => self.segments = value == "true",
            "segment_margin" => self.segment_margin = number(value)?,
            "normalise" => self.normalise = value == "true",
            "negation" => self.negation = value == "true",
            "epochs" => self.epochs = number(value)? as usize,
            "learning_rate" => self.learning_rate = number(value)?,
            "l2" => self.l2 = number(value)?,
            "max_positive_weight" => self.max_positive_weight = number(value)?,
            "lexical_weight" => self.lexical_weight = number(value)?,
            "dense_weight" => self.dense_weight = number(value)?,
            other => return Err(format!("no parameter {other:?}")),
        }
        Ok(())
    }

    fn threshold(&self, kind: FlagKind) -> f32 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(1.0, |idx| self.thresholds[idx])
    }
}

/// Why a kind was read in a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// The keyword rules found these words.
    Words(String),
    /// The nearest example of the kind, and how similar it is (cosine).
    Nearest { example: String, similarity: f32 },
}

/// A kind read in one message, with its score (0 to 1) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: FlagKind,
    pub score: f32,
    pub evidence: Evidence,
}

impl Signal {
    /// One line for the mentor: what was read and why.
    pub fn describe(&self) -> String {
        match &self.evidence {
            Evidence::Words(words) => format!("the words {words:?}"),
            Evidence::Nearest {
                example,
                similarity,
            } => format!("close to \"{example}\" ({similarity:.2})"),
        }
    }
}

/// The keyword rules alone: today's first pass, and the fallback without an embedder.
pub fn rule_signals(text: &str) -> Vec<Signal> {
    let mut signals = Vec::new();
    if let Some(words) = asks_for_human(text) {
        signals.push(Signal {
            kind: FlagKind::HumanRequested,
            score: 1.0,
            evidence: Evidence::Words(words),
        });
    }
    if let Some(phrase) = distress(text) {
        signals.push(Signal {
            kind: FlagKind::Distress,
            score: 1.0,
            evidence: Evidence::Words(phrase.to_string()),
        });
    }
    signals
}

/// The texts a message is read as: the whole (cut to [`MAX_CHARS`]) and, when it has several,
/// its sentences or clauses (split at `.!?;`, commas and line breaks; a piece of fewer than
/// [`MIN_SEGMENT_WORDS`] words joins the one before), at most [`MAX_SEGMENTS`] of them. A
/// message that mixes a course question with "I think I'll quit" is read both ways.
pub fn segments(text: &str) -> Vec<String> {
    let whole: String = text.trim().chars().take(MAX_CHARS).collect();
    let mut pieces: Vec<String> = Vec::new();
    for raw in whole.split(['.', '!', '?', ';', ',', '\n']) {
        let piece = raw.trim();
        if piece.is_empty() {
            continue;
        }
        match pieces.last_mut() {
            Some(last) if words(piece).len() < MIN_SEGMENT_WORDS => {
                last.push(' ');
                last.push_str(piece);
            }
            _ => pieces.push(piece.to_string()),
        }
    }
    // A short first piece ("ok so") joins the next one.
    if pieces.len() > 1 && words(&pieces[0]).len() < MIN_SEGMENT_WORDS {
        let first = pieces.remove(0);
        pieces[0] = format!("{first} {}", pieces[0]);
    }
    let mut texts = vec![whole];
    if pieces.len() > 1 {
        texts.extend(pieces.into_iter().take(MAX_SEGMENTS));
    }
    texts
}

/// Text-speak and contractions as learners type them (folded, as [`words`] splits them), and
/// what they stand for. English then French; none is a word of code on its own ("c", "r" and
/// "id" are left alone).
const SPELLED_OUT: &[(&str, &str)] = &[
    ("im", "i m"),
    ("ive", "i ve"),
    ("dont", "don t"),
    ("cant", "can t"),
    ("wont", "won t"),
    ("didnt", "didn t"),
    ("doesnt", "doesn t"),
    ("isnt", "isn t"),
    ("wasnt", "wasn t"),
    ("arent", "aren t"),
    ("couldnt", "couldn t"),
    ("shouldnt", "shouldn t"),
    ("wouldnt", "wouldn t"),
    ("havent", "haven t"),
    ("hasnt", "hasn t"),
    ("aint", "is not"),
    ("idk", "i don t know"),
    ("dunno", "don t know"),
    ("wanna", "want to"),
    ("gonna", "going to"),
    ("gotta", "got to"),
    ("u", "you"),
    ("ur", "your"),
    ("pls", "please"),
    ("plz", "please"),
    ("rn", "right now"),
    ("cuz", "because"),
    ("coz", "because"),
    ("bc", "because"),
    ("tho", "though"),
    ("ppl", "people"),
    ("smth", "something"),
    ("ngl", "not going to lie"),
    ("tbh", "to be honest"),
    ("lemme", "let me"),
    ("gimme", "give me"),
    ("some1", "someone"),
    ("any1", "anyone"),
    ("no1", "no one"),
    ("abt", "about"),
    ("prolly", "probably"),
    ("nvm", "never mind"),
    ("jsuis", "je suis"),
    ("jsui", "je suis"),
    ("chui", "je suis"),
    ("chuis", "je suis"),
    ("jss", "je suis"),
    ("jpeux", "je peux"),
    ("jveux", "je veux"),
    ("jvais", "je vais"),
    ("jsais", "je sais"),
    ("chais", "je sais"),
    ("jsp", "je sais pas"),
    ("jcrois", "je crois"),
    ("jpense", "je pense"),
    ("jme", "je me"),
    ("jte", "je te"),
    ("jfais", "je fais"),
    ("jcomprends", "je comprends"),
    ("jcomprend", "je comprends"),
    ("jcapte", "je capte"),
    ("jarrive", "j arrive"),
    ("jy", "j y"),
    ("jai", "j ai"),
    ("jen", "j en"),
    ("jaime", "j aime"),
    ("jaimerais", "j aimerais"),
    ("jabandonne", "j abandonne"),
    ("jarrete", "j arrete"),
    ("jlache", "je lache"),
    ("jlaisse", "je laisse"),
    ("jvoudrais", "je voudrais"),
    ("jdois", "je dois"),
    ("jtrouve", "je trouve"),
    ("jsens", "je sens"),
    ("jvois", "je vois"),
    ("jtiens", "je tiens"),
    ("cest", "c est"),
    ("ya", "il y a"),
    ("tfacon", "de toute facon"),
    ("tkt", "t inquiete"),
    ("pk", "pourquoi"),
    ("pq", "pourquoi"),
    ("pkoi", "pourquoi"),
    ("bcp", "beaucoup"),
    ("tt", "tout"),
    ("ptet", "peut etre"),
    ("ptetre", "peut etre"),
    ("qqn", "quelqu un"),
    ("qqun", "quelqu un"),
    ("qq1", "quelqu un"),
    ("quelqun", "quelqu un"),
    ("qqch", "quelque chose"),
    ("mtn", "maintenant"),
    ("mnt", "maintenant"),
    ("tjrs", "toujours"),
    ("tjs", "toujours"),
    ("tjr", "toujours"),
    ("pr", "pour"),
    ("ds", "dans"),
    ("ke", "que"),
    ("koi", "quoi"),
    ("qd", "quand"),
    ("kan", "quand"),
    ("dsl", "desole"),
    ("vrmt", "vraiment"),
    ("auj", "aujourd hui"),
    ("ajd", "aujourd hui"),
    ("cb", "combien"),
    ("slt", "salut"),
    ("pa", "pas"),
    ("jamai", "jamais"),
    ("fo", "faut"),
    ("tro", "trop"),
    ("ms", "mais"),
    ("mm", "meme"),
    ("nimp", "n importe quoi"),
    ("rdv", "rendez vous"),
];

/// `text` as the classifier reads it: folded words (lowercase, no accents, no punctuation),
/// text-speak and contractions spelled out ([`SPELLED_OUT`]).
pub fn normalise(text: &str) -> String {
    words(text)
        .iter()
        .map(|word| {
            SPELLED_OUT
                .iter()
                .find(|(short, _)| short == word)
                .map_or(word.as_str(), |(_, long)| long)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words that turn what follows around, and how many words after them they reach.
const NEGATIONS: &[&str] = &[
    "not", "never", "no", "nothing", "t", "pas", "jamais", "ne", "n", "rien",
];
const NEGATION_REACH: usize = 3;

/// Buckets of the hashed lexical features.
const LEXICAL_DIM: usize = 1 << 12;

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The words of a text as hashed features: folded words, word pairs, and the 3- and 4-letter
/// pieces of each word (so "abandonne" and "abandonner", or a typo, still share most of them),
/// present or not, with unit length; with `negation`, each word within [`NEGATION_REACH`]
/// after a negation is a feature of its own too. What the English-trained model misses in
/// French, these keep.
pub fn lexical(text: &str, negation: bool) -> Vec<(u32, f32)> {
    let words = words(text);
    let mut buckets = std::collections::BTreeSet::new();
    let mut add = |feature: String| {
        buckets.insert((fnv1a(&feature) % LEXICAL_DIM as u64) as u32);
    };
    let mut negated = 0;
    for word in &words {
        if negated > 0 {
            add(format!("n:{word}"));
            negated -= 1;
        }
        if negation && NEGATIONS.contains(&word.as_str()) {
            negated = NEGATION_REACH;
        }
        add(format!("w:{word}"));
        let padded: Vec<char> = format!("<{word}>").chars().collect();
        for n in [3, 4] {
            for gram in padded.windows(n) {
                add(format!("c:{}", gram.iter().collect::<String>()));
            }
        }
    }
    for pair in words.windows(2) {
        add(format!("b:{} {}", pair[0], pair[1]));
    }
    let value = if buckets.is_empty() {
        0.0
    } else {
        1.0 / (buckets.len() as f32).sqrt()
    };
    buckets.into_iter().map(|b| (b, value)).collect()
}

/// One text as the head reads it: its embedding and its lexical features.
#[derive(Debug, Clone)]
struct Features {
    embedding: Vec<f32>,
    lexical: Vec<(u32, f32)>,
}

impl Features {
    /// `text` is the reading embedded ([`Intents::reading`]).
    fn new(embedding: Vec<f32>, text: &str, params: &Params) -> Self {
        Self {
            embedding,
            lexical: lexical(text, params.negation),
        }
    }
}

/// One logistic regression per kind over [embedding | lexical features].
#[derive(Debug, Clone)]
struct Head {
    weights: Vec<Vec<f32>>,
    biases: Vec<f32>,
    dim: usize,
    lexical_weight: f32,
    dense_weight: f32,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Head {
    fn logit(&self, kind_idx: usize, x: &Features) -> f32 {
        let w = &self.weights[kind_idx];
        let dense: f32 = x.embedding.iter().zip(w).map(|(a, b)| a * b).sum();
        let sparse: f32 = x
            .lexical
            .iter()
            .map(|(i, v)| v * w[self.dim + *i as usize])
            .sum();
        self.dense_weight * dense + self.lexical_weight * sparse + self.biases[kind_idx]
    }

    /// Each kind's probability for `x`, in the order of [`KINDS`].
    fn probabilities(&self, x: &Features) -> [f32; 3] {
        [0, 1, 2].map(|k| sigmoid(self.logit(k, x)))
    }

    /// Trains on `xs` labelled by `labels` (the kinds of each). Deterministic: full-batch
    /// gradient descent from zero.
    fn train(xs: &[&Features], labels: &[&[FlagKind]], params: &Params) -> Self {
        let dim = xs.first().map_or(0, |x| x.embedding.len());
        let n = xs.len().max(1) as f32;
        let lexical_weight = params.lexical_weight;
        let dense_weight = params.dense_weight;
        let mut head = Head {
            weights: vec![vec![0.0; dim + LEXICAL_DIM]; KINDS.len()],
            biases: vec![0.0; KINDS.len()],
            dim,
            lexical_weight,
            dense_weight,
        };
        for (k, kind) in KINDS.iter().enumerate() {
            let ys: Vec<bool> = labels.iter().map(|l| l.contains(kind)).collect();
            let positives = ys.iter().filter(|y| **y).count();
            if positives == 0 {
                head.biases[k] = -10.0;
                continue;
            }
            let positive_weight = ((ys.len() - positives) as f32 / positives as f32)
                .clamp(1.0, params.max_positive_weight.max(1.0));
            let mut gradient = vec![0.0f32; dim + LEXICAL_DIM];
            for _ in 0..params.epochs {
                gradient.iter_mut().for_each(|g| *g = 0.0);
                let mut bias_gradient = 0.0;
                for (x, &y) in xs.iter().zip(&ys) {
                    let p = sigmoid(head.logit(k, x));
                    let g = if y { (p - 1.0) * positive_weight } else { p };
                    for (gi, xi) in gradient.iter_mut().zip(&x.embedding) {
                        *gi += g * dense_weight * xi;
                    }
                    for (i, v) in &x.lexical {
                        gradient[dim + *i as usize] += g * lexical_weight * v;
                    }
                    bias_gradient += g;
                }
                let w = &mut head.weights[k];
                for (wi, gi) in w.iter_mut().zip(&gradient) {
                    *wi -= params.learning_rate * (gi / n + params.l2 * *wi);
                }
                head.biases[k] -= params.learning_rate * bias_gradient / n;
            }
        }
        head
    }
}

/// The bank's examples with their features, and the head trained on all of them.
struct Bank {
    features: Vec<Features>,
    head: Head,
}

/// The classifier: the keyword rules, then a head trained on the example bank.
pub struct Intents {
    embedder: Arc<dyn DenseEmbedder>,
    examples: Vec<Example>,
    params: Params,
    bank: OnceCell<Bank>,
}

impl Intents {
    /// Over the compiled-in bank.
    pub fn builtin(embedder: Arc<dyn DenseEmbedder>) -> Result<Self, IntentError> {
        Ok(Self::new(
            embedder,
            parse_examples(EXAMPLES)?,
            Params::default(),
        ))
    }

    pub fn new(embedder: Arc<dyn DenseEmbedder>, examples: Vec<Example>, params: Params) -> Self {
        Self {
            embedder,
            examples,
            params,
            bank: OnceCell::new(),
        }
    }

    pub fn params(&self) -> Params {
        self.params
    }

    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// Embeds the bank and trains the head now rather than on the first message.
    pub async fn warm_up(&self) -> Result<(), IntentError> {
        self.bank().await.map(|_| ())
    }

    async fn bank(&self) -> Result<&Bank, IntentError> {
        self.bank
            .get_or_try_init(|| async {
                let features = self.bank_features().await?;
                let labels: Vec<&[FlagKind]> =
                    self.examples.iter().map(|e| e.kinds.as_slice()).collect();
                let xs: Vec<&Features> = features.iter().collect();
                let head = Head::train(&xs, &labels, &self.params);
                Ok(Bank { features, head })
            })
            .await
    }

    /// A text as it is embedded and its words hashed: as written, or normalised.
    fn reading(&self, text: &str) -> String {
        if self.params.normalise {
            normalise(text)
        } else {
            text.to_string()
        }
    }

    async fn bank_features(&self) -> Result<Vec<Features>, IntentError> {
        let texts: Vec<String> = self
            .examples
            .iter()
            .map(|e| self.reading(&e.text))
            .collect();
        let vectors = self.embedder.embed_documents(texts.clone()).await?;
        Ok(vectors
            .into_iter()
            .zip(&texts)
            .map(|(v, t)| Features::new(v, t, &self.params))
            .collect())
    }

    /// The kinds read in `text`, one signal per kind at most (the strongest).
    pub async fn classify(&self, text: &str) -> Result<Vec<Signal>, IntentError> {
        self.classify_with(text, self.params.segments).await
    }

    /// As [`Intents::classify`], with each sentence or clause of `text` read on its own too
    /// (and the sentences' margin), whatever the bank's parameters say: for a short note that
    /// is by nature a request ("could my mentor call me") with, perhaps, the reason for it,
    /// which the request's words would drown when read as a whole.
    pub async fn classify_clauses(&self, text: &str) -> Result<Vec<Signal>, IntentError> {
        self.classify_with(text, true).await
    }

    /// The kinds read in `text` whole and, with `clauses`, in each of its sentences.
    async fn classify_with(&self, text: &str, clauses: bool) -> Result<Vec<Signal>, IntentError> {
        let bank = self.bank().await?;
        let units = self.units(text, None, clauses).await?;
        Ok(self.decide(text, &units, &bank.head, &bank.features))
    }

    /// Each example of the bank read by a head trained without its fold (example `i` is in
    /// fold `i % folds`): how well the bank generalises to words it has not seen.
    pub async fn cross_validate(&self, folds: usize) -> Result<Vec<Vec<Signal>>, IntentError> {
        let folds = folds.max(2);
        let bank = self.bank().await?;
        let mut read = vec![Vec::new(); self.examples.len()];
        for fold in 0..folds {
            let train: Vec<usize> = (0..self.examples.len())
                .filter(|i| i % folds != fold)
                .collect();
            let xs: Vec<&Features> = train.iter().map(|&i| &bank.features[i]).collect();
            let labels: Vec<&[FlagKind]> = train
                .iter()
                .map(|&i| self.examples[i].kinds.as_slice())
                .collect();
            let head = Head::train(&xs, &labels, &self.params);
            let kept: Vec<Features> = train.iter().map(|&i| bank.features[i].clone()).collect();
            for (i, slot) in read
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| i % folds == fold)
            {
                let text = &self.examples[i].text;
                // The whole message was embedded with the bank: only its sentences are new.
                let units = self
                    .units(text, Some(&bank.features[i]), self.params.segments)
                    .await?;
                *slot = self.decide_with(text, &units, &head, &kept, &train);
            }
        }
        Ok(read)
    }

    /// The texts of a message read: the whole and, with `clauses`, its sentences, each with
    /// its features (the whole's given when it is already known).
    async fn units(
        &self,
        text: &str,
        whole: Option<&Features>,
        clauses: bool,
    ) -> Result<Vec<(String, Features)>, IntentError> {
        let mut texts = segments(text);
        if !clauses {
            texts.truncate(1);
        }
        let readings: Vec<String> = texts.iter().map(|t| self.reading(t)).collect();
        let skip = usize::from(whole.is_some());
        let vectors = if readings.len() > skip {
            self.embedder
                .embed_documents(readings[skip..].to_vec())
                .await?
        } else {
            Vec::new()
        };
        let mut units: Vec<(String, Features)> = Vec::with_capacity(texts.len());
        if let Some(whole) = whole {
            units.push((texts[0].clone(), whole.clone()));
        }
        for ((text, reading), vector) in texts.iter().zip(&readings).skip(skip).zip(vectors) {
            units.push((text.clone(), Features::new(vector, reading, &self.params)));
        }
        Ok(units)
    }

    fn decide(
        &self,
        text: &str,
        units: &[(String, Features)],
        head: &Head,
        features: &[Features],
    ) -> Vec<Signal> {
        let all: Vec<usize> = (0..features.len()).collect();
        self.decide_with(text, units, head, features, &all)
    }

    /// The signals of a message: the keyword rules' first, then each kind whose probability
    /// passes its threshold on the whole message or one of its sentences, with the nearest
    /// example of that kind among `features` (bank indices `ids`) as the evidence.
    fn decide_with(
        &self,
        text: &str,
        units: &[(String, Features)],
        head: &Head,
        features: &[Features],
        ids: &[usize],
    ) -> Vec<Signal> {
        let mut signals = if self.params.rules {
            rule_signals(text)
        } else {
            Vec::new()
        };
        for (idx, (_, unit)) in units.iter().enumerate() {
            let probabilities = head.probabilities(unit);
            // The first unit is the whole message; a sentence alone needs the margin more.
            let margin = if idx == 0 {
                0.0
            } else {
                self.params.segment_margin
            };
            for (k, kind) in KINDS.iter().enumerate() {
                let p = probabilities[k];
                if p < self.params.threshold(*kind) + margin {
                    continue;
                }
                let nearest = features
                    .iter()
                    .zip(ids)
                    .filter(|(_, id)| self.examples[**id].kinds.contains(kind))
                    .map(|(f, id)| (dot(&unit.embedding, &f.embedding), *id))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                let evidence = match nearest {
                    Some((similarity, id)) => Evidence::Nearest {
                        example: self.examples[id].text.clone(),
                        similarity,
                    },
                    None => Evidence::Words(String::new()),
                };
                merge(
                    &mut signals,
                    Signal {
                        kind: *kind,
                        score: p,
                        evidence,
                    },
                );
            }
        }
        signals.sort_by_key(|s| KINDS.iter().position(|k| *k == s.kind));
        signals
    }
}

/// Keeps one signal per kind: the rules' words first, else the highest score.
fn merge(signals: &mut Vec<Signal>, signal: Signal) {
    match signals.iter_mut().find(|s| s.kind == signal.kind) {
        Some(held) => {
            let held_is_words = matches!(held.evidence, Evidence::Words(_));
            if !held_is_words && signal.score > held.score {
                *held = signal;
            }
        }
        None => signals.push(signal),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    /// Words hashed into a few dimensions, normalised: texts sharing words are close. Enough
    /// to test the voting without the model.
    struct BagOfWords;

    #[async_trait]
    impl DenseEmbedder for BagOfWords {
        fn dimensions(&self) -> usize {
            64
        }
        fn id(&self) -> String {
            "bag-of-words".into()
        }
        async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts.iter().map(|t| bag(t)).collect())
        }
        async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            Ok(bag(text))
        }
    }

    fn bag(text: &str) -> Vec<f32> {
        let mut v = vec![0f32; 64];
        for word in words(text) {
            let h = word
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
            v[(h % 64) as usize] += 1.0;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter().map(|x| x / norm).collect()
    }

    fn example(kinds: &[FlagKind], text: &str) -> Example {
        Example {
            kinds: kinds.to_vec(),
            lang: "en".into(),
            text: text.into(),
        }
    }

    fn intents(examples: Vec<Example>, params: Params) -> Intents {
        Intents::new(Arc::new(BagOfWords), examples, params)
    }

    fn kinds(signals: &[Signal]) -> Vec<FlagKind> {
        signals.iter().map(|s| s.kind).collect()
    }

    const NO_RULES: Params = Params {
        thresholds: [0.5, 0.5, 0.5],
        rules: false,
        segments: true,
        segment_margin: 0.0,
        normalise: false,
        negation: false,
        epochs: 300,
        learning_rate: 2.0,
        l2: 1e-4,
        max_positive_weight: 4.0,
        lexical_weight: 1.0,
        dense_weight: 1.0,
    };

    fn bank() -> Vec<Example> {
        use FlagKind::*;
        vec![
            example(&[Discouraged], "thinking about quitting the course"),
            example(&[Discouraged], "quitting this course soon i think"),
            example(
                &[Discouraged],
                "i am quitting, this course is hopeless for me",
            ),
            example(&[Discouraged], "ready to quit everything about this course"),
            example(&[HumanRequested], "let me talk to my mentor"),
            example(&[HumanRequested], "i want to talk to a human mentor"),
            example(&[HumanRequested], "can my mentor talk with me"),
            example(&[], "how do i kill the process"),
            example(&[], "kill the process with a signal"),
            example(&[], "the process will not die how do i kill it"),
            example(&[], "what is a list comprehension in python"),
            example(&[], "python list comprehension syntax please"),
        ]
    }

    #[tokio::test]
    async fn a_head_trained_on_the_bank_reads_new_words_of_a_kind_and_not_ordinary_ones() {
        let intents = intents(bank(), NO_RULES);
        let quitting = intents
            .classify("so i am thinking of quitting the course")
            .await
            .unwrap();
        assert_eq!(kinds(&quitting), [FlagKind::Discouraged], "{quitting:?}");
        assert!(quitting[0].score >= 0.5 && quitting[0].score <= 1.0);
        // The evidence is the nearest example of the kind.
        assert!(
            matches!(&quitting[0].evidence, Evidence::Nearest { example, .. } if example.contains("quitting")),
            "{quitting:?}"
        );
        let mentor = intents.classify("talk to my mentor please").await.unwrap();
        assert_eq!(kinds(&mentor), [FlagKind::HumanRequested], "{mentor:?}");
        let process = intents.classify("how to kill a process").await.unwrap();
        assert!(process.is_empty(), "{process:?}");
    }

    #[tokio::test]
    async fn a_kind_needs_its_threshold() {
        let strict = Params {
            thresholds: [1.0, 1.0, 1.0],
            ..NO_RULES
        };
        let signals = intents(bank(), strict)
            .classify("thinking about quitting the course")
            .await
            .unwrap();
        assert!(signals.is_empty(), "{signals:?}");
    }

    #[tokio::test]
    async fn each_sentence_is_read_so_a_mixed_message_raises_its_kind() {
        let mixed = "what is a list comprehension in python. i am quitting this course";
        let whole_only = Params {
            segments: false,
            ..NO_RULES
        };
        let by_sentence = intents(bank(), NO_RULES).classify(mixed).await.unwrap();
        assert_eq!(kinds(&by_sentence), [FlagKind::Discouraged]);
        // The score is the strongest sentence's, above the whole message's.
        let whole = intents(bank(), whole_only).classify(mixed).await.unwrap();
        assert!(
            whole.is_empty() || whole[0].score < by_sentence[0].score,
            "{whole:?} {by_sentence:?}"
        );
    }

    #[tokio::test]
    async fn cross_validation_reads_each_example_without_its_own_fold() {
        // The only distress example shares no word with the rest: trained without it, the
        // head has never seen distress, and reads nothing there.
        let mut examples = bank();
        examples.push(example(&[FlagKind::Distress], "zebra quartz violin"));
        let intents = intents(examples, NO_RULES);
        let with = intents.classify("zebra quartz violin").await.unwrap();
        assert_eq!(kinds(&with), [FlagKind::Distress]);
        let read = intents.cross_validate(3).await.unwrap();
        assert_eq!(read.len(), 13);
        assert!(
            read[12].iter().all(|s| s.kind != FlagKind::Distress),
            "{:?}",
            read[12]
        );
    }

    #[tokio::test]
    async fn training_is_deterministic() {
        let a = intents(bank(), NO_RULES);
        let b = intents(bank(), NO_RULES);
        let text = "i might quit, can i talk to my mentor";
        assert_eq!(
            a.classify(text).await.unwrap(),
            b.classify(text).await.unwrap()
        );
    }

    #[tokio::test]
    async fn the_keyword_rules_raise_their_kind_first_with_the_words_as_evidence() {
        let params = Params {
            rules: true,
            ..NO_RULES
        };
        let signals = intents(bank(), params)
            .classify("please, I need to speak with my tutor")
            .await
            .unwrap();
        assert_eq!(kinds(&signals), [FlagKind::HumanRequested]);
        assert_eq!(signals[0].score, 1.0);
        assert!(matches!(&signals[0].evidence, Evidence::Words(w) if w.contains("tutor")));
    }

    #[test]
    fn lexical_features_have_unit_length_and_share_letters_across_word_forms() {
        let a = lexical("abandonner", false);
        let b = lexical("abandonne", false);
        let norm: f32 = a.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        let shared = a
            .iter()
            .filter(|(i, _)| b.iter().any(|(j, _)| i == j))
            .count();
        assert!(shared * 2 > a.len(), "{shared} of {}", a.len());
        assert!(lexical("  ?! ", true).is_empty());
    }

    #[test]
    fn text_speak_and_contractions_are_spelled_out_in_both_languages() {
        assert_eq!(
            normalise("Jsuis à bout, jcrois que j'arrête... idk"),
            "je suis a bout je crois que j arrete i don t know"
        );
        assert_eq!(normalise("im done, dont care"), "i m done don t care");
        // Words of code stay as they are.
        assert_eq!(normalise("in C, r and id"), "in c r and id");
    }

    #[test]
    fn with_negation_the_words_after_it_are_features_of_their_own() {
        let plain = lexical("not giving up", false);
        let marked = lexical("not giving up", true);
        assert!(
            marked.len() > plain.len(),
            "{} {}",
            marked.len(),
            plain.len()
        );
        // Without a negation both read the same.
        assert_eq!(lexical("giving up", true), lexical("giving up", false));
    }

    #[tokio::test]
    async fn a_sentence_alone_needs_the_margin_above_the_threshold() {
        let mixed = "what is a list comprehension in python. i am quitting this course";
        let strict = Params {
            segment_margin: 0.5,
            ..NO_RULES
        };
        let whole_only = Params {
            segments: false,
            ..NO_RULES
        };
        // No sentence passes 0.5 + 0.5: what is read is the whole message's reading alone
        // (whose score is below the strongest sentence's, see the test above).
        let read = intents(bank(), strict).classify(mixed).await.unwrap();
        let whole = intents(bank(), whole_only).classify(mixed).await.unwrap();
        assert_eq!(read, whole);
    }

    #[test]
    fn a_message_is_read_whole_and_by_sentence_short_pieces_joining_their_neighbour() {
        assert_eq!(segments("  how do loops work  "), ["how do loops work"]);
        let texts = segments("ok so. my loop never stops, lol. I think I will quit the course");
        assert_eq!(
            texts,
            [
                "ok so. my loop never stops, lol. I think I will quit the course",
                "ok so my loop never stops lol",
                "I think I will quit the course",
            ]
        );
        let many = "one two three. ".repeat(20);
        assert_eq!(segments(&many).len(), 1 + MAX_SEGMENTS);
    }

    #[test]
    fn the_builtin_bank_parses_and_covers_every_kind_in_both_languages() {
        let examples = parse_examples(EXAMPLES).unwrap();
        for lang in ["en", "fr"] {
            for kind in KINDS {
                let n = examples
                    .iter()
                    .filter(|e| e.lang == lang && e.kinds.contains(&kind))
                    .count();
                assert!(n >= 15, "{lang} {kind:?}: {n}");
            }
            let ordinary = examples
                .iter()
                .filter(|e| e.lang == lang && e.kinds.is_empty())
                .count();
            assert!(ordinary >= 30, "{lang} ordinary: {ordinary}");
        }
    }

    #[test]
    fn a_bank_line_with_a_kind_not_read_from_words_is_refused_with_its_line() {
        let text = "{\"kinds\": [], \"text\": \"fine\"}\n{\"kinds\": [\"stuck\"], \"text\": \"x\"}";
        match parse_examples(text) {
            Err(IntentError::BadExample { line: 2, message }) => {
                assert!(message.contains("stuck"), "{message}")
            }
            other => panic!("expected a bad line 2, got {other:?}"),
        }
        assert!(matches!(parse_examples("\n"), Err(IntentError::NoExamples)));
    }
}
