//! How patients say things, beyond the symptoms' own aliases (`data/language/`): the words
//! for each body part (嗓子, 喉咙, 嗓子眼儿 for the throat), the words for each sensation (疼,
//! 痛, 酸痛 for pain), which symptom a body part and a sensation make together (throat + pain
//! = 咽痛), verbs that are symptoms when used as one (拉了五次), and small closed word classes (degree adverbs, negations, greetings...). The
//! reader ([`super::reader`]) finds symptoms with them that no alias spells out; the tagger's
//! corpus generator composes sentences with them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

/// A body part and every word for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub key: String,
    pub words: Vec<String>,
    /// The body system it belongs to (the `body_part` vocabulary of `symptoms.csv`).
    pub system: String,
}

/// A sensation or complaint and every word for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensation {
    pub key: String,
    pub words: Vec<String>,
}

/// The closed word classes of `words.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WordKind {
    Degree,
    Frequency,
    Particle,
    Aspect,
    Negation,
    NegationEnd,
    TopicShift,
    Closing,
    Greeting,
    Logistics,
    ComplaintQuestion,
    DurationSeverity,
    /// Who a message is about; each row of this kind is one person's words (孩子|宝宝|娃).
    Person,
    /// Everyday words that contain a body part, a sensation or a symptom's characters but
    /// name none of them (石头, 低头, 空腹, 突然, 发热门诊): read as filler.
    Plain,
}

impl WordKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "degree" => WordKind::Degree,
            "frequency" => WordKind::Frequency,
            "particle" => WordKind::Particle,
            "aspect" => WordKind::Aspect,
            "negation" => WordKind::Negation,
            "negation_end" => WordKind::NegationEnd,
            "topic_shift" => WordKind::TopicShift,
            "closing" => WordKind::Closing,
            "greeting" => WordKind::Greeting,
            "logistics" => WordKind::Logistics,
            "complaint_question" => WordKind::ComplaintQuestion,
            "duration_severity" => WordKind::DurationSeverity,
            "person" => WordKind::Person,
            "plain" => WordKind::Plain,
            _ => return None,
        })
    }
}

/// Everything in `data/language/`; empty when the folder is absent.
#[derive(Debug, Clone, Default)]
pub struct Language {
    pub parts: Vec<Part>,
    pub sensations: Vec<Sensation>,
    /// (part key, sensation key) → canonical symptom name.
    pub compositions: BTreeMap<(String, String), String>,
    pub words: HashMap<WordKind, Vec<String>>,
    /// The `person` rows: each the words for one person.
    pub people: Vec<Vec<String>>,
    /// Verbs that are a symptom when used as one (老咳, 拉了五次, 烧起来了): verb → symptom.
    pub verbs: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct PartRow {
    part: String,
    words: String,
    system: String,
}

#[derive(Deserialize)]
struct SensationRow {
    sensation: String,
    words: String,
}

#[derive(Deserialize)]
struct CompositionRow {
    part: String,
    sensation: String,
    symptom: String,
}

#[derive(Deserialize)]
struct VerbRow {
    verb: String,
    symptom: String,
}

#[derive(Deserialize)]
struct WordsRow {
    kind: String,
    words: String,
}

fn list(s: &str) -> Vec<String> {
    s.split('|')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

impl Language {
    /// Reads the four files of `dir`, checking that compositions name known parts,
    /// sensations and (through `is_symptom`) symptoms. A missing folder is an empty language.
    pub fn load(dir: &Path, is_symptom: impl Fn(&str) -> bool) -> Result<Self, String> {
        if !dir.is_dir() {
            return Ok(Language::default());
        }
        let parts: Vec<Part> = super::read::<PartRow>(&dir.join("body_parts.csv"))?
            .into_iter()
            .map(|r| Part {
                words: list(&r.words),
                key: r.part,
                system: r.system,
            })
            .collect();
        let sensations: Vec<Sensation> = super::read::<SensationRow>(&dir.join("sensations.csv"))?
            .into_iter()
            .map(|r| Sensation {
                words: list(&r.words),
                key: r.sensation,
            })
            .collect();
        let mut compositions = BTreeMap::new();
        for r in super::read::<CompositionRow>(&dir.join("compositions.csv"))? {
            let where_ = || format!("{}: {},{}", "compositions.csv", r.part, r.sensation);
            if !parts.iter().any(|p| p.key == r.part) {
                return Err(format!("{}: unknown part `{}`", where_(), r.part));
            }
            if !sensations.iter().any(|s| s.key == r.sensation) {
                return Err(format!("{}: unknown sensation `{}`", where_(), r.sensation));
            }
            if !is_symptom(&r.symptom) {
                return Err(format!("{}: unknown symptom `{}`", where_(), r.symptom));
            }
            compositions.insert((r.part, r.sensation), r.symptom);
        }
        let mut words: HashMap<WordKind, Vec<String>> = HashMap::new();
        let mut people = Vec::new();
        for r in super::read::<WordsRow>(&dir.join("words.csv"))? {
            let kind = WordKind::parse(&r.kind)
                .ok_or_else(|| format!("words.csv: unknown kind `{}`", r.kind))?;
            if kind == WordKind::Person {
                people.push(list(&r.words));
            }
            words.entry(kind).or_default().extend(list(&r.words));
        }
        let mut verbs = Vec::new();
        for r in super::read::<VerbRow>(&dir.join("verbs.csv"))? {
            if !is_symptom(&r.symptom) {
                return Err(format!(
                    "verbs.csv: {}: unknown symptom `{}`",
                    r.verb, r.symptom
                ));
            }
            verbs.push((r.verb, r.symptom));
        }
        Ok(Language {
            parts,
            sensations,
            compositions,
            words,
            people,
            verbs,
        })
    }

    /// The words of one class (empty when the class is absent).
    pub fn words(&self, kind: WordKind) -> &[String] {
        self.words.get(&kind).map_or(&[], Vec::as_slice)
    }

    pub fn part(&self, key: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.key == key)
    }

    pub fn sensation(&self, key: &str) -> Option<&Sensation> {
        self.sensations.iter().find(|s| s.key == key)
    }
}
