//! Pairs of patient messages for the dialog-relevance classifier: does the second message
//! continue the first (more symptoms of the same complaint, how long or how bad it is, a
//! follow-up question about it) or start something new (a complaint about another body
//! system, a greeting, chit-chat, a question about something else)? "The same complaint"
//! means symptoms of the body system of one already named, or whole-body symptoms such as
//! fever, which go with any complaint.
//!
//! Messages are composed from parts. The parts that shape a message (its body templates,
//! questions, statements, social lines) are split between train, dev and test by position;
//! small fillers (who, when, lead-ins, hospital places) are shared. Lead-ins such as 对了 or
//! 还有 open both kinds of second message, so they never give the answer away.
//!
//! Like the rest of the corpus, it never reads the evaluation set in `data/eval/`.

use std::collections::{BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::ner::{in_split, Split};
use crate::lexicon::Lexicon;

/// Class names in id order, as the shipped model's `id2label`.
pub const LABELS: [&str; 2] = ["unrelated", "related"];

/// A labelled pair: `related` when `second` continues `first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub first: String,
    pub second: String,
    pub related: bool,
}

// Templates: `{S}` a symptom, `{D}` a disease, `{T}` a duration. In a follow-up, `{S}`
// repeats a symptom of the first message and `{D}` is a disease that has it.

/// Opening complaints.
pub const FIRST_BODIES: &[&str] = &[
    "{S}",
    "{S}，还{S}",
    "{S}而且{S}",
    "{S}和{S}",
    "有点{S}",
    "{S}得厉害",
    "{S}{T}了",
    "{S}、{S}",
    "一直{S}",
    "{S}，有时候{S}",
    "感觉{S}",
    "老是{S}",
    "{S}比较明显",
    "{S}好几天了",
    "{S}还伴有{S}",
    "特别{S}",
    "{S}了{T}",
    "总觉得{S}",
    "{S}加上{S}",
    "经常{S}",
];

/// Second messages that name a symptom. Filled with a symptom of the same complaint they
/// continue it (related); filled with one of another body system that shares no disease
/// with the first message's symptoms they start a new complaint (unrelated). The same
/// wording serves both, so only what the symptom is decides.
pub const SYMPTOM_SECONDS: &[&str] = &[
    "还有点{S}",
    "{S}也有",
    "而且{S}",
    "{S}",
    "我还{S}",
    "现在又{S}了",
    "同时{S}",
    "有时候{S}",
    "晚上还会{S}",
    "还伴随{S}",
    "{S}也挺明显的",
    "最近也{S}",
    "{S}还挺厉害",
    "我{S}",
    "然后{S}",
    "今天开始{S}了",
    "并且{S}",
    "偶尔{S}",
    "接着又{S}",
    "也会{S}",
    "我最近{S}",
    "我有点{S}",
    "{S}好几天了",
    "这几天{S}",
    "我老是{S}",
    "一直{S}",
    "突然{S}",
    "我经常{S}",
    "{S}得厉害",
    "还有{S}的情况",
    "对了还{S}",
    "另外我{S}",
    "这两天{S}",
    "{S}也挺严重",
    "我也{S}",
    "还老是{S}",
    "有点儿{S}",
    "昨天开始{S}",
    "总是{S}",
    "还会{S}",
    "{S}比较厉害",
    "感觉{S}",
    "偶尔会{S}",
    "{S}断断续续的",
    "最近老{S}",
    "{S}有一阵了",
    "而且还{S}",
    "还特别{S}",
    "{S}挺难受的",
    "早上{S}",
];

/// Questions about the complaint (after a reference such as 这个 or the symptom itself).
pub const FOLLOW_QUESTIONS: &[&str] = &[
    "严重吗",
    "要紧吗",
    "需要吃药吗",
    "多久能好",
    "会不会传染",
    "需要检查吗",
    "怎么缓解",
    "是什么原因",
    "能治好吗",
    "该挂什么科",
    "要去医院吗",
    "吃什么药好",
    "会不会是{D}",
    "是不是{D}",
    "需要住院吗",
    "有什么办法吗",
    "要注意什么",
    "会加重吗",
    "能自己好吗",
    "需要打针吗",
    "怎么办才好",
    "正常吗",
    "会复发吗",
    "和{D}有关吗",
    "需要做手术吗",
    "饮食上要注意什么",
    "能吃辣吗",
    "要休息多久",
    "是{D}引起的吗",
    "要不要去医院看看",
    "需要做检查吗",
    "会不会很严重",
    "用不用看医生",
    "吃点什么药",
    "去哪个科看",
    "要不要紧",
    "多长时间能好",
    "是怎么引起的",
    "会不会恶化",
    "是不是{D}的表现",
    "会发展成{D}吗",
    "需要输液吗",
    "可以喝酒吗",
    "能运动吗",
    "平时要注意什么",
    "怎么治疗",
    "有什么偏方吗",
    "会遗传吗",
    "要做CT吗",
    "用不用拍片子",
    "能不能自愈",
    "严不严重",
    "需不需要复查",
    "要吃消炎药吗",
    "应该怎么调理",
    "会影响孩子吗",
    "晚上怎么睡好",
    "是不是要查血",
    "和我最近熬夜有关吗",
    "需要忌口吗",
];

/// Statements about how long or how bad the complaint is.
pub const FOLLOW_STATEMENTS: &[&str] = &[
    "已经{T}了",
    "有{T}了",
    "持续{T}了",
    "差不多{T}了",
    "越来越严重了",
    "一阵一阵的",
    "晚上更厉害",
    "比昨天好一点了",
    "难受得睡不着",
    "吃了药也不管用",
    "白天还好，晚上厉害",
    "影响工作了",
    "越来越难受",
    "比之前重了",
    "反反复复的",
    "时好时坏",
    "一直没好",
    "还是老样子",
    "吃药后好些了",
    "{S}越来越厉害",
    "{S}已经{T}了",
    "{S}一直没好",
    "今天又加重了",
    "一活动就更明显",
    "休息后好一点",
    "都{T}了",
    "快{T}了",
    "断断续续{T}了",
    "比前几天严重",
    "好像更重了",
    "一直不见好",
    "昨天开始加重",
    "疼得受不了",
    "吃了退烧药也没用",
    "晚上睡觉更难受",
    "今天好多了",
    "早上起来最明显",
    "喝水也没缓解",
    "一躺下就加重",
    "{S}还没好",
    "{S}比之前厉害",
    "{S}也没减轻",
    "还是{S}",
    "{S}一阵一阵的",
    "走路都困难了",
    "一吃东西就犯",
    "坐着好一点",
    "过了{T}还没好",
    "越来越频繁了",
    "一点都没减轻",
    "每天都这样",
    "现在还是这样",
    "最近更明显了",
    "{S}断断续续的",
    "没有以前那么难受了",
];

/// Questions about the hospital: place (shared) + question (split).
pub const PLACE_QUESTIONS: &[&str] = &[
    "在哪",
    "怎么办理",
    "多少钱",
    "几点开门",
    "要排队吗",
    "方便吗",
    "怎么走",
    "周末开吗",
    "要预约吗",
    "能报销吗",
    "在几楼",
    "怎么弄",
    "哪里有",
    "几点下班",
    "可以网上办吗",
    "人多吗",
    "要带什么证件",
    "能用医保吗",
    "开到几点",
    "电话多少",
    "能刷卡吗",
    "能停车吗",
    "几号窗口",
    "怎么预约",
    "要多久",
    "能加号吗",
    "哪天有",
    "怎么收费",
    "有优惠吗",
    "在一楼吗",
    "可以代办吗",
    "怎么查",
    "能取消吗",
    "几点开始",
    "需要空腹吗",
    "在哪个门",
    "有人工窗口吗",
    "能微信付吗",
    "要提前多久",
    "怎么找",
];

/// Greetings, thanks, chit-chat.
pub const SOCIAL: &[&str] = &[
    "谢谢医生",
    "你好",
    "好的明白了",
    "今天天气不错",
    "你是机器人吗",
    "在吗",
    "哈哈哈",
    "晚安",
    "你叫什么名字",
    "好的谢谢你",
    "辛苦了",
    "早上好",
    "你真厉害",
    "拜拜",
    "收到",
    "我知道了",
    "没事了",
    "再见",
    "你吃饭了吗",
    "周末愉快",
    "嗯嗯",
    "好的",
    "谢谢你的回答",
    "明白",
    "你们几点下班",
    "今天好热啊",
    "你是真人吗",
    "我先去忙了",
    "有人吗",
    "麻烦你了",
    "你好呀",
    "谢啦",
    "明天见",
    "好的好的",
    "吃了吗",
    "你在干嘛",
    "讲个笑话吧",
    "今天星期几",
    "我心情不错",
    "辛苦啦",
    "感谢感谢",
    "好嘞",
    "晚上好",
    "中午好",
    "你几岁了",
    "你会唱歌吗",
    "我要睡觉了",
    "好的收到",
    "多谢多谢",
    "你们这个挺好用的",
    "下雨了",
    "我去吃饭了",
    "哈哈好的",
    "OK",
    "没问题",
    "知道啦",
    "给你点赞",
    "太感谢了",
    "你能听懂我说话吗",
    "今天好冷",
];

/// The lexicon's body part for symptoms of the whole body (fever, fatigue, chills...).
const WHOLE_BODY: &str = "全身";
const PEOPLE: &[&str] = &[
    "我",
    "我家孩子",
    "孩子",
    "宝宝",
    "我妈",
    "我爸",
    "我老公",
    "我老婆",
    "老人家",
    "我朋友",
    "我同事",
    "",
];
const OPENERS: &[&str] = &[
    "",
    "",
    "",
    "医生，",
    "你好，",
    "大夫，",
    "医生你好，",
    "想咨询一下，",
    "请问，",
];
const WHEN: &[&str] = &[
    "",
    "",
    "最近",
    "这两天",
    "今天",
    "昨晚开始",
    "这段时间",
    "突然",
    "早上起来",
    "这几天",
];
const TAILS: &[&str] = &[
    "",
    "",
    "",
    "，怎么办",
    "，是怎么回事",
    "，很难受",
    "，吃药没用",
    "，严重吗",
    "，该怎么办",
];
const LEADS: &[&str] = &[
    "",
    "",
    "",
    "",
    "对了，",
    "还有，",
    "另外，",
    "那个，",
    "医生，",
    "嗯，",
    "哦对，",
    "想再问下，",
    "还想问一下，",
    "我想问，",
    "补充一下，",
    "再问一个，",
    "大夫，",
    "还有个事，",
    "问一下，",
    "然后，",
];
const REFERENCES: &[&str] = &[
    "这个",
    "这种情况",
    "这个症状",
    "{S}",
    "我这个情况",
    "这样",
    "这病",
    "这种{S}",
    "我这样",
    "这个毛病",
    "像这样",
];
const PLACES: &[&str] = &[
    "挂号",
    "停车",
    "医保",
    "体检",
    "预约",
    "取报告",
    "儿科",
    "药房",
    "急诊",
    "住院部",
    "食堂",
    "门诊",
    "专家号",
    "核酸",
    "挂号费",
    "发票",
    "电梯",
    "厕所",
    "探视",
    "网上挂号",
    "复印病历",
    "自助机",
];
const DURATIONS: &[&str] = &[
    "三天",
    "一个星期",
    "两周",
    "半个月",
    "一个多月",
    "好几天",
    "两个月",
    "半年",
    "五天",
    "十来天",
    "一整天",
    "两三天",
];

/// A seeded generator of labelled pairs, half related and half not.
pub struct PairGenerator<'a> {
    lexicon: &'a Lexicon,
    rng: StdRng,
    /// Disease → its symptoms (indices into `lexicon.symptoms`).
    diseases: Vec<(usize, Vec<usize>)>,
    /// Symptom → every symptom that shares a disease with it.
    together: Vec<BTreeSet<usize>>,
}

struct Parts {
    first: Vec<&'static str>,
    symptom: Vec<&'static str>,
    questions: Vec<&'static str>,
    statements: Vec<&'static str>,
    place_questions: Vec<&'static str>,
    social: Vec<&'static str>,
}

impl<'a> PairGenerator<'a> {
    pub fn new(lexicon: &'a Lexicon, seed: u64) -> Self {
        let index: HashMap<&str, usize> = lexicon
            .symptoms
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let diseases: Vec<(usize, Vec<usize>)> = lexicon
            .diseases
            .iter()
            .enumerate()
            .map(|(d, disease)| {
                let symptoms = lexicon
                    .links
                    .iter()
                    .filter(|(name, _)| *name == disease.name)
                    .filter_map(|(_, s)| index.get(s.as_str()).copied())
                    .collect();
                (d, symptoms)
            })
            .filter(|(_, s): &(usize, Vec<usize>)| s.len() >= 2)
            .collect();
        let mut together = vec![BTreeSet::new(); lexicon.symptoms.len()];
        for (_, symptoms) in &diseases {
            for &a in symptoms {
                together[a].extend(symptoms.iter().copied());
            }
        }
        PairGenerator {
            lexicon,
            rng: StdRng::seed_from_u64(seed),
            diseases,
            together,
        }
    }

    fn pick(&mut self, from: &[&'static str]) -> &'static str {
        from.choose(&mut self.rng).copied().unwrap_or("")
    }

    fn surface(&mut self, symptom: usize) -> String {
        let s = &self.lexicon.symptoms[symptom];
        let forms: Vec<&str> = s.surfaces().collect();
        forms
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(&s.name)
            .to_string()
    }

    /// Fills `{S}` slots from `symptoms` in turn, `{D}` with `disease`, `{T}` and `{P}`.
    fn fill(&mut self, template: &str, symptoms: &[usize], disease: usize) -> String {
        let mut out = String::new();
        let mut next = 0;
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("templates close their slots");
            match &rest[open + 1..close] {
                "S" => {
                    let s = symptoms[next % symptoms.len()];
                    next += 1;
                    out.push_str(&self.surface(s));
                }
                "D" => out.push_str(&self.lexicon.diseases[disease].name),
                "T" => out.push_str(self.pick(DURATIONS)),
                "P" => out.push_str(self.pick(PEOPLE)),
                other => panic!("unknown slot {{{other}}}; this is a bug"),
            }
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn punctuate(&mut self, mut text: String) -> String {
        if self.rng.random_bool(0.35) {
            text.push_str(self.pick(&["。", "？", "！", "?", "…", "~"]));
        }
        text
    }

    /// `count` pairs built from the parts of `split`, alternating related and unrelated.
    pub fn corpus(&mut self, split: Split, count: usize) -> Vec<Pair> {
        let of = |list: &[&'static str]| in_split(list, split);
        let parts = Parts {
            first: of(FIRST_BODIES),
            symptom: of(SYMPTOM_SECONDS),
            questions: of(FOLLOW_QUESTIONS),
            statements: of(FOLLOW_STATEMENTS),
            place_questions: of(PLACE_QUESTIONS),
            social: of(SOCIAL),
        };
        (0..count).map(|i| self.pair(&parts, i % 2 == 0)).collect()
    }

    /// A message naming symptom `s`: a short follow-up (还有点{S}) or, two times in five, a
    /// whole complaint like an opening message, with a second symptom from `companions`.
    fn symptom_message(
        &mut self,
        parts: &Parts,
        s: usize,
        companions: &[usize],
        disease: usize,
    ) -> String {
        if self.rng.random_bool(0.6) {
            let t = self.pick(&parts.symptom);
            return self.fill(t, &[s], disease);
        }
        let body = self.pick(&parts.first);
        let other = companions
            .iter()
            .copied()
            .filter(|&c| c != s)
            .collect::<Vec<_>>();
        let second = other.choose(&mut self.rng).copied().unwrap_or(s);
        let (opener, who, when) = (self.pick(OPENERS), self.pick(PEOPLE), self.pick(WHEN));
        let filled = self.fill(body, &[s, second], disease);
        format!("{opener}{who}{when}{filled}")
    }

    fn pair(&mut self, parts: &Parts, related: bool) -> Pair {
        let (disease, symptoms) = self
            .diseases
            .choose(&mut self.rng)
            .expect("diseases with symptoms")
            .clone();
        let body = self.pick(&parts.first);
        let wanted = body.matches("{S}").count().clamp(1, 2);
        let mentioned: Vec<usize> = symptoms
            .choose_multiple(&mut self.rng, wanted)
            .copied()
            .collect();
        let (opener, who, when, tail) = (
            self.pick(OPENERS),
            self.pick(PEOPLE),
            self.pick(WHEN),
            self.pick(TAILS),
        );
        let filled = self.fill(body, &mentioned, disease);
        let first = self.punctuate(format!("{opener}{who}{when}{filled}{tail}"));

        let lead = self.pick(LEADS);
        // Whole-body symptoms (fever, fatigue...) go with any complaint; the others belong to
        // one body system. A second symptom continues the first message when it is a
        // whole-body one, when the first message names only whole-body symptoms, or when it
        // sits in the body system of a named symptom; otherwise it starts a new complaint.
        // Symptoms that share a disease with a named one are preferred for continuations.
        let part = |s: usize| self.lexicon.symptoms[s].body_part.as_str();
        let general = |s: usize| part(s) == WHOLE_BODY;
        let systems: BTreeSet<&str> = mentioned
            .iter()
            .filter(|&&m| !general(m))
            .map(|&m| part(m))
            .collect();
        let continues = |s: usize| general(s) || systems.is_empty() || systems.contains(part(s));
        let all = 0..self.lexicon.symptoms.len();
        let together: BTreeSet<usize> = mentioned
            .iter()
            .flat_map(|&m| self.together[m].iter().copied())
            .collect();
        let near_disease: Vec<usize> = together
            .iter()
            .copied()
            .filter(|&s| continues(s) && !mentioned.contains(&s))
            .collect();
        let near_system: Vec<usize> = all
            .clone()
            .filter(|&s| continues(s) && !mentioned.contains(&s))
            .collect();
        let near = if !near_disease.is_empty() && self.rng.random_bool(0.6) {
            near_disease
        } else {
            near_system
        };
        let far: Vec<usize> = all.filter(|&s| !continues(s)).collect();
        let roll = self.rng.random_range(0..100);
        let body = match (related, roll) {
            // A symptom: of the same complaint, or of another body system; either a short
            // follow-up or a whole complaint worded like an opening message.
            (true, 0..=44) if !near.is_empty() => {
                let s = *near.choose(&mut self.rng).expect("not empty");
                self.symptom_message(parts, s, &near, disease)
            }
            (false, 0..=44) if !far.is_empty() => {
                let s = *far.choose(&mut self.rng).expect("not empty");
                // A new complaint's second symptom comes from its own body system.
                let same: Vec<usize> = far
                    .iter()
                    .copied()
                    .filter(|&f| part(f) == part(s))
                    .collect();
                self.symptom_message(parts, s, &same, disease)
            }
            // A question: about the complaint, or about another symptom.
            (true, 0..=69) => {
                let reference = self.pick(REFERENCES);
                let question = self.pick(&parts.questions);
                self.fill(&format!("{reference}{question}"), &mentioned, disease)
            }
            (false, 45..=69) if !far.is_empty() => {
                let s = *far.choose(&mut self.rng).expect("not empty");
                let question = self.pick(&parts.questions).replace("{D}", "{X}");
                let question = if question.contains("{X}") {
                    "严重吗".to_string()
                } else {
                    question
                };
                self.fill(&format!("{{S}}{question}"), &[s], disease)
            }
            // How it is going, versus something else entirely.
            (true, _) => {
                let t = self.pick(&parts.statements);
                self.fill(t, &mentioned, disease)
            }
            (false, 70..=84) | (false, 0..=69) => {
                let place = self.pick(PLACES);
                let question = self.pick(&parts.place_questions);
                format!("{place}{question}")
            }
            (false, _) => self.pick(&parts.social).to_string(),
        };
        let second = self.punctuate(format!("{lead}{body}"));
        Pair {
            first,
            second,
            related,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_balanced_reproducible_and_split_by_template() {
        let lexicon = Lexicon::shipped().unwrap();
        let pairs = PairGenerator::new(&lexicon, 4).corpus(Split::Train, 400);
        assert_eq!(pairs.iter().filter(|p| p.related).count(), 200);
        assert_eq!(
            pairs,
            PairGenerator::new(&lexicon, 4).corpus(Split::Train, 400)
        );
        for list in [
            FIRST_BODIES,
            SYMPTOM_SECONDS,
            FOLLOW_QUESTIONS,
            FOLLOW_STATEMENTS,
            PLACE_QUESTIONS,
            SOCIAL,
        ] {
            let count = |split| in_split(list, split).len();
            assert!(count(Split::Train) >= 14 && count(Split::Dev) >= 2 && count(Split::Test) >= 4);
        }
        // A social line of the test split never appears in training pairs.
        let test_only = in_split(SOCIAL, Split::Test)[0];
        assert!(!pairs.iter().any(|p| p
            .second
            .trim_end_matches(['。', '？', '！', '?', '…', '~'])
            .ends_with(test_only)));
    }
}
