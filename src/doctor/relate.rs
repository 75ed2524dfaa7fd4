//! Does a new message continue the consultation, or start a new one? The medicine and the
//! conversation's structure decide first, from the lexicon; the relevance model decides only
//! what they cannot.
//!
//! - A new complaint continues when it belongs to a body system the conversation already
//!   has; about another person (我老婆, 我儿子) than the last message, it is a new
//!   consultation; otherwise it continues when a sensation in it has no body part (疼得睡不着:
//!   the pain already talked about), when it is a whole-body symptom (fever, fatigue) or
//!   shares a disease with a symptom the conversation has (腰痛 → 尿血: both are 肾结石's),
//!   unless it comes after 对了 / 另外, or unless the last message was about someone else
//!   (宝宝湿疹) and this one is the writer's own complaint of another system (我最近总是头疼).
//!   Anything else is a new consultation.
//! - A message without symptoms is a new topic when it is about the hospital (挂号, 医保);
//!   it continues when it asks about the complaint (要紧吗, 吃什么药) or says how long or how
//!   bad; thanks, greetings and an announced new topic (对了, 另外) are not; a sensation
//!   without a body part (又酸又胀: the part already talked about) continues. After 对了,
//!   only a question continues (对了，这个要不要做CT), and not one about a body part of
//!   another system (对了，我脚上长了个东西，怎么办).
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
    /// Questions about the complaint (要紧吗, 吃什么药).
    questions: Vec<String>,
    /// How long or how bad (三天了, 越来越厉害).
    duration: Vec<String>,
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
            questions: words(WordKind::ComplaintQuestion),
            duration: words(WordKind::DurationSeverity),
        }
    }

    /// The person `text` is about when it opens with one (宝宝湿疹, 我儿子发烧: after any
    /// topic-shift words and 我/我家), as an index into the `person` rows; `Some(None)` when
    /// the writer speaks of themself (我最近头疼) and names nobody else, not even 他/她;
    /// `None` when it cannot tell.
    fn subject(&self, text: &str) -> Option<Option<usize>> {
        let mut rest = text;
        let mut mine = false;
        let opens = loop {
            let t = rest.trim_start_matches(|c: char| {
                c.is_whitespace() || c.is_ascii_punctuation() || "，。！？、：；…".contains(c)
            });
            let group = self
                .people
                .iter()
                .position(|g| g.iter().any(|w| t.starts_with(w.as_str())));
            if group.is_some() {
                break group;
            }
            let shift = self
                .topic_shift
                .iter()
                .map(String::as_str)
                .find(|w| t.starts_with(w));
            let own = ["我的", "我家", "咱家", "俺家", "我", "俺"]
                .into_iter()
                .find(|w| t.starts_with(w));
            match (shift, own) {
                (Some(w), _) => rest = &t[w.len()..],
                (None, Some(w)) => {
                    mine |= w == "我" || w == "俺";
                    rest = &t[w.len()..];
                }
                (None, None) => break None,
            }
        };
        match opens {
            Some(g) => Some(Some(g)),
            None if mine
                && !text.contains('他')
                && !text.contains('她')
                && !self
                    .people
                    .iter()
                    .flatten()
                    .any(|w| text.contains(w.as_str())) =>
            {
                Some(None)
            }
            None => None,
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
        matches!(self.subject(text), Some(Some(g)) if !contains_any(before, &self.people[g]))
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
            let system = |s: &String| self.system.get(s).map(String::as_str);
            // 宝宝湿疹 → 我最近总是头疼: the writer's own complaint, not the child's.
            let own_complaint = || {
                new.iter()
                    .any(|s| system(s).is_some_and(|x| x != WHOLE_BODY))
                    && matches!(self.subject(before_text), Some(Some(_)))
                    && self.subject(new_text) == Some(None)
            };
            if before.is_empty() {
                // Nothing known to continue: only an announced new topic is certain.
                if own_complaint() {
                    return Some((false, Why::AnotherPerson));
                }
                return (shift || another).then_some((false, Why::NewTopic));
            }
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
            if own_complaint() {
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
        // After 对了 only a question still asks about the complaint, and not one about a body
        // part of another system (对了，我脚上长了个鸡眼，怎么办).
        let about = if shift {
            let systems: BTreeSet<String> = before
                .iter()
                .filter_map(|s| self.system.get(s).cloned())
                .chain(reader.part_systems(before_text))
                .collect();
            contains_any(new_text, &self.questions)
                && reader
                    .part_systems(new_text)
                    .iter()
                    .all(|s| systems.contains(s))
        } else {
            contains_any(new_text, &self.questions) || contains_any(new_text, &self.duration)
        };
        if after_a_complaint && about {
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
        // Whether it heals, whether to see a doctor, when it is worst.
        assert_eq!(
            decide("腰疼", "贴膏药能好吗"),
            Some((true, Why::AboutTheComplaint))
        );
        assert_eq!(
            decide("孩子老是流鼻血", "用不用去医院看看"),
            Some((true, Why::AboutTheComplaint))
        );
        assert_eq!(
            decide("我心慌", "晚上躺下的时候最明显"),
            Some((true, Why::AboutTheComplaint))
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
        // The child's complaint, then the parent's own of another system.
        assert_eq!(
            decide("孩子身上起了好多红疹", "我这几天老是胃疼"),
            Some((false, Why::AnotherPerson))
        );
        assert_eq!(
            decide("我闺女出水痘了", "我自己这两天也牙疼"),
            Some((false, Why::AnotherPerson))
        );
        // ...but the parent reporting on the child continues it.
        assert_eq!(
            decide("孩子身上起了好多红疹", "我看他后背也痒"),
            Some((true, Why::SameSystem))
        );
        // After 对了, a word of time is no question about the complaint, and a question
        // about a part of another system is a new topic.
        assert_eq!(
            decide("牙疼", "另外，我最近搬家了"),
            Some((false, Why::NewTopic))
        );
        assert_eq!(
            decide("我喉咙痛", "对了，我手指上长了个倒刺，怎么办"),
            Some((false, Why::NewTopic))
        );
        assert_eq!(
            decide("我喉咙痛", "对了，这个要不要做检查"),
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
