//! The doctor's offline half (seed 000's `entity_extract.py` → `predict.py` →
//! `neo4j_write.py`): disease descriptions in, disease → symptom links out. Sentences go to
//! the tagger in batches over gRPC; the lexicon's reader reads them too and maps every tagged
//! span to a canonical symptom; each candidate gets a decision with its reason and score
//! (negated mentions and spans that name no symptom are rejected); the entity review model
//! then judges every accepted mention in its sentence and rejects those under a threshold;
//! the accepted links are written as CSV and can be merged into a Bolt graph idempotently.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::model_client::{ModelClient, ModelError};
use crate::lexicon::review::{locate, review_input};
use crate::lexicon::{reader::How, Lexicon, Reader};

/// One disease's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiseaseText {
    pub disease: String,
    pub text: String,
}

/// Reads every `*.txt` of `dir`: the disease is the file's `# <name>` heading (or its stem),
/// and must be a disease of the lexicon.
pub fn read_texts(dir: &Path, lexicon: &Lexicon) -> Result<Vec<DiseaseText>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let mut texts = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (disease, body) = match text.split_once('\n') {
            Some((first, rest)) if first.starts_with("# ") => {
                (first.trim_start_matches("# ").trim().to_string(), rest)
            }
            _ => (stem, text.as_str()),
        };
        if lexicon.disease(&disease).is_none() {
            return Err(format!(
                "{}: `{disease}` is not a disease of the lexicon (diseases.csv)",
                path.display()
            ));
        }
        texts.push(DiseaseText {
            disease,
            text: body.to_string(),
        });
    }
    Ok(texts)
}

/// The sentences of a text: split after 。！？；, line breaks and their ASCII forms.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let end = matches!(c, '。' | '！' | '？' | '；' | '\n' | '!' | '?' | ';');
        if !end {
            current.push(c);
        }
        if end || current.chars().count() >= 400 {
            let s = current.trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            current.clear();
        }
    }
    let s = current.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// What happened to one candidate mention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub disease: String,
    /// The canonical symptom; empty when the span names none.
    pub symptom: String,
    pub span: String,
    pub accepted: bool,
    /// `lexicon`, `tagger`, or why it was rejected: `negated`, `not in lexicon`, `review`.
    pub reason: &'static str,
    /// How sure the step that decided is: 1 for the lexicon's readings, the similarity for
    /// a near spelling, the review model's probability once it has judged the mention.
    pub score: f32,
    pub sentence: String,
    /// Where the span is in the sentence, in characters (for the review model's context).
    #[serde(skip)]
    pub at: (usize, usize),
}

/// Extracts candidates from every sentence of `texts`, `batch` sentences per tagger call;
/// `progress` hears how many sentences are done.
pub async fn extract(
    models: &ModelClient,
    reader: &Reader,
    texts: &[DiseaseText],
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Decision>, ModelError> {
    let all: Vec<(&str, String)> = texts
        .iter()
        .flat_map(|t| {
            sentences(&t.text)
                .into_iter()
                .map(move |s| (t.disease.as_str(), s))
        })
        .collect();
    let mut decisions = Vec::new();
    for chunk in all.chunks(batch.max(1)) {
        let batch_texts: Vec<&str> = chunk.iter().map(|(_, s)| s.as_str()).collect();
        let tagged = models.entities_batch(&batch_texts).await?;
        for ((disease, sentence), mentions) in chunk.iter().zip(tagged) {
            let chars: Vec<char> = sentence.chars().collect();
            let decide = |symptom: &str, span: &str, accepted, reason, score| Decision {
                disease: disease.to_string(),
                symptom: symptom.to_string(),
                span: span.to_string(),
                accepted,
                reason,
                score,
                sentence: sentence.clone(),
                at: locate(&chars, span, 0).unwrap_or((0, chars.len())),
            };
            let found = reader.scan(sentence);
            for f in &found {
                let span: String = chars[f.start..f.end].iter().collect();
                decisions.push(Decision {
                    at: (f.start, f.end),
                    ..if f.negated {
                        decide(&f.symptom, &span, false, "negated", 1.0)
                    } else {
                        decide(&f.symptom, &span, true, "lexicon", 1.0)
                    }
                });
            }
            let spans: Vec<String> = mentions
                .into_iter()
                .filter(|m| m.kind == "SYM")
                .map(|m| m.text)
                .collect();
            let (symptoms, dropped) = reader.read_with_spans(sentence, &spans);
            let from_lexicon: BTreeSet<&str> = found.iter().map(|f| f.symptom.as_str()).collect();
            for s in symptoms
                .iter()
                .filter(|s| !from_lexicon.contains(s.as_str()))
            {
                let (span, how) = spans
                    .iter()
                    .find_map(|sp| {
                        reader
                            .normalise(sp)
                            .into_iter()
                            .find(|(n, _)| n == s)
                            .map(|(_, h)| (sp.clone(), h))
                    })
                    .unwrap_or((s.clone(), How::Surface));
                let score = if how == How::Similarity {
                    crate::lexicon::reader::similarity(
                        &span.chars().collect::<Vec<_>>(),
                        &s.chars().collect::<Vec<_>>(),
                    ) as f32
                } else {
                    1.0
                };
                decisions.push(decide(s, &span, true, "tagger", score));
            }
            for span in dropped {
                decisions.push(decide("", &span, false, "not in lexicon", 0.0));
            }
        }
        progress(chunk.len());
    }
    Ok(decisions)
}

/// The review threshold `build-graph` uses unless told otherwise. The review model was
/// trained on as many wrong candidates as real ones, while the mentions the lexicon accepts
/// in disease descriptions are real about four times in five: shifted by that prior, the
/// model's odds are even at a probability of 0.2, not 0.5.
pub const DEFAULT_REVIEW_THRESHOLD: f32 = 0.2;

/// Has the entity review model judge every accepted decision, `batch` per request: those
/// it gives less than `threshold` are rejected (reason `review`); every judged decision
/// keeps the model's probability as its score. Returns how many it rejected.
pub async fn review(
    models: &ModelClient,
    decisions: &mut [Decision],
    threshold: f32,
    batch: usize,
) -> Result<usize, ModelError> {
    let mut judged: Vec<&mut Decision> = decisions.iter_mut().filter(|d| d.accepted).collect();
    let mut rejected = 0;
    for chunk in judged.chunks_mut(batch.max(1)) {
        let inputs: Vec<(String, String)> = chunk
            .iter()
            .map(|d| {
                let chars: Vec<char> = d.sentence.chars().collect();
                review_input(&chars, d.at.0, d.at.1)
            })
            .collect();
        let scores = models.review(&inputs).await?;
        for (d, p) in chunk.iter_mut().zip(scores) {
            d.score = p;
            if p < threshold {
                d.accepted = false;
                d.reason = "review";
                rejected += 1;
            }
        }
    }
    Ok(rejected)
}

/// The accepted (disease, symptom) links, each once.
pub fn links(decisions: &[Decision]) -> BTreeSet<(String, String)> {
    decisions
        .iter()
        .filter(|d| d.accepted)
        .map(|d| (d.disease.clone(), d.symptom.clone()))
        .collect()
}

/// Writes every decision as CSV (`disease,symptom,span,decision,reason,score,sentence`).
pub fn write_decisions(path: &Path, decisions: &[Decision]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    w.write_record([
        "disease", "symptom", "span", "decision", "reason", "score", "sentence",
    ])
    .map_err(|e| e.to_string())?;
    for d in decisions {
        w.write_record([
            d.disease.as_str(),
            &d.symptom,
            &d.span,
            if d.accepted { "accepted" } else { "rejected" },
            d.reason,
            &format!("{:.3}", d.score),
            &d.sentence,
        ])
        .map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

/// Precision and recall of `found` links against `curated` ones.
pub fn quality(
    found: &BTreeSet<(String, String)>,
    curated: &BTreeSet<(String, String)>,
) -> (f64, f64) {
    let hits = found.intersection(curated).count() as f64;
    let p = if found.is_empty() {
        0.0
    } else {
        hits / found.len() as f64
    };
    let r = if curated.is_empty() {
        0.0
    } else {
        hits / curated.len() as f64
    };
    (p, r)
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub texts: usize,
    pub sentences: usize,
    pub accepted: usize,
    pub negated: usize,
    pub not_in_lexicon: usize,
    /// Mentions the entity review model rejected (`None`: no review).
    pub reviewed_out: Option<usize>,
    /// Distinct accepted (disease, symptom) links.
    pub links: usize,
    /// Links the graph did not have (written unless a dry run).
    pub added: usize,
    /// Links the graph already had.
    pub unchanged: usize,
    /// Against the curated links of `disease_symptoms.csv`.
    pub precision: f64,
    pub recall: f64,
    pub dry_run: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} texts, {} sentences: {} mentions accepted, {} rejected as negated, {} spans naming no symptom",
            self.texts, self.sentences, self.accepted, self.negated, self.not_in_lexicon
        )?;
        match self.reviewed_out {
            Some(n) => writeln!(f, "the entity review model rejected {n} mentions")?,
            None => writeln!(f, "no entity review (--no_review)")?,
        }
        writeln!(
            f,
            "{} disease-symptom links: {} {}, {} unchanged",
            self.links,
            self.added,
            if self.dry_run {
                "would be added"
            } else {
                "added"
            },
            self.unchanged
        )?;
        write!(
            f,
            "against the curated links (disease_symptoms.csv): precision {:.3}, recall {:.3}",
            self.precision, self.recall
        )
    }
}

/// Where a run writes, and how.
#[derive(Clone, Copy)]
pub struct BuildOptions<'a> {
    /// The folder for `reviewed.csv`.
    pub out: Option<&'a Path>,
    pub graph: Option<&'a super::graph::BoltKnowledgeGraph>,
    pub dry_run: bool,
    /// Sentences per tagger request (and mentions per review request).
    pub batch: usize,
    /// The entity review model's threshold; `None` skips the review.
    pub review: Option<f32>,
}

/// Runs the pipeline over `texts`: extraction, the decisions as CSV in `out` (when given),
/// and the accepted links merged into `graph` (compared only, with `dry_run`; compared with
/// the lexicon's own links when there is no graph).
pub async fn build(
    models: &ModelClient,
    lexicon: &Lexicon,
    texts: &[DiseaseText],
    options: &BuildOptions<'_>,
    progress: impl FnMut(usize),
) -> Result<Summary, String> {
    let BuildOptions {
        out,
        graph,
        dry_run,
        batch,
        review: threshold,
    } = *options;
    let reader = Reader::new(lexicon);
    let mut decisions = extract(models, &reader, texts, batch, progress)
        .await
        .map_err(|e| e.to_string())?;
    let reviewed_out = match threshold {
        Some(t) => Some(
            review(models, &mut decisions, t, batch)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    if let Some(out) = out {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        write_decisions(&out.join("reviewed.csv"), &decisions)?;
    }
    let found = links(&decisions);
    let curated: BTreeSet<(String, String)> = lexicon.links.iter().cloned().collect();
    let (added, unchanged) = match (graph, dry_run) {
        (Some(g), false) => g.merge_links(&found).await.map_err(|e| e.to_string())?,
        (Some(g), true) => {
            let existing = g.links().await.map_err(|e| e.to_string())?;
            let had = found.intersection(&existing).count();
            (found.len() - had, had)
        }
        (None, _) => {
            let had = found.intersection(&curated).count();
            (found.len() - had, had)
        }
    };
    let (precision, recall) = quality(&found, &curated);
    let count = |reason: &str| decisions.iter().filter(|d| d.reason == reason).count();
    Ok(Summary {
        texts: texts.len(),
        sentences: texts.iter().map(|t| sentences(&t.text).len()).sum(),
        accepted: decisions.iter().filter(|d| d.accepted).count(),
        negated: count("negated"),
        not_in_lexicon: count("not in lexicon"),
        reviewed_out,
        links: found.len(),
        added,
        unchanged,
        precision,
        recall,
        dry_run: dry_run || graph.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_split_into_sentences() {
        assert_eq!(
            sentences("起病急，发热。常有咳嗽！\n一般不伴有腹泻；多休息"),
            ["起病急，发热", "常有咳嗽", "一般不伴有腹泻", "多休息"]
        );
        assert!(sentences("\n\n。").is_empty());
    }

    #[test]
    fn quality_counts_links_both_ways() {
        let set = |v: &[(&str, &str)]| -> BTreeSet<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let found = set(&[("感冒", "咳嗽"), ("感冒", "腹泻")]);
        let curated = set(&[
            ("感冒", "咳嗽"),
            ("感冒", "鼻塞"),
            ("感冒", "发热"),
            ("感冒", "咽痛"),
        ]);
        assert_eq!(quality(&found, &curated), (0.5, 0.25));
    }
}
