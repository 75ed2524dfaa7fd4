//! Does a new message continue the consultation, or start a new one? The medicine and the
//! conversation's structure decide first, from the lexicon; the relevance model decides only
//! what they cannot.
//!
//! - A new complaint continues when it belongs to a body system the conversation already
//!   has; about another person (我老婆, 我儿子) than the last message, it is a new
//!   consultation; otherwise it continues when a sensation in it has no body part (疼得睡不着:
//!   the pain already talked about), when it is a whole-body symptom (fever, fatigue) or
//!   shares a disease with a symptom the conversation has (腰痛 → 尿血: both are 肾结石's),
//!   unless it comes after 对了 / 另外. Anything else is a new consultation.
//! - A message without symptoms is a new topic when it is about the hospital (挂号, 医保);
//!   it continues when it asks about the complaint (要紧吗, 吃什么药) or says how long or how
//!   bad; thanks, greetings and an announced new topic (对了, 另外) are not; a sensation
//!   without a body part (又酸又胀: the part already talked about) continues.
//! - Anything else (no symptoms, no cue) goes to the relevance model.

use std::collections::{BTreeSet, HashMap};

use crate::lexicon::{Lexicon, Reader, WordKind};

/// The body system of whole-body symptoms.
pub const WHOLE_BODY: &str = "全身";

/// What decided, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    WholeBody,
    SameSystem,
    SharedDisease,
    NewSystem,
    AnotherPerson,
    NewTopic,
    AboutTheComplaint,
    NotAComplaint,
}

/// The lexicon's knowledge the rule uses.
#[derive(Debug, Clone)]
pub struct Relatedness {
    system: HashMap<String, String>,
    diseases: HashMap<String, BTreeSet<String>>,
    people: Vec<Vec<String>>,
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
            people: lexicon.language.people.clone(),
            topic_shift: words(WordKind::TopicShift),
            closing: words(WordKind::Closing),
            greeting: words(WordKind::Greeting),
            logistics: words(WordKind::Logistics),
            about,
        }
    }

    /// Whether `text` is about a person (by the `person` rows) `before` does not mention.
    fn another_person(&self, before: &str, text: &str) -> bool {
        self.people
            .iter()
            .any(|group| contains_any(text, group) && !contains_any(before, group))
    }

    /// Whether `text` is about another person than `before`: after any topic-shift words
    /// and a possessive (我, 我家), it opens with a person `before` does not mention
    /// (我儿子最近近视了). A person named later is context, not the subject (会传染吗，家里有老人).
    fn another_subject(&self, before: &str, text: &str) -> bool {
        let opens_with_person = |t: &str| {
            self.people
                .iter()
                .flatten()
                .any(|w| t.starts_with(w.as_str()))
        };
        let mut rest = text;
        let subject = loop {
            let t = rest.trim_start_matches(|c: char| {
                c.is_whitespace() || c.is_ascii_punctuation() || "，。！？、：；…".contains(c)
            });
            let shift = self
                .topic_shift
                .iter()
                .map(String::as_str)
                .find(|w| t.starts_with(w));
            // 我妈 is a person word that starts with 我: drop 我 only before something else.
            let own = ["我的", "我家", "咱家", "俺家", "我"]
                .into_iter()
                .find(|w| t.starts_with(w) && !opens_with_person(t));
            match shift.or(own) {
                Some(w) => rest = &t[w.len()..],
                None => break t,
            }
        };
        self.people.iter().any(|group| {
            !contains_any(before, group) && group.iter().any(|w| subject.starts_with(w.as_str()))
        })
    }

    /// Whether `new_text` (whose symptoms are `new`) continues a conversation whose last
    /// message was `before_text` and whose symptoms so far are `before`; `None` when only
    /// the relevance model can tell. `reader` is the doctor's, built from the same lexicon.
    pub fn decide(
        &self,
        reader: &Reader,
        before_text: &str,
        before: &[String],
        new_text: &str,
        new: &[String],
    ) -> Option<(bool, Why)> {
        let shift = contains_any(new_text, &self.topic_shift);
        let another = self.another_person(before_text, new_text);
        if !new.is_empty() {
            if before.is_empty() {
                // Nothing known to continue: only an announced new topic is certain.
                return (shift || another).then_some((false, Why::NewTopic));
            }
            let system = |s: &String| self.system.get(s).map(String::as_str);
            let systems: BTreeSet<&str> = before
                .iter()
                .filter_map(system)
                .filter(|s| *s != WHOLE_BODY)
                .collect();
            if new.iter().filter_map(system).any(|s| systems.contains(s)) {
                return Some((true, Why::SameSystem));
            }
            if another {
                return Some((false, Why::AnotherPerson));
            }
            if shift {
                return Some((false, Why::NewSystem));
            }
            if new.iter().any(|s| system(s) == Some(WHOLE_BODY)) {
                return Some((true, Why::WholeBody));
            }
            let shared = new.iter().any(|n| {
                before
                    .iter()
                    .any(|b| match (self.diseases.get(n), self.diseases.get(b)) {
                        (Some(x), Some(y)) => !x.is_disjoint(y),
                        _ => false,
                    })
            });
            if shared {
                return Some((true, Why::SharedDisease));
            }
            // 疼得睡不着: the pain already talked about, and what it does.
            if reader.bare_sensation(new_text) {
                return Some((true, Why::AboutTheComplaint));
            }
            return Some((false, Why::NewSystem));
        }
        // Hospital logistics first (挂号 is never about the complaint); then a question
        // about the complaint (对了，这个要不要做CT still asks about it); then thanks and
        // greetings; then a new topic announced; then a sensation with no body part.
        if contains_any(new_text, &self.logistics) {
            return Some((false, Why::NotAComplaint));
        }
        // 我老婆怀孕了，能吃什么: a question, but about someone else.
        if self.another_subject(before_text, new_text) {
            return Some((false, Why::AnotherPerson));
        }
        let chit_chat = |t: &str| {
            contains_any(t, &self.closing)
                || (t.chars().count() <= 8 && contains_any(t, &self.greeting))
        };
        let after_a_complaint = !before.is_empty() || !chit_chat(before_text);
        if after_a_complaint && contains_any(new_text, &self.about) {
            return Some((true, Why::AboutTheComplaint));
        }
        if chit_chat(new_text) {
            return Some((false, Why::NotAComplaint));
        }
        if shift {
            return Some((false, Why::NewTopic));
        }
        if after_a_complaint && reader.bare_sensation(new_text) {
            return Some((true, Why::AboutTheComplaint));
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
        rule.decide(
            &reader,
            first,
            &reader.symptoms(first),
            second,
            &reader.symptoms(second),
        )
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
        assert_eq!(
            decide("我咳嗽", "我老婆这两天发烧"),
            Some((false, Why::AnotherPerson))
        );
        assert_eq!(
            decide("我头疼", "对了，问个别的事"),
            Some((false, Why::NewTopic))
        );
        assert_eq!(
            decide("孩子咳嗽", "我妈最近睡眠不好"),
            Some((false, Why::AnotherPerson))
        );
        // A message about someone else, even a question, is a new topic.
        assert_eq!(
            decide("我胃疼", "我女儿下个月要打疫苗，要注意什么"),
            Some((false, Why::AnotherPerson))
        );
        assert_eq!(
            decide("头晕", "对了，我家狗狗这两天不吃东西"),
            Some((false, Why::AnotherPerson))
        );
        // Another person mentioned as context is no new patient.
        assert_eq!(
            decide("嗓子疼", "会传染吗，家里有老人"),
            Some((true, Why::AboutTheComplaint))
        );
    }

    #[test]
    fn a_sensation_without_a_body_part_is_about_the_complaint() {
        assert_eq!(
            decide("牙疼", "晚上疼得睡不着"),
            Some((true, Why::AboutTheComplaint))
        );
        assert_eq!(
            decide("腿上青筋鼓起来了", "站久了又酸又胀"),
            Some((true, Why::AboutTheComplaint))
        );
        // A greeting is no complaint to continue.
        assert_eq!(decide("你好", "要紧吗"), None);
    }

    #[test]
    fn what_the_lexicon_cannot_tell_goes_to_the_model() {
        assert_eq!(decide("我头疼", "我是做会计的"), None);
        // No complaint yet to continue.
        assert_eq!(decide("你好", "我头疼"), None);
    }
}
