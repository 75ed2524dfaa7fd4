//! Scoring the whole doctor on the hand-written evaluation set in `data/eval/`: symptoms
//! found in single messages (precision, recall, F1), whether a second message continues the
//! first (accuracy), and whether a conversation's diseases include one a doctor would put in
//! the top 3. Each item runs in a session of its own, through [`Doctor::chat`], exactly as a
//! patient's messages would. Nothing here trains or tunes anything: it only measures.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::session::SessionKey;
use super::Doctor;

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: String,
    pub text: String,
    pub symptoms: Vec<String>,
    #[serde(default)]
    pub optional: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub id: String,
    pub first: String,
    pub second: String,
    pub related: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub turns: Vec<String>,
    pub top3: Vec<String>,
}

/// The three files of an evaluation set.
#[derive(Debug, Clone, Default)]
pub struct EvalSet {
    pub messages: Vec<Message>,
    pub pairs: Vec<Pair>,
    pub conversations: Vec<Conversation>,
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

impl EvalSet {
    /// Reads `messages.jsonl`, `pairs.jsonl` and `conversations.jsonl` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, String> {
        Ok(EvalSet {
            messages: read_lines(&dir.join("messages.jsonl"))?,
            pairs: read_lines(&dir.join("pairs.jsonl"))?,
            conversations: read_lines(&dir.join("conversations.jsonl"))?,
        })
    }
}

/// Symptom counts, micro-averaged over messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

impl Counts {
    /// Scores one message: a name in `gold` not found is a miss, a name found that is in
    /// neither `gold` nor `optional` is a false positive, names in `optional` are ignored.
    pub fn add(&mut self, found: &[String], gold: &[String], optional: &[String]) {
        let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
        let gold: BTreeSet<&str> = gold.iter().map(String::as_str).collect();
        self.true_positives += found.intersection(&gold).count();
        self.false_negatives += gold.difference(&found).count();
        self.false_positives += found
            .iter()
            .filter(|f| !gold.contains(*f) && !optional.iter().any(|o| o == *f))
            .count();
    }

    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One item the doctor got wrong, for the report.
#[derive(Debug, Clone)]
pub struct Miss {
    pub id: String,
    pub what: String,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub symptoms: Counts,
    pub messages: usize,
    pub related_right: usize,
    pub pairs: usize,
    pub top3_hits: usize,
    pub conversations: usize,
    pub symptom_misses: Vec<Miss>,
    pub relatedness_misses: Vec<Miss>,
    pub diagnosis_misses: Vec<Miss>,
    /// Answers that had a dependency down: the figures are not the models' if any.
    pub degraded: usize,
}

impl Report {
    pub fn relatedness(&self) -> f64 {
        ratio(self.related_right, self.pairs)
    }

    pub fn top3(&self) -> f64 {
        ratio(self.top3_hits, self.conversations)
    }

    /// The summary table and up to `misses` misses of each kind.
    pub fn render(&self, misses: usize) -> String {
        let mut out = String::new();
        let c = &self.symptoms;
        let _ = writeln!(
            out,
            "symptoms      {} messages: precision {:.3}  recall {:.3}  F1 {:.3}  (tp {}, fp {}, fn {})",
            self.messages,
            c.precision(),
            c.recall(),
            c.f1(),
            c.true_positives,
            c.false_positives,
            c.false_negatives
        );
        let _ = writeln!(
            out,
            "relatedness   {} pairs: accuracy {:.3}  ({} right)",
            self.pairs,
            self.relatedness(),
            self.related_right
        );
        let _ = writeln!(
            out,
            "diagnosis     {} conversations: right disease in the top 3 {:.3}  ({} hits)",
            self.conversations,
            self.top3(),
            self.top3_hits
        );
        if self.degraded > 0 {
            let _ = writeln!(
                out,
                "WARNING: {} answers had a dependency down; these figures are not the models'",
                self.degraded
            );
        }
        for (title, list) in [
            ("symptom misses", &self.symptom_misses),
            ("relatedness misses", &self.relatedness_misses),
            ("diagnosis misses", &self.diagnosis_misses),
        ] {
            if misses == 0 || list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title} ({} in all):", list.len());
            for m in list.iter().take(misses) {
                let _ = writeln!(out, "  {}  {}", m.id, m.what);
            }
        }
        out
    }
}

/// Runs every item of `set` through `doctor`, each in a fresh session.
pub async fn evaluate(doctor: &Doctor, set: &EvalSet) -> Report {
    let mut report = Report::default();
    for m in &set.messages {
        let reply = doctor
            .chat(&SessionKey::chat(format!("eval-{}", m.id)), &m.text)
            .await;
        report.degraded += usize::from(!reply.degraded.is_empty());
        let before = report.symptoms;
        report
            .symptoms
            .add(&reply.symptoms, &m.symptoms, &m.optional);
        if report.symptoms != before
            && (report.symptoms.false_positives != before.false_positives
                || report.symptoms.false_negatives != before.false_negatives)
        {
            report.symptom_misses.push(Miss {
                id: m.id.clone(),
                what: format!(
                    "{}  found {:?}  expected {:?}{}",
                    m.text,
                    reply.symptoms,
                    m.symptoms,
                    if m.optional.is_empty() {
                        String::new()
                    } else {
                        format!(" (optional {:?})", m.optional)
                    }
                ),
            });
        }
        report.messages += 1;
    }
    for p in &set.pairs {
        let key = SessionKey::chat(format!("eval-{}", p.id));
        let first = doctor.chat(&key, &p.first).await;
        let second = doctor.chat(&key, &p.second).await;
        report.degraded += usize::from(!first.degraded.is_empty() || !second.degraded.is_empty());
        // No decision (no previous message) counts as a continuation, as the doctor does.
        let related = second.related.unwrap_or(true);
        if related == p.related {
            report.related_right += 1;
        } else {
            report.relatedness_misses.push(Miss {
                id: p.id.clone(),
                what: format!(
                    "{} → {}  judged {}",
                    p.first,
                    p.second,
                    if related { "related" } else { "unrelated" }
                ),
            });
        }
        report.pairs += 1;
    }
    for c in &set.conversations {
        let key = SessionKey::chat(format!("eval-{}", c.id));
        let mut last = None;
        for turn in &c.turns {
            let reply = doctor.chat(&key, turn).await;
            report.degraded += usize::from(!reply.degraded.is_empty());
            last = Some(reply);
        }
        let Some(last) = last else { continue };
        let named: Vec<&str> = last.diseases.iter().map(|d| d.name.as_str()).collect();
        if c.top3.iter().any(|d| named.contains(&d.as_str())) {
            report.top3_hits += 1;
        } else {
            report.diagnosis_misses.push(Miss {
                id: c.id.clone(),
                what: format!(
                    "{}  symptoms {:?}  top 3 {:?}  expected one of {:?}",
                    c.turns.join(" / "),
                    last.symptoms,
                    named,
                    c.top3
                ),
            });
        }
        report.conversations += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn optional_names_are_neither_hits_nor_false_positives() {
        let mut c = Counts::default();
        c.add(
            &names(&["发热", "胸痛", "咳嗽"]),
            &names(&["发热", "乏力"]),
            &names(&["胸痛"]),
        );
        assert_eq!(
            c,
            Counts {
                true_positives: 1,
                false_positives: 1,
                false_negatives: 1
            }
        );
        assert!((c.precision() - 0.5).abs() < 1e-9);
        assert!((c.recall() - 0.5).abs() < 1e-9);
        let mut empty = Counts::default();
        empty.add(&[], &[], &[]);
        assert_eq!(empty.f1(), 0.0);
    }
}
