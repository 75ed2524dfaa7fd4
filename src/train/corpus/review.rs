//! Candidate spans for the entity review model (`entity_review`, seed 000's 命名实体审核模型):
//! a span with its sentence, and whether it is a real, affirmed symptom mention. Real
//! mentions come from the lexicon, in patients' messages (the tagger's generator) and in the
//! sentences of a health leaflet (written here). What to reject is what the tagger gets
//! wrong: spans cut short (头 for 头痛) or run on (咳嗽还有), denied and rare mentions
//! (一般不伴有发热, 很少咳嗽), warning signs of another disease, diseases, examinations,
//! treatments, times, and stray words. Templates and word lists are split between train, dev
//! and test as the tagger's are. Never reads `data/eval/`.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::ner::{in_split, negatable, Generator, Sample, Split};
use crate::lexicon::review::review_input;
use crate::lexicon::Lexicon;

pub use crate::lexicon::review::LABELS;

/// One candidate, as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub span: String,
    /// The sentence around the span, the span marked (see [`review_input`]).
    pub context: String,
    pub real: bool,
}

// Leaflet clauses. Slots: `{S}` a symptom the disease presents with, `{N}` a symptom the
// sentence denies, calls rare or names as a sign of something else, `{D}` a disease, `{E}` an
// examination, `{M}` a treatment, `{P}` who, `{W}` when. Everything but `{S}` is a span to
// reject.

/// Clauses that present symptoms.
pub const PRESENTING: &[&str] = &[
    "典型表现为{S}",
    "主要表现是{S}和{S}",
    "常伴有{S}",
    "常伴{S}、{S}",
    "部分患者可出现{S}",
    "{P}多有{S}",
    "起病时可有{S}",
    "早期表现为{S}",
    "随后出现{S}",
    "严重时可出现{S}",
    "{W}{S}加重",
    "{W}出现{S}",
    "可伴{S}",
    "多数人有{S}",
    "以{S}为主要症状",
    "最常见的症状是{S}",
    "还可有{S}、{S}",
    "表现为反复{S}",
    "{P}常诉{S}",
    "病情加重时{S}明显",
    "发作时{S}",
    "有的人{S}",
    "{S}是最突出的表现",
    "少数人伴有{S}",
    "多伴有{S}",
    "首发症状常为{S}",
    "病程中可反复{S}",
    "{P}可表现为{S}",
    "{S}较为常见",
    "部分人以{S}起病",
    "{P}往往先有{S}，继而{S}",
    "{W}常感{S}",
    "不少人还会{S}",
    "可同时出现{S}、{S}和{S}",
    "{S}持续数天",
];

/// Clauses whose symptom, disease, examination or treatment is not a presenting symptom.
pub const NOT_PRESENTING: &[&str] = &[
    "一般不伴有{N}",
    "通常没有{N}",
    "很少出现{N}",
    "也很少{N}",
    "多数不伴{N}",
    "无{N}",
    "一般无{N}、{N}",
    "不会引起{N}",
    "{N}少见",
    "{N}并不常见",
    "本病不引起{N}",
    "很少引起明显{N}",
    "一般不出现{N}",
    "不伴{N}",
    "没有{N}等表现",
    "如果出现{N}，应警惕{D}",
    "出现{N}提示合并{D}",
    "如有{N}需排除{D}",
    "与{D}不同，本病没有{N}",
    "若伴{N}要考虑{D}",
    "{N}多见于{D}，本病少有",
    "需与{D}鉴别",
    "{E}可帮助诊断",
    "确诊需做{E}",
    "治疗可用{M}",
    "{M}可缓解症状",
    "预防{D}要注意休息",
    "可继发{D}",
    "{E}一般正常",
    "{N}不是本病的表现",
    "一般不会{N}",
    "极少{N}",
    "罕见{N}",
    "不伴有明显{N}",
    "一旦{N}要马上就医，可能是{D}",
    "医生会安排{E}",
    "常用{M}治疗",
    "{P}应避免{M}",
    "既往有{D}的人更容易得",
    "一般不会出现{N}和{N}",
];

const WHO: &[&str] = &[
    "患者",
    "病人",
    "孩子",
    "老年人",
    "多数患者",
    "部分人",
    "不少人",
    "女性患者",
    "儿童",
    "中年人",
];
const WHEN: &[&str] = &[
    "夜间",
    "晨起",
    "饭后",
    "劳累后",
    "受凉后",
    "月经前",
    "活动后",
    "天气变化时",
    "空腹时",
    "情绪激动时",
];
const EXAMINATIONS: &[&str] = &[
    "血常规",
    "尿常规",
    "胸片",
    "CT",
    "核磁共振",
    "心电图",
    "B超",
    "超声",
    "胃镜",
    "肠镜",
    "肝功能",
    "血糖",
    "肺功能",
    "脑电图",
    "骨密度",
    "病理检查",
    "过敏原检测",
    "血培养",
    "甲状腺功能",
    "眼底检查",
];
const TREATMENTS: &[&str] = &[
    "抗生素",
    "布洛芬",
    "手术",
    "卧床休息",
    "多喝水",
    "激素",
    "止痛药",
    "抗病毒药",
    "理疗",
    "针灸",
    "输液",
    "雾化",
    "退烧药",
    "降压药",
    "胰岛素",
    "热敷",
    "抗过敏药",
    "中药",
    "止咳药",
    "冷敷",
];

/// Particles a run-on span may end with and still name its symptom (头痛了): not a mistake
/// worth teaching, so such spans are not used.
const HARMLESS_TAILS: &str = "了的啊呢吧呀么嘛 ，。,";

/// A sentence with the spans a reviewer should accept and those it should reject.
#[derive(Debug, Default)]
struct Marked {
    chars: Vec<char>,
    real: Vec<(usize, usize)>,
    rejected: Vec<(usize, usize)>,
}

impl Marked {
    fn push(&mut self, text: &str, real: Option<bool>) {
        let at = self.chars.len();
        self.chars.extend(text.chars());
        match real {
            Some(true) => self.real.push((at, self.chars.len())),
            Some(false) => self.rejected.push((at, self.chars.len())),
            None => {}
        }
    }

    /// Symptoms (B-SYM) are real; denied symptoms, diseases and durations are not.
    fn from_sample(sample: Sample) -> Self {
        let real = sample
            .entities()
            .into_iter()
            .filter(|e| e.kind == "SYM")
            .map(|e| (e.start, e.end))
            .collect();
        let mut rejected = sample.denied.clone();
        rejected.extend(
            sample
                .entities()
                .into_iter()
                .filter(|e| e.kind != "SYM")
                .map(|e| (e.start, e.end)),
        );
        Marked {
            chars: sample.chars,
            real,
            rejected,
        }
    }

    fn covered(&self, start: usize, end: usize) -> bool {
        self.real
            .iter()
            .chain(&self.rejected)
            .any(|&(s, e)| s < end && start < e)
    }
}

/// A seeded generator of candidates.
pub struct ReviewGenerator<'a> {
    rng: StdRng,
    patients: Generator<'a>,
    symptoms: Vec<&'a str>,
    negatable: Vec<&'a str>,
    diseases: Vec<&'a str>,
    /// Every way the lexicon writes a symptom: a cut or run-on span that still spells one
    /// is not a mistake.
    surfaces: HashSet<&'a str>,
}

impl<'a> ReviewGenerator<'a> {
    pub fn new(lexicon: &'a Lexicon, seed: u64) -> Self {
        let symptoms: Vec<&str> = lexicon.symptoms.iter().flat_map(|s| s.surfaces()).collect();
        let negatable = negatable(&symptoms);
        ReviewGenerator {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_0f5e),
            patients: Generator::new(lexicon, seed),
            surfaces: symptoms.iter().copied().collect(),
            symptoms,
            negatable,
            diseases: lexicon.diseases.iter().map(|d| d.name.as_str()).collect(),
        }
    }

    /// `count` candidates from sentences made only of the templates and words of `split`:
    /// half from patients' messages (two candidates each, about half of them real), half
    /// from leaflet sentences in contrasting pairs: the same symptom presented in one
    /// sentence and denied or called rare in another, so that the context, not the word,
    /// decides; each leaflet sentence also gives one of the mistakes.
    pub fn corpus(&mut self, split: Split, count: usize) -> Vec<Candidate> {
        let mut out = Vec::with_capacity(count + 4);
        while out.len() < count {
            if self.rng.random_bool(0.5) {
                let sample = self
                    .patients
                    .corpus(split, 1)
                    .pop()
                    .expect("one sentence asked for");
                let marked = Marked::from_sample(sample);
                for _ in 0..2 {
                    if let Some(c) = self.candidate(&marked) {
                        out.push(c);
                    }
                }
                continue;
            }
            let word = *self.symptoms.choose(&mut self.rng).expect("symptoms");
            for present in [true, false] {
                let (marked, (s, e)) = self.leaflet(split, word, present);
                let (span, context) = review_input(&marked.chars, s, e);
                out.push(Candidate {
                    span,
                    context,
                    real: present,
                });
                if let Some(c) = self.mistake(&marked) {
                    out.push(c);
                }
            }
        }
        out.truncate(count);
        out
    }

    /// One to three leaflet clauses, the first presenting `word` (or, without `present`,
    /// denying it or calling it rare); returns the sentence and where `word` is.
    fn leaflet(&mut self, split: Split, word: &'a str, present: bool) -> (Marked, (usize, usize)) {
        let presenting = in_split(PRESENTING, split);
        let not_presenting = in_split(NOT_PRESENTING, split);
        let denying: Vec<&str> = not_presenting
            .iter()
            .copied()
            .filter(|t| t.contains("{N}"))
            .collect();
        let mut marked = Marked::default();
        if self.rng.random_bool(0.3) {
            // A clause before it, so the mention is not always at the start.
            let template = self.any_clause(&presenting, &not_presenting);
            self.fill(&mut marked, template, split, None);
            let joint = ["，", "；", "。", "，但", "，也"][self.rng.random_range(0..5)];
            marked.push(joint, None);
        }
        let own = if present { &presenting } else { &denying };
        let template = *own.choose(&mut self.rng).expect("every split has clauses");
        let at = self.fill(&mut marked, template, split, Some(word));
        if self.rng.random_bool(0.5) {
            let joint = ["，", "；", "，但", "，也"][self.rng.random_range(0..4)];
            marked.push(joint, None);
            let template = self.any_clause(&presenting, &not_presenting);
            self.fill(&mut marked, template, split, None);
        }
        if self.rng.random_bool(0.6) {
            marked.push("。", None);
        }
        let at = at.expect("the chosen template has a slot for the word");
        (marked, at)
    }

    /// A clause of either kind, presenting ones a little more often.
    fn any_clause(
        &mut self,
        presenting: &[&'static str],
        not_presenting: &[&'static str],
    ) -> &'static str {
        let pool = if self.rng.random_bool(0.55) {
            presenting
        } else {
            not_presenting
        };
        pool.choose(&mut self.rng).expect("every split has clauses")
    }

    /// Fills `template`; `word`, when given, goes into its first `{S}` or `{N}` slot, whose
    /// place is returned.
    fn fill(
        &mut self,
        marked: &mut Marked,
        template: &str,
        split: Split,
        mut word: Option<&'a str>,
    ) -> Option<(usize, usize)> {
        let mut at = None;
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            marked.push(&rest[..open], None);
            let close = open + rest[open..].find('}').expect("templates close their slots");
            let words = |list: &[&'static str]| in_split(list, split);
            let slot = &rest[open + 1..close];
            let forced = match slot {
                "S" | "N" => word.take(),
                _ => None,
            };
            let (text, real): (&str, Option<bool>) = match slot {
                "S" => (
                    forced.unwrap_or_else(|| {
                        self.symptoms
                            .choose(&mut self.rng)
                            .copied()
                            .unwrap_or("头痛")
                    }),
                    Some(true),
                ),
                "N" => (
                    forced.unwrap_or_else(|| {
                        self.negatable
                            .choose(&mut self.rng)
                            .copied()
                            .unwrap_or("发热")
                    }),
                    Some(false),
                ),
                "D" => (
                    self.diseases
                        .choose(&mut self.rng)
                        .copied()
                        .unwrap_or("感冒"),
                    Some(false),
                ),
                "E" => (
                    *words(EXAMINATIONS).choose(&mut self.rng).unwrap_or(&"CT"),
                    Some(false),
                ),
                "M" => (
                    *words(TREATMENTS).choose(&mut self.rng).unwrap_or(&"手术"),
                    Some(false),
                ),
                "P" => (*words(WHO).choose(&mut self.rng).unwrap_or(&"患者"), None),
                "W" => (*words(WHEN).choose(&mut self.rng).unwrap_or(&"夜间"), None),
                other => panic!("unknown slot {{{other}}} in a review template; this is a bug"),
            };
            let start = marked.chars.len();
            marked.push(text, real);
            if forced.is_some() {
                at = Some((start, marked.chars.len()));
            }
            rest = &rest[close + 1..];
        }
        marked.push(rest, None);
        at
    }

    /// A real mention (about half the time, when the sentence has one), or one of the
    /// mistakes: a span to reject, a real one cut short or run on, or stray words.
    fn candidate(&mut self, m: &Marked) -> Option<Candidate> {
        let take = |start: usize, end: usize, real: bool| {
            let (span, context) = review_input(&m.chars, start, end);
            Candidate {
                span,
                context,
                real,
            }
        };
        if !m.real.is_empty() && self.rng.random_bool(0.5) {
            let &(s, e) = m.real.choose(&mut self.rng)?;
            return Some(take(s, e, true));
        }
        self.mistake(m)
    }

    /// A span to reject: one of the sentence's, a real one cut short or run on, or stray
    /// words.
    fn mistake(&mut self, m: &Marked) -> Option<Candidate> {
        let take = |start: usize, end: usize, real: bool| {
            let (span, context) = review_input(&m.chars, start, end);
            Candidate {
                span,
                context,
                real,
            }
        };
        match self.rng.random_range(0..4) {
            0 => {
                let &(s, e) = m.rejected.choose(&mut self.rng)?;
                Some(take(s, e, false))
            }
            1 => {
                // Cut short: 头 of 头痛, 有点疼 of 嗓子有点疼.
                let &(s, e) = m.real.choose(&mut self.rng)?;
                if e - s < 2 {
                    return None;
                }
                let cut = self.rng.random_range(1..e - s);
                let (s, e) = if self.rng.random_bool(0.5) {
                    (s + cut, e)
                } else {
                    (s, e - cut)
                };
                let span: String = m.chars[s..e].iter().collect();
                (!self.surfaces.contains(span.as_str())).then(|| take(s, e, false))
            }
            2 => {
                // Run on into the words around it: 咳嗽还有, 最近头痛.
                let &(s, e) = m.real.choose(&mut self.rng)?;
                let more = self.rng.random_range(1..=3);
                let (ns, ne) = if self.rng.random_bool(0.5) {
                    (s.saturating_sub(more), e)
                } else {
                    (s, (e + more).min(m.chars.len()))
                };
                let added: Vec<char> = m.chars[ns..s]
                    .iter()
                    .chain(&m.chars[e..ne])
                    .copied()
                    .collect();
                if added.is_empty() || added.iter().all(|c| HARMLESS_TAILS.contains(*c)) {
                    return None;
                }
                let span: String = m.chars[ns..ne].iter().collect();
                (!self.surfaces.contains(span.as_str())).then(|| take(ns, ne, false))
            }
            _ => {
                // Stray words: a time, a body part alone, 多, 破.
                let len = self.rng.random_range(1..=4).min(m.chars.len());
                if len == 0 {
                    return None;
                }
                let s = self.rng.random_range(0..=m.chars.len() - len);
                let e = s + len;
                let window = &m.chars[s..e];
                if m.covered(s, e)
                    || window
                        .iter()
                        .any(|c| c.is_whitespace() || "，。；、,！？?!".contains(*c))
                {
                    return None;
                }
                let spells_symptom = (0..len).any(|i| {
                    (i + 2..=len).any(|j| {
                        let w: String = window[i..j].iter().collect();
                        self.surfaces.contains(w.as_str())
                    })
                });
                (!spells_symptom).then(|| take(s, e, false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_balanced_marked_and_reproducible() {
        let lexicon = Lexicon::shipped().unwrap();
        let a = ReviewGenerator::new(&lexicon, 3).corpus(Split::Train, 2000);
        assert_eq!(a.len(), 2000);
        let real = a.iter().filter(|c| c.real).count();
        assert!((700..1300).contains(&real), "{real} real of 2000");
        for c in &a {
            assert!(c.context.contains(&format!("【{}】", c.span)), "{c:?}");
        }
        // Denied mentions are among the spans to reject.
        assert!(a
            .iter()
            .any(|c| !c.real && (c.context.contains("不伴有【") || c.context.contains("没有【"))));
        let b = ReviewGenerator::new(&lexicon, 3).corpus(Split::Train, 2000);
        assert_eq!(a, b);
        for list in [PRESENTING, NOT_PRESENTING] {
            assert!(
                in_split(list, Split::Test).len() >= 6 && in_split(list, Split::Dev).len() >= 3
            );
        }
    }
}
