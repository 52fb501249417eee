//! `eval flags`: what the flag rules read in learners' messages, on a labelled set (English and
//! French, hard negatives included): precision and recall per kind, overall and per language,
//! the share of ordinary messages flagged, and the work added per message (p50/p99), against
//! the targets of issue 17. The classifier is the service's own ([`Intents`] over the built-in
//! example bank and the configured embedder), or the keyword rules alone (`--rules-only`, the
//! figures before the classifier). `--cross-validate N` scores the example bank on itself,
//! each example read by a head trained without its fold: how the classifier's parameters are
//! chosen, so the evaluation set is never tuned to.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::review::FlagKind;
use crate::review::intent::{Intents, KINDS, Params, Signal, parse_examples, rule_signals};

/// One labelled message of the set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    /// `en` or `fr`.
    pub lang: String,
    /// The kinds a mentor would want flagged; empty for an ordinary message.
    pub kinds: Vec<FlagKind>,
    pub text: String,
}

/// The targets of issue 17.
pub struct Target {
    pub kind: FlagKind,
    pub min_precision: f64,
    pub min_recall: f64,
}

pub const TARGETS: [Target; 3] = [
    Target {
        kind: FlagKind::HumanRequested,
        min_precision: 0.90,
        min_recall: 0.90,
    },
    Target {
        kind: FlagKind::Discouraged,
        min_precision: 0.80,
        min_recall: 0.80,
    },
    Target {
        kind: FlagKind::Distress,
        min_precision: 0.70,
        min_recall: 0.95,
    },
];
/// Ordinary messages flagged at most.
pub const MAX_ORDINARY_FLAGGED: f64 = 0.02;
/// Work added per message, p99, at most.
pub const MAX_P99_MS: f64 = 10.0;

pub fn read_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the flag set {}", path.display()))?;
    let mut cases = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a labelled message",
                path.display(),
                idx + 1
            )
        })?;
        if let Some(kind) = case.kinds.iter().find(|k| !KINDS.contains(k)) {
            anyhow::bail!(
                "{} line {}: kind {:?} is not read from a message's words",
                path.display(),
                idx + 1,
                kind.as_str()
            );
        }
        cases.push(case);
    }
    anyhow::ensure!(!cases.is_empty(), "{} holds no messages", path.display());
    Ok(cases)
}

/// What reads the messages.
pub enum Reader {
    /// The keyword rules alone.
    Rules,
    /// The service's classifier.
    Intents(Arc<Intents>),
}

impl Reader {
    /// The service's classifier over `examples` (the built-in bank when `None`), with the
    /// configured dense embedder; an error without one.
    pub fn from_settings(
        settings: &Settings,
        examples: Option<&Path>,
        params: Params,
    ) -> anyhow::Result<Self> {
        let embedder =
            crate::index::build_flags_embedder(settings, || crate::index::build_dense(settings))?
                .context(
                    "the flag classifier needs a dense embedder (embedding.flags_model, embedding.provider); use --rules-only for the keyword rules alone",
                )?;
        let text = match examples {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the examples {}", path.display()))?,
            None => crate::review::intent::EXAMPLES.to_string(),
        };
        let examples = parse_examples(&text)?;
        Ok(Self::Intents(Arc::new(Intents::new(
            embedder, examples, params,
        ))))
    }

    fn describe(&self) -> String {
        match self {
            Self::Rules => "keyword rules only".to_string(),
            Self::Intents(intents) => {
                let p = intents.params();
                format!(
                    "keyword rules{} + a head trained on {} examples ({}{}{}thresholds {:?})",
                    if p.rules { "" } else { " off" },
                    intents.examples().len(),
                    if p.segments {
                        format!("each sentence too at +{}, ", p.segment_margin)
                    } else {
                        String::new()
                    },
                    if p.normalise {
                        "text-speak spelled out, "
                    } else {
                        ""
                    },
                    if p.negation { "negation marked, " } else { "" },
                    p.thresholds
                )
            }
        }
    }

    async fn read(&self, text: &str) -> anyhow::Result<Vec<Signal>> {
        Ok(match self {
            Self::Rules => rule_signals(text),
            Self::Intents(intents) => intents.classify(text).await?,
        })
    }
}

/// Precision and recall of one kind, overall (`lang` "all") or in one language.
#[derive(Debug, Clone, Serialize)]
pub struct KindRow {
    pub kind: FlagKind,
    pub lang: String,
    pub positives: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub misses: usize,
    /// None when nothing was flagged.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// Ordinary messages (no kind expected) that raised a flag anyway.
#[derive(Debug, Clone, Serialize)]
pub struct OrdinaryRow {
    pub lang: String,
    pub ordinary: usize,
    pub flagged: usize,
    pub share: f64,
}

/// One message read wrong: the kinds expected and the ones read.
#[derive(Debug, Clone, Serialize)]
pub struct Mistake {
    pub id: String,
    pub expected: Vec<FlagKind>,
    pub read: Vec<FlagKind>,
    pub why: Vec<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagsReport {
    pub set: String,
    pub reader: String,
    pub messages: usize,
    pub kinds: Vec<KindRow>,
    pub ordinary: Vec<OrdinaryRow>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mistakes: Vec<Mistake>,
}

impl FlagsReport {
    /// The targets missed, in words; empty when all are met.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for target in &TARGETS {
            let Some(row) = self
                .kinds
                .iter()
                .find(|r| r.kind == target.kind && r.lang == "all")
            else {
                continue;
            };
            if row.positives == 0 {
                failures.push(format!("no {} message in the set", target.kind.as_str()));
                continue;
            }
            let precision = row.precision.unwrap_or(0.0);
            let recall = row.recall.unwrap_or(0.0);
            if precision < target.min_precision {
                failures.push(format!(
                    "{} precision {precision:.2} < {:.2}",
                    target.kind.as_str(),
                    target.min_precision
                ));
            }
            if recall < target.min_recall {
                failures.push(format!(
                    "{} recall {recall:.2} < {:.2}",
                    target.kind.as_str(),
                    target.min_recall
                ));
            }
        }
        if let Some(all) = self.ordinary.iter().find(|r| r.lang == "all")
            && all.share > MAX_ORDINARY_FLAGGED
        {
            failures.push(format!(
                "{:.1}% of ordinary messages flagged > {:.0}%",
                all.share * 100.0,
                MAX_ORDINARY_FLAGGED * 100.0
            ));
        }
        if self.p99_ms > MAX_P99_MS {
            failures.push(format!(
                "p99 {:.1} ms per message > {MAX_P99_MS} ms",
                self.p99_ms
            ));
        }
        failures
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Reads every case and scores the reader. With `cross_validate` folds, case `i` is the
/// reader's example `i`, read by a head trained without its fold (no timings then).
pub async fn run(
    reader: &Reader,
    set: &str,
    cases: &[Case],
    cross_validate: Option<usize>,
) -> anyhow::Result<FlagsReport> {
    if let Reader::Intents(intents) = reader {
        intents.warm_up().await?;
        // One read first: the timings are of a warm reader, as in the service.
        intents.classify("hello").await?;
    }
    let mut read: Vec<Vec<Signal>> = Vec::with_capacity(cases.len());
    let mut timings = Vec::with_capacity(cases.len());
    match (cross_validate, reader) {
        (Some(folds), Reader::Intents(intents)) => {
            anyhow::ensure!(
                cases.len() == intents.examples().len(),
                "cross-validation reads the example bank"
            );
            read = intents.cross_validate(folds).await?;
        }
        (Some(_), Reader::Rules) => anyhow::bail!("cross-validation needs the classifier"),
        (None, _) => {
            for case in cases {
                let started = Instant::now();
                let signals = reader.read(&case.text).await?;
                timings.push(started.elapsed().as_secs_f64() * 1000.0);
                read.push(signals);
            }
        }
    }
    timings.sort_by(f64::total_cmp);
    let langs: Vec<String> = {
        let mut langs: Vec<String> = cases.iter().map(|c| c.lang.clone()).collect();
        langs.sort();
        langs.dedup();
        langs
    };
    let in_lang = |case: &Case, lang: &str| lang == "all" || case.lang == lang;
    let scopes: Vec<String> = std::iter::once("all".to_string())
        .chain(langs.iter().cloned())
        .collect();
    let mut kinds = Vec::new();
    for kind in KINDS {
        for lang in &scopes {
            let (mut positives, mut tp, mut fp, mut misses) = (0, 0, 0, 0);
            for (case, signals) in cases.iter().zip(&read) {
                if !in_lang(case, lang) {
                    continue;
                }
                let expected = case.kinds.contains(&kind);
                let got = signals.iter().any(|s| s.kind == kind);
                positives += usize::from(expected);
                match (expected, got) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => misses += 1,
                    (false, false) => {}
                }
            }
            kinds.push(KindRow {
                kind,
                lang: lang.clone(),
                positives,
                true_positives: tp,
                false_positives: fp,
                misses,
                precision: (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64),
                recall: (positives > 0).then(|| tp as f64 / positives as f64),
            });
        }
    }
    let mut ordinary = Vec::new();
    for lang in &scopes {
        let plain: Vec<usize> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kinds.is_empty() && in_lang(c, lang))
            .map(|(idx, _)| idx)
            .collect();
        let flagged = plain.iter().filter(|&&idx| !read[idx].is_empty()).count();
        ordinary.push(OrdinaryRow {
            lang: lang.clone(),
            ordinary: plain.len(),
            flagged,
            share: if plain.is_empty() {
                0.0
            } else {
                flagged as f64 / plain.len() as f64
            },
        });
    }
    let mistakes = cases
        .iter()
        .zip(&read)
        .filter_map(|(case, signals)| {
            let mut got: Vec<FlagKind> = signals.iter().map(|s| s.kind).collect();
            got.sort_by_key(|k| k.as_str());
            let mut expected = case.kinds.clone();
            expected.sort_by_key(|k| k.as_str());
            (got != expected).then(|| Mistake {
                id: case.id.clone(),
                expected,
                read: got,
                why: signals
                    .iter()
                    .map(|s| format!("{} {:.2} {}", s.kind.as_str(), s.score, s.describe()))
                    .collect(),
                text: case.text.clone(),
            })
        })
        .collect();
    Ok(FlagsReport {
        set: set.to_string(),
        reader: reader.describe(),
        messages: cases.len(),
        kinds,
        ordinary,
        p50_ms: percentile(&timings, 0.50),
        p99_ms: percentile(&timings, 0.99),
        max_ms: timings.last().copied().unwrap_or(0.0),
        mistakes,
    })
}

/// The reader's own example bank as cases, for `--cross-validate`.
pub fn bank_cases(reader: &Reader) -> anyhow::Result<Vec<Case>> {
    let Reader::Intents(intents) = reader else {
        anyhow::bail!("--cross-validate scores the example bank: it needs the classifier");
    };
    Ok(intents
        .examples()
        .iter()
        .enumerate()
        .map(|(idx, e)| Case {
            id: format!("example {}", idx + 1),
            lang: e.lang.clone(),
            kinds: e.kinds.clone(),
            text: e.text.clone(),
        })
        .collect())
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// The report as a table, then the targets missed and the messages read wrong.
pub fn render(report: &FlagsReport) -> String {
    let mut out = format!(
        "flags on {}: {} messages, read by {}\n\n",
        report.set, report.messages, report.reader
    );
    out.push_str(&format!(
        "{:<16} {:<4} {:>9} {:>4} {:>4} {:>4} {:>9} {:>6}   target\n",
        "kind", "lang", "positives", "tp", "fp", "miss", "precision", "recall"
    ));
    for row in &report.kinds {
        let target = TARGETS
            .iter()
            .find(|t| t.kind == row.kind)
            .filter(|_| row.lang == "all")
            .map(|t| format!("P >= {:.2}, R >= {:.2}", t.min_precision, t.min_recall))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:<4} {:>9} {:>4} {:>4} {:>4} {:>9} {:>6}   {}\n",
            row.kind.as_str(),
            row.lang,
            row.positives,
            row.true_positives,
            row.false_positives,
            row.misses,
            ratio(row.precision),
            ratio(row.recall),
            target
        ));
    }
    out.push('\n');
    for row in &report.ordinary {
        out.push_str(&format!(
            "ordinary messages flagged ({}): {}/{} = {:.1}%{}\n",
            row.lang,
            row.flagged,
            row.ordinary,
            row.share * 100.0,
            if row.lang == "all" {
                format!("   target <= {:.0}%", MAX_ORDINARY_FLAGGED * 100.0)
            } else {
                String::new()
            }
        ));
    }
    out.push_str(&format!(
        "work per message: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   target p99 <= {MAX_P99_MS} ms\n",
        report.p50_ms, report.p99_ms, report.max_ms
    ));
    let failures = report.failures();
    if failures.is_empty() {
        out.push_str("\nall targets met\n");
    } else {
        out.push_str(&format!("\ntargets missed: {}\n", failures.join("; ")));
    }
    if !report.mistakes.is_empty() {
        out.push_str(&format!("\nread wrong ({}):\n", report.mistakes.len()));
        for m in &report.mistakes {
            let names = |kinds: &[FlagKind]| {
                if kinds.is_empty() {
                    "ordinary".to_string()
                } else {
                    kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join("+")
                }
            };
            out.push_str(&format!(
                "  {} expected {} read {}: {:?}",
                m.id,
                names(&m.expected),
                names(&m.read),
                m.text
            ));
            if !m.why.is_empty() {
                out.push_str(&format!(" [{}]", m.why.join("; ")));
            }
            out.push('\n');
        }
    }
    out
}
