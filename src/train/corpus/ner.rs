//! Patient sentences with BIO labels for the symptom tagger, generated from the lexicon.
//! Templates are split between train, dev and test, so the held-out score measures text
//! shaped in ways the model never saw. Negated symptoms (没有发烧) are labelled O.
//! Like the rest of the corpus, it never reads the evaluation set in `data/eval/`.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::lexicon::{Lexicon, WordKind};
use crate::models::tagger::text::{entities, Entity};

/// The tag set: symptoms, diseases (history, guesses) and durations.
pub const TAGS: [&str; 7] = ["O", "B-SYM", "I-SYM", "B-DIS", "I-DIS", "B-DUR", "I-DUR"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

/// Which split a template (or chit-chat line) belongs to: 7 of 10 train, 1 dev, 2 test.
pub fn split_of(index: usize) -> Split {
    match index % 10 {
        7 => Split::Dev,
        8 | 9 => Split::Test,
        _ => Split::Train,
    }
}

/// The entries of `list` that belong to `split` (by position, as [`split_of`] says).
pub fn in_split<T: Copy>(list: &[T], split: Split) -> Vec<T> {
    list.iter()
        .enumerate()
        .filter(|(i, _)| split_of(*i) == split)
        .map(|(_, t)| *t)
        .collect()
}

// Sentences are built from one to four clauses joined by connectors. Slots: `{S}` symptom,
// `{N}` a symptom the sentence denies (labelled O), `{X}` a body part and complaint with a
// denial between them (头不疼, labelled O), `{D}` disease, `{T}` duration, `{P}` who,
// `{A}` degree or frequency, `{W}` when. Every list is split between train, dev and test by
// position ([`split_of`]), so test sentences are made only of clauses training never saw.

/// Clauses that report symptoms.
pub const SYMPTOM_CLAUSES: &[&str] = &[
    "{S}",
    "我{S}",
    "{P}{A}{S}",
    "{W}{A}{S}",
    "{W}开始{S}",
    "{S}{T}了",
    "{S}已经{T}了",
    "{T}前开始{S}",
    "{S}有{T}了",
    "{S}快{T}了",
    "{S}大概{T}",
    "持续{S}{T}",
    "{T}来一直{S}",
    "从{T}前就开始{S}",
    "前{T}开始{S}",
    "这{T}{S}",
    "近{T}{S}",
    "{S}反反复复{T}了",
    "{S}了{T}",
    "老是{S}",
    "总是{S}",
    "经常{S}",
    "一直{S}",
    "时不时{S}",
    "偶尔{S}",
    "有时候{S}",
    "感觉{S}",
    "总觉得{S}",
    "我觉得自己{S}",
    "有{S}的感觉",
    "{A}会{S}",
    "{S}得厉害",
    "{S}{A}严重",
    "{S}比之前更重了",
    "{S}越来越严重",
    "{S}一阵一阵的",
    "突然{S}",
    "{W}突然{S}",
    "吃完饭就{S}",
    "一吃东西就{S}",
    "一到晚上就{S}",
    "早上起来{S}",
    "晚上睡觉{S}",
    "运动以后{S}",
    "走路多了就{S}",
    "天气一冷就{S}",
    "吹了风就{S}",
    "受凉后{S}",
    "喝了点酒之后{S}",
    "熬夜以后{S}",
    "上班的时候{S}",
    "考试前总是{S}",
    "生完孩子以后{S}",
    "蹲下站起来{S}",
    "从小就{S}",
    "不知道为什么{S}",
    "吃了药还是{S}",
    "{S}吃药也不管用",
    "伴有{S}",
    "还{S}",
    "还有点{S}",
    "而且{S}",
    "同时{S}",
    "另外还{S}",
    "{S}和{S}",
    "{S}、{S}",
    "{S}、{S}、{S}",
    "{S}还{S}",
    "{S}加上{S}",
    "{S}并且{S}",
    "{S}伴随{S}",
    "除了{S}还{S}",
    "不光{S}还{S}",
    "先是{S}后来又{S}",
    "刚开始是{S}后来{S}",
    "有时候{S}有时候{S}",
    "{S}或者{S}",
    "一会{S}一会{S}",
    "{S}的时候还会{S}",
    "{P}{W}一直在{S}",
    "{P}发现自己{S}",
    "{P}{S}",
    "{S}明显",
    "{S}比较明显",
    "主要是{S}",
    "最难受的是{S}",
    "{S}这个症状{T}了",
    "{T}之内{S}了好几次",
    "接连{T}都{S}",
    "每天都{S}",
    "{S}好几次了",
    "{S}是怎么回事",
    "{S}厉害吗",
    "{S}正常吗",
    "{S}要紧吗",
    "{P}{W}{S}",
    "{W}{P}{S}得厉害",
    "也{S}",
    "{P}也{S}",
    "{S}，{A}{S}",
    "{W}{S}然后{S}",
];

/// Clauses that deny a symptom.
pub const NEGATION_CLAUSES: &[&str] = &[
    "没有{N}",
    "没{N}",
    "也没有{N}",
    "也没{N}",
    "并没有{N}",
    "不{N}",
    "没怎么{N}",
    "从来没有{N}",
    "{N}倒是没有",
    "{N}没有",
    "{N}倒没有",
    "{N}是没有的",
    "{N}也没有",
    "量了一下没有{N}",
    "体温正常没有{N}",
    "不会{N}",
    "没出现{N}",
    "没发现{N}",
    "暂时没有{N}",
    "{N}已经好了",
    "{N}好多了",
    "目前没有{N}",
    "一点也不{N}",
    "还没有{N}",
    "{N}的情况没有",
    "并不{N}",
    "不怎么{N}",
    "基本不{N}",
    "{N}这些都没有",
    "没感觉{N}",
    // A denial between the body part and the complaint (头不疼, 嗓子没怎么痛).
    "{X}",
    "{X}了",
    "{P}{X}",
    "{X}，还好",
    "现在{X}了",
    "{W}{X}",
    "其实{X}",
    "{X}的",
    "{X}，就是有点担心",
    "{X}啊",
];

/// Clauses about diseases: history, diagnoses, guesses.
pub const DISEASE_CLAUSES: &[&str] = &[
    "我有{D}",
    "我是{D}患者",
    "{P}有{D}",
    "有{D}病史",
    "以前得过{D}",
    "得了{D}以后",
    "确诊{D}{T}了",
    "查出{D}",
    "体检查出来{D}",
    "医生说我是{D}",
    "家里人有{D}",
    "{P}{D}很久了",
    "是不是{D}",
    "会不会是{D}",
    "是{D}吗",
    "有没有可能是{D}",
    "我怀疑是{D}",
    "担心是{D}",
    "{D}会{S}吗",
    "这种{S}是{D}吗",
    "{S}会是{D}吗",
    "{D}需要注意什么",
    "{D}怎么治",
    "{D}能治好吗",
    "以前有过{D}",
    "{D}{T}了",
    "小时候得过{D}",
    "体检说有{D}",
    "{P}被诊断为{D}",
    "是{D}引起的吗",
];

/// Clauses with nothing to find.
pub const CONTEXT_CLAUSES: &[&str] = &[
    "吃了药也没用",
    "去医院看过",
    "挺担心的",
    "不知道怎么回事",
    "之前没这样过",
    "工作压力大",
    "最近很忙",
    "没吃什么特别的东西",
    "吃了点消炎药",
    "在家休息过",
    "上网查了一下",
    "想问问医生",
    "不想去医院",
    "药店买了药",
    "量了血压",
    "做过检查",
    "心里有点慌",
    "平时身体挺好的",
    "最近换了工作",
    "刚出差回来",
    "家里人都挺好",
    "前段时间感冒刚好",
    "昨天吃了火锅",
    "一直在吃中药",
    "我今年三十岁",
    "孩子五岁",
    "老人家七十多了",
    "也不知道挂哪个科",
    "检查结果还没出来",
    "最近天气变化大",
];

/// Lines with nothing to find, on their own.
pub const CHIT_CHAT: &[&str] = &[
    "你好",
    "谢谢医生",
    "好的明白了",
    "我想咨询一下",
    "在吗",
    "今天天气不错",
    "医生你们几点下班",
    "挂号怎么挂",
    "好的谢谢",
    "嗯嗯知道了",
    "请问医院在哪里",
    "周末可以看病吗",
    "没什么事了",
    "我再观察一下",
    "收到",
    "医生您辛苦了",
    "能帮我看看吗",
    "我刚才说到哪了",
    "药怎么吃",
    "需要空腹吗",
];

const PEOPLE: &[&str] = &[
    "",
    "我",
    "我家孩子",
    "孩子",
    "宝宝",
    "我妈",
    "我爸",
    "我老公",
    "我老婆",
    "我奶奶",
    "我爷爷",
    "本人",
    "患者",
];
const ADVERBS: &[&str] = &[
    "",
    "有点",
    "有些",
    "特别",
    "非常",
    "一直",
    "老是",
    "总是",
    "经常",
    "偶尔",
    "时不时",
    "稍微",
    "挺",
    "比较",
    "很",
];
const WHEN: &[&str] = &[
    "最近",
    "今天早上",
    "昨晚",
    "从上周开始",
    "近来",
    "近期",
    "今天下午",
    "今天",
    "这段时间",
    "刚才",
    "昨天",
    "今晚",
];
const QUESTIONS: &[&str] = &[
    "怎么办",
    "这是什么病",
    "严重吗",
    "需要去医院吗",
    "该挂什么科",
    "吃什么药好",
    "是怎么回事啊",
    "要紧吗",
    "正常吗",
    "需要做什么检查",
    "能自己好吗",
    "用不用吃药",
];
const CONNECTORS: &[&str] = &[
    "，",
    "，",
    "，",
    ",",
    "。",
    " ",
    "；",
    "，而且",
    "，还",
    "，但是",
    "，但",
    "，不过",
    "，然后",
    "，同时",
    "",
    "！",
    "、",
];
const GREETINGS: &[&str] = &[
    "医生你好，",
    "你好，",
    "大夫，",
    "医生，",
    "您好，",
    "请问一下，",
    "麻烦问下，",
    "医生您好，",
];
const FILLERS: &[&str] = &["嗯，", "那个", "就是", "呃，", "啊，", "然后"];
const NUMBERS: &[&str] = &[
    "一", "两", "三", "四", "五", "六", "七", "八", "九", "十", "十几", "二十", "1", "2", "3", "5",
    "7", "10",
];
const UNITS: &[&str] = &[
    "天",
    "个星期",
    "周",
    "个月",
    "年",
    "个小时",
    "个多月",
    "个多星期",
];
const FIXED_DURATIONS: &[&str] = &[
    "半个月",
    "半年",
    "好几天",
    "一阵子",
    "好几个月",
    "大半年",
    "一整天",
    "几天",
];

/// The symptom words that can follow a denial: a word that already negates (食欲不振, 睡不着)
/// reads oddly after 没有.
pub fn negatable<'a>(words: &[&'a str]) -> Vec<&'a str> {
    words
        .iter()
        .copied()
        .filter(|s| !s.contains(['不', '没', '无', '未', '难']))
        .collect()
}

/// One labelled sentence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub chars: Vec<char>,
    /// Indices into [`TAGS`].
    pub tags: Vec<u32>,
    /// Character ranges of the symptoms the sentence denies (labelled O): the entity review
    /// corpus shows them as mentions to reject.
    pub denied: Vec<(usize, usize)>,
}

impl Sample {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    pub fn entities(&self) -> Vec<Entity> {
        let names: Vec<&str> = self.tags.iter().map(|&t| TAGS[t as usize]).collect();
        entities(&self.chars, &names)
    }

    fn push(&mut self, text: &str, kind: Option<u32>) {
        for (i, c) in text.chars().enumerate() {
            self.chars.push(c);
            self.tags.push(match kind {
                None => 0,
                Some(b) if i == 0 => b,
                Some(b) => b + 1,
            });
        }
    }
}

const B_SYM: u32 = 1;
const B_DIS: u32 = 3;
const B_DUR: u32 = 5;

/// A seeded generator of labelled sentences.
pub struct Generator<'a> {
    rng: StdRng,
    positive: Vec<&'a str>,
    negatable: Vec<&'a str>,
    diseases: Vec<&'a str>,
    /// Characters dropped next to entities now and then (typos, run-on words), so the
    /// tagger learns where an entity ends rather than which words usually follow it.
    stray: Vec<char>,
    /// Body-part words and sensation words that compose a symptom (`language/`), for
    /// mentions no alias spells: 嗓子眼儿有点疼.
    compositions: Vec<(Vec<&'a str>, Vec<&'a str>)>,
    /// Degree, frequency and particle words patients put between the two, split three ways.
    gap_words: Vec<&'a str>,
    split: Split,
}

impl<'a> Generator<'a> {
    pub fn new(lexicon: &'a Lexicon, seed: u64) -> Self {
        let positive: Vec<&str> = lexicon.symptoms.iter().flat_map(|s| s.surfaces()).collect();
        let negatable = negatable(&positive);
        let mut stray: Vec<char> = SYMPTOM_CLAUSES
            .iter()
            .chain(NEGATION_CLAUSES)
            .chain(DISEASE_CLAUSES)
            .chain(CONTEXT_CLAUSES)
            .flat_map(|c| c.chars())
            .chain(lexicon.chars())
            .filter(|c| !c.is_ascii() && !"{}，、".contains(*c))
            .collect();
        stray.sort_unstable();
        stray.dedup();
        let language = &lexicon.language;
        // A key is a word too when it is one (头, 痛); the reader treats it so.
        let words = |list: &'a [String], key: &'a str| -> Vec<&'a str> {
            let mut w: Vec<&str> = list.iter().map(String::as_str).collect();
            if !w.contains(&key) {
                w.push(key);
            }
            w
        };
        let compositions = language
            .compositions
            .keys()
            .filter_map(|(part, sensation)| {
                let p = language.part(part)?;
                let s = language.sensation(sensation)?;
                Some((
                    words(&p.words, p.key.as_str()),
                    words(&s.words, s.key.as_str()),
                ))
            })
            .collect();
        let gap_words = [WordKind::Degree, WordKind::Frequency, WordKind::Particle]
            .into_iter()
            .flat_map(|k| language.words(k).iter().map(String::as_str))
            .collect();
        Generator {
            rng: StdRng::seed_from_u64(seed),
            positive,
            negatable,
            diseases: lexicon.diseases.iter().map(|d| d.name.as_str()).collect(),
            stray,
            compositions,
            gap_words,
            split: Split::Train,
        }
    }

    /// A body part, up to two words of the split's gap words, and a sensation that composes
    /// with it (嗓子眼儿 + 有点 + 疼); with `negation`, the denial between them (头不疼).
    fn composed(&mut self, negation: bool) -> Option<String> {
        if self.compositions.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.compositions.len());
        // Body-part and sensation words are split three ways too (a list too short to split
        // is used whole), so test sentences hold words the tagger never saw.
        let split = self.split;
        let of_split = |words: &[&'a str]| {
            let own = in_split(words, split);
            if own.is_empty() {
                words.to_vec()
            } else {
                own
            }
        };
        let parts = of_split(&self.compositions[i].0);
        let sensations = of_split(&self.compositions[i].1);
        let part = *parts.choose(&mut self.rng)?;
        let sensation = *sensations.choose(&mut self.rng)?;
        let gaps = in_split(&self.gap_words, self.split);
        let mut text = part.to_string();
        if negation {
            text.push_str(["不", "没", "不太", "没怎么", "也不"][self.rng.random_range(0..5)]);
        } else {
            for _ in 0..[0, 1, 1, 1, 2][self.rng.random_range(0..5)] {
                if let Some(g) = gaps.choose(&mut self.rng) {
                    text.push_str(g);
                }
            }
        }
        text.push_str(sensation);
        Some(text)
    }

    fn pick(&mut self, from: &[&'a str]) -> &'a str {
        from.choose(&mut self.rng).copied().unwrap_or("")
    }

    fn duration(&mut self) -> String {
        if self.rng.random_bool(0.2) {
            self.pick(FIXED_DURATIONS).to_string()
        } else {
            format!("{}{}", self.pick(NUMBERS), self.pick(UNITS))
        }
    }

    /// `count` sentences made only of the clauses (and chit-chat lines) of `split`.
    pub fn corpus(&mut self, split: Split, count: usize) -> Vec<Sample> {
        self.split = split;
        let of = |list: &[&'static str]| in_split(list, split);
        let pools = [
            (0.55, of(SYMPTOM_CLAUSES)),
            (0.15, of(NEGATION_CLAUSES)),
            (0.15, of(DISEASE_CLAUSES)),
            (0.15, of(CONTEXT_CLAUSES)),
        ];
        let chat = of(CHIT_CHAT);
        (0..count)
            .map(|_| {
                if self.rng.random_bool(0.06) {
                    let mut s = Sample::default();
                    let line = self.pick(&chat);
                    s.push(line, None);
                    return self.finish(s);
                }
                let clauses = match self.rng.random_range(0..20) {
                    0..=6 => 1,
                    7..=14 => 2,
                    15..=18 => 3,
                    _ => 4,
                };
                let mut chosen = Vec::with_capacity(clauses);
                for _ in 0..clauses {
                    let mut roll = self.rng.random::<f64>();
                    let pool = pools
                        .iter()
                        .find(|(weight, _)| {
                            roll -= weight;
                            roll < 0.0
                        })
                        .map_or(&pools[0].1, |(_, p)| p);
                    chosen.push(self.pick(pool));
                }
                self.sentence(&chosen)
            })
            .collect()
    }

    /// Fills one template as a whole sentence (with the usual greeting, question and noise).
    pub fn fill(&mut self, template: &str) -> Sample {
        self.sentence(&[template])
    }

    /// Joins filled clauses with connectors, then adds the noise real messages have.
    fn sentence(&mut self, clauses: &[&str]) -> Sample {
        let mut s = Sample::default();
        if self.rng.random_bool(0.25) {
            let g = self.pick(GREETINGS);
            s.push(g, None);
        }
        for (i, clause) in clauses.iter().enumerate() {
            if i > 0 {
                let c = self.pick(CONNECTORS);
                s.push(c, None);
            }
            self.clause(&mut s, clause);
        }
        if self.rng.random_bool(0.2) && !clauses.iter().any(|c| c.contains("{Q}")) {
            let q = self.pick(QUESTIONS);
            s.push("，", None);
            s.push(q, None);
        }
        self.finish(s)
    }

    fn clause(&mut self, s: &mut Sample, template: &str) {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            self.literal(s, &rest[..open]);
            let close = open + rest[open..].find('}').expect("templates close their slots");
            let slot = &rest[open + 1..close];
            let entity = matches!(slot, "S" | "D" | "T");
            if entity && self.rng.random_bool(0.08) {
                let c = self.stray[self.rng.random_range(0..self.stray.len())];
                s.push(&c.to_string(), None);
            }
            match slot {
                "S" => match self
                    .rng
                    .random_bool(0.3)
                    .then(|| self.composed(false))
                    .flatten()
                {
                    Some(composed) => s.push(&composed, Some(B_SYM)),
                    None => {
                        let w = self.pick(&self.positive.clone());
                        s.push(w, Some(B_SYM));
                    }
                },
                "N" => {
                    let w = self.pick(&self.negatable.clone());
                    let at = s.chars.len();
                    s.push(w, None);
                    s.denied.push((at, s.chars.len()));
                }
                "X" => {
                    let w = self
                        .composed(true)
                        .unwrap_or_else(|| format!("没有{}", self.pick(&self.negatable.clone())));
                    let at = s.chars.len();
                    s.push(&w, None);
                    s.denied.push((at, s.chars.len()));
                }
                "D" => {
                    let w = self.pick(&self.diseases.clone());
                    s.push(w, Some(B_DIS));
                }
                "T" => {
                    let d = self.duration();
                    s.push(&d, Some(B_DUR));
                }
                "P" => {
                    let w = self.pick(PEOPLE);
                    s.push(w, None);
                }
                "A" => {
                    let w = self.pick(ADVERBS);
                    s.push(w, None);
                }
                "W" => {
                    let w = self.pick(WHEN);
                    s.push(w, None);
                }
                "Q" => {
                    let w = self.pick(QUESTIONS);
                    s.push(w, None);
                }
                other => panic!("unknown slot {{{other}}} in a template; this is a bug"),
            }
            if entity && self.rng.random_bool(0.08) {
                let c = self.stray[self.rng.random_range(0..self.stray.len())];
                s.push(&c.to_string(), None);
            }
            rest = &rest[close + 1..];
        }
        self.literal(s, rest);
    }

    /// Literal template text, with punctuation sometimes swapped or dropped and an
    /// occasional filler word.
    fn literal(&mut self, s: &mut Sample, text: &str) {
        if !s.chars.is_empty() && self.rng.random_bool(0.06) {
            let f = self.pick(FILLERS);
            s.push(f, None);
        }
        for c in text.chars() {
            let c = match c {
                '，' if self.rng.random_bool(0.15) => ',',
                '，' if self.rng.random_bool(0.1) => ' ',
                other => other,
            };
            s.push(&c.to_string(), None);
        }
    }

    fn finish(&mut self, mut s: Sample) -> Sample {
        let ending = match self.rng.random_range(0..10) {
            0..=3 => "",
            4..=6 => "。",
            7 => "！",
            8 => "?",
            _ => "？",
        };
        s.push(ending, None);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_lines_hold_no_lexicon_word() {
        let lexicon = Lexicon::shipped().unwrap();
        for line in CONTEXT_CLAUSES.iter().chain(CHIT_CHAT) {
            for s in &lexicon.symptoms {
                for surface in s.surfaces() {
                    assert!(
                        !line.contains(surface),
                        "`{line}` contains the symptom word `{surface}`"
                    );
                }
            }
        }
    }

    #[test]
    fn templates_are_split_three_ways_and_fill_with_aligned_labels() {
        let lexicon = Lexicon::shipped().unwrap();
        let mut generator = Generator::new(&lexicon, 1);
        let sample = generator.fill("{P}{S}{T}了，没有{N}，以前得过{D}");
        assert_eq!(sample.chars.len(), sample.tags.len());
        let kinds: Vec<String> = sample.entities().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["SYM", "DUR", "DIS"], "{}", sample.text());
        for list in [
            SYMPTOM_CLAUSES,
            NEGATION_CLAUSES,
            DISEASE_CLAUSES,
            CONTEXT_CLAUSES,
        ] {
            let count = |split| in_split(list, split).len();
            assert!(count(Split::Train) >= 20 && count(Split::Dev) >= 2 && count(Split::Test) >= 5);
        }
        // The same seed gives the same corpus.
        let a = Generator::new(&lexicon, 9).corpus(Split::Dev, 50);
        let b = Generator::new(&lexicon, 9).corpus(Split::Dev, 50);
        assert_eq!(a, b);
    }
}
