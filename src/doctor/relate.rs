//! Does a new message continue the consultation, or start a new one? The medicine decides
//! first, from the lexicon; the relevance model decides only what the medicine cannot.
//!
//! - A new complaint continues when it is a whole-body symptom (fever, fatigue), belongs to
//!   a body system the conversation already has, or shares a disease with a symptom the
//!   conversation already has (腰痛 → 尿血: both are 肾结石's); a complaint in a system and a
//!   disease of its own is a new consultation, and so is any complaint after 对了 / 另外 that
//!   shares neither.
//! - A message without symptoms continues when it asks about the complaint (要紧吗, 吃什么药)
//!   or says how long or how bad; thanks, goodbyes, greetings and hospital logistics (挂号,
//!   停车, 医保) do not.
//! - Anything else (no symptoms, no cue) goes to the relevance model.

use std::collections::{BTreeSet, HashMap};

use crate::lexicon::{Lexicon, WordKind};

/// The body system of whole-body symptoms.
pub const WHOLE_BODY: &str = "全身";

/// What decided, for the log and the reply's explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    WholeBody,
    SameSystem,
    SharedDisease,
    NewSystem,
    AboutTheComplaint,
    NotAComplaint,
}

/// The lexicon's knowledge the rule uses.
#[derive(Debug, Clone)]
pub struct Relatedness {
    system: HashMap<String, String>,
    diseases: HashMap<String, BTreeSet<String>>,
    topic_shift: Vec<String>,
    closing: Vec<String>,
    greeting: Vec<String>,
    logistics: Vec<String>,
    about: Vec<String>,
}

fn contains_any(text: &str, words: &[String]) -> bool {
    words.iter().any(|w| text.contains(w.as_str()))
}

impl Relatedness {
    pub fn new(lexicon: &Lexicon) -> Self {
        let mut diseases: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (d, s) in &lexicon.links {
            diseases.entry(s.clone()).or_default().insert(d.clone());
        }
        let words = |kind| lexicon.language.words(kind).to_vec();
        let mut about = words(WordKind::ComplaintQuestion);
        about.extend(words(WordKind::DurationSeverity));
        Relatedness {
            system: lexicon
                .symptoms
                .iter()
                .map(|s| (s.name.clone(), s.body_part.clone()))
                .collect(),
            diseases,
            topic_shift: words(WordKind::TopicShift),
            closing: words(WordKind::Closing),
            greeting: words(WordKind::Greeting),
            logistics: words(WordKind::Logistics),
            about,
        }
    }

    /// Whether `new_text` (whose symptoms are `new`) continues a conversation whose
    /// symptoms so far are `before`; `None` when only the relevance model can tell.
    pub fn decide(&self, before: &[String], new_text: &str, new: &[String]) -> Option<(bool, Why)> {
        if !new.is_empty() {
            if before.is_empty() {
                return None;
            }
            let shift = contains_any(new_text, &self.topic_shift);
            let system = |s: &String| self.system.get(s).map(String::as_str);
            if !shift && new.iter().any(|s| system(s) == Some(WHOLE_BODY)) {
                return Some((true, Why::WholeBody));
            }
            let systems: BTreeSet<&str> = before
                .iter()
                .filter_map(system)
                .filter(|s| *s != WHOLE_BODY)
                .collect();
            if new.iter().filter_map(system).any(|s| systems.contains(s)) {
                return Some((true, Why::SameSystem));
            }
            let shared = new.iter().any(|n| {
                before
                    .iter()
                    .any(|b| match (self.diseases.get(n), self.diseases.get(b)) {
                        (Some(x), Some(y)) => !x.is_disjoint(y),
                        _ => false,
                    })
            });
            if shared && !shift {
                return Some((true, Why::SharedDisease));
            }
            return Some((false, Why::NewSystem));
        }
        // Hospital logistics first (挂号 is never about the complaint), then questions about
        // the complaint (谢谢，那要吃什么药 asks one), then thanks and greetings.
        if contains_any(new_text, &self.logistics) {
            return Some((false, Why::NotAComplaint));
        }
        if !before.is_empty() && contains_any(new_text, &self.about) {
            return Some((true, Why::AboutTheComplaint));
        }
        if contains_any(new_text, &self.closing)
            || (new_text.chars().count() <= 8 && contains_any(new_text, &self.greeting))
        {
            return Some((false, Why::NotAComplaint));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexicon::Reader;

    fn decide(first: &str, second: &str) -> Option<(bool, Why)> {
        let lexicon = Lexicon::shipped().unwrap();
        let reader = Reader::new(&lexicon);
        let rule = Relatedness::new(&lexicon);
        rule.decide(&reader.symptoms(first), second, &reader.symptoms(second))
    }

    #[test]
    fn follow_ups_about_the_same_complaint_continue() {
        assert_eq!(decide("我咳嗽", "痰是黄的"), Some((true, Why::SameSystem)));
        assert_eq!(
            decide("我头疼", "要紧吗"),
            Some((true, Why::AboutTheComplaint))
        );
        assert_eq!(decide("嗓子疼", "还有点发烧"), Some((true, Why::WholeBody)));
        assert_eq!(
            decide("肚子疼", "已经三天了，越来越厉害"),
            Some((true, Why::AboutTheComplaint))
        );
        // Two systems, one disease: kidney stones give both.
        assert_eq!(
            decide("腰疼得厉害", "尿里有血"),
            Some((true, Why::SharedDisease))
        );
    }

    #[test]
    fn new_complaints_thanks_and_logistics_do_not() {
        assert_eq!(
            decide("我咳嗽", "对了，我最近老是尿频"),
            Some((false, Why::NewSystem))
        );
        assert_eq!(
            decide("我嗓子疼", "谢谢医生"),
            Some((false, Why::NotAComplaint))
        );
        assert_eq!(
            decide("我头疼", "你们医院周末上班吗"),
            Some((false, Why::NotAComplaint))
        );
        assert_eq!(decide("牙疼", "脚后跟也疼"), Some((false, Why::NewSystem)));
    }

    #[test]
    fn what_the_lexicon_cannot_tell_goes_to_the_model() {
        assert_eq!(decide("我头疼", "我儿子在上小学"), None);
        // No complaint yet to continue.
        assert_eq!(decide("你好", "我头疼"), None);
    }
}
