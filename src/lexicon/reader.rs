//! Reading symptoms out of a patient's message, and mapping the tagger's spans to the
//! lexicon. Every symptom that leaves here is a canonical name of `symptoms.csv`.
//!
//! These readings of the text are combined:
//! - **surfaces**: the names and aliases of `symptoms.csv`, longest match first (拉肚子, 脑壳疼);
//! - **compositions**: a body-part word, a few filler characters at most, then a sensation
//!   word, where `compositions.csv` says what the pair means (嗓子眼儿有点疼 = throat + pain =
//!   咽痛; 眼睛老是很干 = 眼干), so wording no alias lists is still understood;
//! - **temperatures**: 38度5, 39.2, 三十八度 at or above 37.3 °C are a fever;
//! - **measurements**: a blood pressure (血压160/100, 高压150) at or above 140/90 is raised
//!   blood pressure; a heart rate (心率48, 脉搏一百二) below 60 is a slow heart, above 100 a
//!   racing one;
//! - **spreading**: a sensation that reaches another part (疼到后背, 麻到手指) is that part's too;
//! - **constructions** where a negation or a count is the complaint: 三四天没大便 (constipation),
//!   半夜起来上三次厕所 (nocturia);
//! - **verbs** used as symptoms (老咳, 拉了五六次, 烧起来了), from `verbs.csv`;
//! - **sounds**: a pinyin-input typo of a surface, one character off (投疼 for 头疼).
//!
//! A mention is dropped when a negation governs it: one right before it (没有发烧, 也不太咳嗽,
//! 一点也不疼), one between the body part and the sensation (头不疼), one after it at the end of
//! the clause (发烧倒是没有), or a list that started negated (没有发烧、咳嗽). Words that only
//! look like negations (不停, 受不了, 不舒服) do not negate.
//!
//! The tagger's spans ([`Reader::normalise`]) go through the same readings, then a character
//! bigram similarity against every surface; a span that matches nothing is dropped.

use std::collections::{HashMap, HashSet};

use super::language::WordKind;
use super::Lexicon;

/// How many characters may stand between a body part and its sensation (有点儿, 又开始, 老是很).
pub const MAX_GAP: usize = 5;
/// How far before a mention a negation still governs it (没怎么, 一点也不).
const NEGATION_REACH: usize = 4;
/// A tagged span at least this similar (character-bigram Dice) to a surface means its symptom.
pub const MIN_SIMILARITY: f64 = 0.67;

/// Function characters are too common to be taken for a typo (夜间可加重 is no 夜间咳).
const FUNCTION_CHARS: &str = "可是有在了的也都就还和要会能到说着过把被让给跟对从向以为与及或而但很";
/// A typo's stray character is used by at most this many words of the symptom vocabulary.
const MAX_TYPO_CHAR_USES: usize = 2;
/// Character sequences that contain a negation character but do not negate what follows.
const NOT_NEGATIONS: &[&str] = &[
    "不停",
    "不断",
    "不止",
    "不住",
    "不行",
    "不了",
    "不得",
    "不适",
    "不舒服",
    "不知",
    "不清",
    "不少",
    "不小心",
    "不一样",
    "不管",
    "不到",
    "不对劲",
    "差不多",
    "没完",
    "没事",
    "没多久",
    "没几天",
    "没来",
    "没过",
    "要不要",
    "是不是",
    "会不会",
    "能不能",
    "好不好",
    "有没有",
    "还没好",
    "不见好",
    "没好",
    "特别",
    "别的",
    "分别",
    "区别",
    "别人",
];
/// What the characters of a plain word (石头, 突然: `plain` in `words.csv`) become before
/// reading: no table has it, it has no sound and it ends no clause, so it is filler.
const PLAIN: char = '\u{E000}';
/// Characters that join list items a negation keeps governing (没有发烧、咳嗽和头疼).
const LIST_JOINERS: &str = "、和或及也都还跟与";
/// Characters between a mention and a negation after it (发烧倒是没有).
const POST_FILLERS: &str = "倒是也都就已经还";

/// How a symptom was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum How {
    Surface,
    Composition,
    Temperature,
    /// A blood pressure or heart rate reading (血压160/100, 心率48).
    Measurement,
    Verb,
    Sound,
    Similarity,
}

/// A symptom read at characters `start..end` of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub symptom: String,
    pub start: usize,
    pub end: usize,
    pub how: How,
    pub negated: bool,
}

/// The lexicon compiled for reading.
#[derive(Debug, Clone)]
pub struct Reader {
    names: Vec<String>,
    surfaces: HashMap<String, usize>,
    longest_surface: usize,
    parts: HashMap<String, usize>,
    longest_part: usize,
    sensations: HashMap<String, usize>,
    longest_sensation: usize,
    compose: HashMap<(usize, usize), usize>,
    negations: HashSet<String>,
    negation_ends: HashSet<String>,
    plain: HashMap<String, usize>,
    longest_plain: usize,
    /// The body system of each part (`body_parts.csv`), by the parts' index.
    part_systems: Vec<String>,
    verbs: HashMap<String, usize>,
    longest_verb: usize,
    fever: Option<usize>,
    high_pressure: Option<usize>,
    slow_heart: Option<usize>,
    fast_heart: Option<usize>,
    constipation: Option<usize>,
    night_urination: Option<usize>,
    bigrams: Vec<(usize, HashSet<(char, char)>)>,
    /// Surfaces by their toneless pinyin (`tou teng` → 头疼), for typos of pinyin input.
    by_sound: HashMap<String, Vec<(usize, Vec<char>)>>,
    longest_sound: usize,
    /// How many words of the symptom vocabulary (surfaces, body parts, sensations) use each
    /// character: a typo's stray character is one it hardly uses.
    char_uses: HashMap<char, usize>,
}

/// The toneless pinyin of `chars`, syllables joined by spaces; `None` when a character has
/// none (digits, Latin, punctuation).
fn sound(chars: &[char]) -> Option<String> {
    use pinyin::ToPinyin;
    let syllables: Option<Vec<&str>> = chars
        .iter()
        .map(|c| c.to_pinyin().map(|p| p.plain()))
        .collect();
    Some(syllables?.join(" "))
}

/// What a measurement cue names.
#[derive(Debug, Clone, Copy)]
enum Vital {
    Pressure,
    Systolic,
    Diastolic,
    Rate,
}

/// A whole number at `i`: two or three digits (48, 160), or written in characters up to
/// 299 (四十八, 一百二, 一百六十五); with where it ends.
fn number_at(text: &[char], i: usize) -> Option<(u32, usize)> {
    if i > 0 && text[i - 1].is_ascii_digit() {
        return None;
    }
    let mut k = i;
    let mut value = 0u32;
    while k < text.len() && text[k].is_ascii_digit() && k - i < 3 {
        value = value * 10 + text[k].to_digit(10)?;
        k += 1;
    }
    if k > i {
        let whole = k - i >= 2 && text.get(k).is_none_or(|c| !c.is_ascii_digit());
        return whole.then_some((value, k));
    }
    let digit = |c: char| match c {
        '两' => Some(2),
        _ => "零一二三四五六七八九"
            .chars()
            .position(|d| d == c)
            .map(|d| d as u32),
    };
    let (mut hundreds, mut tens, mut ones) = (0, 0, 0);
    if let (Some(h), Some('百')) = (text.get(k).and_then(|&c| digit(c)), text.get(k + 1)) {
        hundreds = h;
        k += 2;
        // 一百二 is 120; 一百零五 is 105.
        if text.get(k) == Some(&'零') {
            k += 1;
        } else if let Some(t) = text.get(k).and_then(|&c| digit(c)) {
            if text.get(k + 1) != Some(&'十') {
                return Some((hundreds * 100 + t * 10, k + 1));
            }
        }
    }
    if let Some(t) = text
        .get(k)
        .and_then(|&c| digit(c))
        .filter(|_| text.get(k + 1) == Some(&'十'))
    {
        tens = t;
        k += 2;
    } else if text.get(k) == Some(&'十') {
        tens = 1;
        k += 1;
    }
    if let Some(o) = text.get(k).and_then(|&c| digit(c)) {
        ones = o;
        k += 1;
    }
    let value = hundreds * 100 + tens * 10 + ones;
    (k > i && value >= 10).then_some((value, k))
}

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

/// Whether the 多 at `k` is part of a quantity (两个多月, 十多天, 三天多): after a count and
/// before a unit of time or weight, or after a count and its unit, it says "more than", not
/// "much" (十多次 stays "many": how often is the complaint).
fn quantity_more(text: &[char], k: usize) -> bool {
    let count =
        |j: usize| text[j].is_ascii_digit() || "一二两三四五六七八九十百千几个".contains(text[j]);
    text[k] == '多'
        && k > 0
        && ((count(k - 1)
            && (k + 1 == text.len() || "年月周星礼天日小钟分秒斤岁".contains(text[k + 1])))
            || (k > 1 && "年月周天".contains(text[k - 1]) && count(k - 2)))
}

fn is_boundary(text: &[char], i: usize) -> bool {
    match text[i] {
        '，' | ',' | '。' | '！' | '!' | '？' | '?' | '；' | ';' | '\n' | '～' | '~' | ' '
        | '　' | '：' | ':' | '…' | '（' | '）' | '(' | ')' => true,
        // A full stop, but not the point of 38.5.
        '.' => {
            !(i > 0
                && i + 1 < text.len()
                && text[i - 1].is_ascii_digit()
                && text[i + 1].is_ascii_digit())
        }
        _ => false,
    }
}

/// Full-width digits and letters to ASCII, ASCII to lower case: 38．5 and ３８度 read as 38.5.
/// A symptom and where the text says it, in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub symptom: String,
    pub start: usize,
    pub end: usize,
}

pub fn fold(text: &str) -> Vec<char> {
    text.chars()
        .map(|c| match c {
            '０'..='９' | 'Ａ'..='Ｚ' | 'ａ'..='ｚ' | '．' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            _ => c.to_ascii_lowercase(),
        })
        .collect()
}

fn bigrams(s: &[char]) -> HashSet<(char, char)> {
    s.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Dice coefficient of two bigram sets (0 when either is empty).
fn dice(x: &HashSet<(char, char)>, y: &HashSet<(char, char)>) -> f64 {
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    2.0 * x.intersection(y).count() as f64 / (x.len() + y.len()) as f64
}

/// Character-bigram Dice similarity of two strings.
pub fn similarity(a: &[char], b: &[char]) -> f64 {
    dice(&bigrams(a), &bigrams(b))
}

impl Reader {
    pub fn new(lexicon: &Lexicon) -> Self {
        let names: Vec<String> = lexicon.symptoms.iter().map(|s| s.name.clone()).collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut surfaces = HashMap::new();
        let mut bigram_table = Vec::new();
        let mut by_sound: HashMap<String, Vec<(usize, Vec<char>)>> = HashMap::new();
        for (i, s) in lexicon.symptoms.iter().enumerate() {
            for surface in s.surfaces() {
                surfaces.insert(surface.to_string(), i);
                let c = chars(surface);
                bigram_table.push((i, bigrams(&c)));
                if let Some(key) = sound(&c) {
                    by_sound.entry(key).or_default().push((i, c));
                }
            }
        }
        let language = &lexicon.language;
        let mut parts = HashMap::new();
        for (i, p) in language.parts.iter().enumerate() {
            parts.insert(p.key.clone(), i);
            for w in &p.words {
                parts.insert(w.clone(), i);
            }
        }
        let mut sensations = HashMap::new();
        for (i, s) in language.sensations.iter().enumerate() {
            sensations.insert(s.key.clone(), i);
            for w in &s.words {
                sensations.insert(w.clone(), i);
            }
        }
        let mut compose = HashMap::new();
        for ((part, sensation), symptom) in &language.compositions {
            let p = language.parts.iter().position(|x| &x.key == part);
            let s = language.sensations.iter().position(|x| &x.key == sensation);
            if let (Some(p), Some(s), Some(&y)) = (p, s, index.get(symptom.as_str())) {
                compose.insert((p, s), y);
            }
        }
        let verbs: HashMap<String, usize> = language
            .verbs
            .iter()
            .filter_map(|(v, s)| Some((v.clone(), *index.get(s.as_str())?)))
            .collect();
        let longest = |m: &HashMap<String, usize>| m.keys().map(|k| k.chars().count()).max();
        let set =
            |kind: WordKind| -> HashSet<String> { language.words(kind).iter().cloned().collect() };
        let plain: HashMap<String, usize> = language
            .words(WordKind::Plain)
            .iter()
            .map(|w| (w.clone(), 0))
            .collect();
        let mut negations = set(WordKind::Negation);
        negations.extend(["不", "没", "没有", "无"].map(String::from));
        Reader {
            longest_surface: longest(&surfaces).unwrap_or(0),
            longest_part: longest(&parts).unwrap_or(0),
            longest_sensation: longest(&sensations).unwrap_or(0),
            longest_verb: longest(&verbs).unwrap_or(0),
            longest_plain: longest(&plain).unwrap_or(0),
            plain,
            part_systems: language.parts.iter().map(|p| p.system.clone()).collect(),
            verbs,
            fever: index.get("发热").copied(),
            high_pressure: index.get("血压升高").copied(),
            slow_heart: index.get("心动过缓").copied(),
            fast_heart: index.get("心悸").copied(),
            constipation: index.get("便秘").copied(),
            night_urination: index.get("夜尿增多").copied(),
            names,
            surfaces,
            parts,
            sensations,
            compose,
            negations,
            negation_ends: set(WordKind::NegationEnd),
            bigrams: bigram_table,
            longest_sound: by_sound
                .values()
                .flatten()
                .map(|(_, c)| c.len())
                .max()
                .unwrap_or(0),
            by_sound,
            char_uses: {
                let mut uses: HashMap<char, usize> = HashMap::new();
                let words = lexicon
                    .symptoms
                    .iter()
                    .flat_map(|s| s.surfaces())
                    .chain(
                        language
                            .parts
                            .iter()
                            .flat_map(|p| p.words.iter().map(String::as_str)),
                    )
                    .chain(
                        language
                            .sensations
                            .iter()
                            .flat_map(|s| s.words.iter().map(String::as_str)),
                    );
                for word in words {
                    for c in word.chars().collect::<HashSet<_>>() {
                        *uses.entry(c).or_default() += 1;
                    }
                }
                uses
            },
        }
    }

    /// The longest entry of `table` starting at `i`, within the clause: (entry, length).
    fn longest_at(
        table: &HashMap<String, usize>,
        longest: usize,
        text: &[char],
        i: usize,
        min: usize,
    ) -> Option<(usize, usize)> {
        let mut end = i;
        while end < text.len() && end - i < longest && !is_boundary(text, end) {
            end += 1;
        }
        (min..=end - i).rev().find_map(|len| {
            let s: String = text[i..i + len].iter().collect();
            table.get(&s).map(|&v| (v, len))
        })
    }

    fn word_at(set: &HashSet<String>, text: &[char], i: usize) -> Option<usize> {
        (1..=4.min(text.len() - i)).rev().find(|&len| {
            let s: String = text[i..i + len].iter().collect();
            set.contains(&s)
        })
    }

    /// The folded text with the characters of its plain words (一低头就晕: 低头 names no
    /// head; 石头, 空腹, 突然) made filler, so no reading takes them; positions are kept.
    /// A longer surface that starts at the same place wins (夜里突然憋醒 stays a symptom).
    fn prepare(&self, text: &str) -> Vec<char> {
        let mut text = fold(text);
        let mut i = 0;
        while i < text.len() {
            let plain = Self::longest_at(&self.plain, self.longest_plain, &text, i, 2);
            let surface = Self::longest_at(&self.surfaces, self.longest_surface, &text, i, 2);
            match (plain, surface) {
                (Some((_, p)), Some((_, s))) if s >= p => i += s,
                (Some((_, p)), _) => {
                    text[i..i + p].fill(PLAIN);
                    i += p;
                }
                (None, Some((_, s))) => i += s,
                (None, None) => i += 1,
            }
        }
        text
    }

    /// Whether a real negation (not 不停, 受不了...) ends exactly at `end` or starts at `at`.
    fn negation_at(&self, text: &[char], at: usize) -> Option<usize> {
        let len = Self::word_at(&self.negations, text, at)?;
        // A word that only looks negative overlapping the negation makes it no negation: 都没
        // of 都没事, 都没来了 (a period that has not come).
        let fake = NOT_NEGATIONS.iter().any(|w| {
            let w = chars(w);
            (at.saturating_sub(w.len() - 1)..at + len)
                .any(|from| from + w.len() <= text.len() && text[from..][..w.len()] == w[..])
        });
        (!fake).then_some(len)
    }

    /// Every mention in `text`, negated ones included (flagged), overlaps resolved longest
    /// first, in text order.
    pub fn scan(&self, text: &str) -> Vec<Found> {
        self.scan_prepared(&self.prepare(text))
    }

    /// [`Self::scan`] on text [`Self::prepare`] has made ready.
    fn scan_prepared(&self, text: &[char]) -> Vec<Found> {
        let mut candidates = Vec::new();
        for i in 0..text.len() {
            if let Some((symptom, len)) =
                Self::longest_at(&self.surfaces, self.longest_surface, text, i, 2)
            {
                candidates.push(self.found(symptom, i, i + len, How::Surface, false));
            }
            candidates.extend(self.composition_at(text, i));
            if let Some(c) = self.temperature_at(text, i) {
                candidates.push(c);
            }
            if let Some(c) = self.measurement_at(text, i) {
                candidates.push(c);
            }
            if let Some(c) = self.days_without_stool_at(text, i) {
                candidates.push(c);
            }
            if let Some(c) = self.radiation_at(text, i) {
                candidates.push(c);
            }
            if let Some(c) = self.night_urination_at(text, i) {
                candidates.push(c);
            }
            if let Some(c) = self.verb_at(text, i) {
                candidates.push(c);
            }
            if let Some(c) = self.sound_at(text, i) {
                candidates.push(c);
            }
        }
        candidates.extend(self.elided(text));
        // Longest first, then surfaces before compositions before temperatures.
        candidates.sort_by_key(|c| (std::cmp::Reverse(c.end - c.start), c.how, c.start));
        let mut taken: Vec<Found> = Vec::new();
        for c in candidates {
            if taken.iter().all(|t| c.end <= t.start || c.start >= t.end) {
                taken.push(c);
            }
        }
        taken.sort_by_key(|f| f.start);
        for k in 0..taken.len() {
            let negated = taken[k].negated
                || self.negated_before(text, taken[k].start, &taken)
                || self.negated_after(text, taken[k].end)
                || (k > 0
                    && taken[k - 1].negated
                    && self.joined(text, taken[k - 1].end, taken[k].start));
            taken[k].negated = negated;
        }
        taken
    }

    /// The symptoms `text` affirms: canonical names, each once, in text order.
    pub fn symptoms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.scan(text) {
            if !f.negated && !out.contains(&f.symptom) {
                out.push(f.symptom);
            }
        }
        out
    }

    fn found(&self, symptom: usize, start: usize, end: usize, how: How, negated: bool) -> Found {
        Found {
            symptom: self.names[symptom].clone(),
            start,
            end,
            how,
            negated,
        }
    }

    /// A body part at `i`, at most [`MAX_GAP`] filler characters, then a sensation that
    /// composes with it; and further sensations of the same part joined to it (眼睛又红又痒:
    /// 眼红 and 眼痒). A negation among the fillers (头不疼) marks the mention negated.
    fn composition_at(&self, text: &[char], i: usize) -> Vec<Found> {
        let mut out = Vec::new();
        let Some((part, plen)) = Self::longest_at(&self.parts, self.longest_part, text, i, 1)
        else {
            return out;
        };
        let mut k = i + plen;
        let mut gap = 0;
        let mut negated = false;
        // A list separator ends the part's reach too (糖尿病、血脂 is no 血尿).
        while k < text.len() && gap <= MAX_GAP && !is_boundary(text, k) && text[k] != '、' {
            let mut skip = 1;
            if let Some((sensation, slen)) =
                Self::longest_at(&self.sensations, self.longest_sensation, text, k, 1)
                    .filter(|_| !quantity_more(text, k))
            {
                if let Some(&symptom) = self.compose.get(&(part, sensation)) {
                    // A chained sensation's span is its own word: a longer reading of the
                    // same characters (嗓子疼和低烧: 低烧 is a fever) wins over it.
                    let from = if out.is_empty() { i } else { k };
                    out.push(self.found(symptom, from, k + slen, How::Composition, negated));
                    // The next sensation may hang on the same part: 又红又痒, 又干又苦.
                    k += slen;
                    gap = 0;
                    continue;
                }
                // A sensation word that means nothing for this part is read whole: 脸上一片
                // 红斑 is no 斑 of the face.
                skip = slen;
            }
            // Another body part: the sensation that follows is that part's.
            if k > i + plen
                && Self::longest_at(&self.parts, self.longest_part, text, k, 1).is_some()
            {
                break;
            }
            if self.negation_at(text, k).is_some() {
                negated = true;
            }
            if Self::word_at(&self.negation_ends, text, k).is_some() {
                negated = false;
            }
            k += skip;
            gap += skip;
            // After a first sensation, only a short joiner may lead to the next.
            if !out.is_empty() && gap > 2 {
                break;
            }
        }
        out
    }

    /// A pinyin-input typo of a surface: the same sounds, one character different (投疼 for
    /// 头疼, 法烧 for 发烧), longest first. The stray character must be one the symptom
    /// vocabulary hardly uses, or any homophone would do: 一会儿痛 is not 耳痛, 脸通红 not 脸痛.
    fn sound_at(&self, text: &[char], i: usize) -> Option<Found> {
        let mut end = i;
        while end < text.len() && end - i < self.longest_sound && !is_boundary(text, end) {
            end += 1;
        }
        (2..=end - i).rev().find_map(|len| {
            let span = &text[i..i + len];
            let key = sound(span)?;
            let (symptom, _) = self.by_sound.get(&key)?.iter().find(|(_, surface)| {
                let mut differ = surface.iter().zip(span).filter(|(a, b)| a != b);
                matches!((differ.next(), differ.next()), (Some((_, typed)), None)
                    if self.char_uses.get(typed).copied().unwrap_or(0) <= MAX_TYPO_CHAR_USES
                        && !FUNCTION_CHARS.contains(*typed))
            })?;
            Some(self.found(*symptom, i, i + len, How::Sound, false))
        })
    }

    /// A verb used as a symptom: after 老/总/一直/又/还/就 (老咳, 又吐), before 得/不停/起来 (喘得
    /// 厉害, 咳个不停, 烧起来了), or with a count after 了 (拉了五六次, 咳了三天).
    fn verb_at(&self, text: &[char], i: usize) -> Option<Found> {
        let (symptom, len) = Self::longest_at(&self.verbs, self.longest_verb, text, i, 1)?;
        let before: String = text[i.saturating_sub(2)..i].iter().collect();
        let after: String = text[i + len..(i + len + 5).min(text.len())]
            .iter()
            .collect();
        let adverb = [
            "老", "总", "老是", "总是", "一直", "又", "还", "就", "经常", "常",
        ]
        .iter()
        .any(|a| before.ends_with(a));
        let manner = ["得", "个不停", "不停", "起来", "个没完"]
            .iter()
            .any(|a| after.starts_with(a));
        let counted = after.strip_prefix('了').is_some_and(|rest| {
            let mut chars = rest.chars();
            let first = chars.next();
            first.is_some_and(|c| c.is_ascii_digit() || "一两二三四五六七八九十几好".contains(c))
                && rest.chars().take(4).any(|c| "次回趟天遍阵宿晚".contains(c))
        });
        (adverb || manner || counted).then(|| self.found(symptom, i, i + len, How::Verb, false))
    }

    /// Sensations whose body part was said in an earlier clause (眼睛很干，还发红: the eye is
    /// red too): the clause's first sensation word, when its clause names no body part,
    /// composes with the last body part named before it.
    fn elided(&self, text: &[char]) -> Vec<Found> {
        let mut out = Vec::new();
        let mut last_part = None;
        let mut clause_has_part = false;
        let mut clause_done = false;
        let mut i = 0;
        while i < text.len() {
            if is_boundary(text, i) {
                clause_has_part = false;
                clause_done = false;
                i += 1;
                continue;
            }
            if let Some((part, len)) = Self::longest_at(&self.parts, self.longest_part, text, i, 1)
            {
                last_part = Some(part);
                clause_has_part = true;
                i += len;
                continue;
            }
            if !clause_has_part && !clause_done {
                if let (Some(part), Some((sensation, len))) = (
                    last_part,
                    Self::longest_at(&self.sensations, self.longest_sensation, text, i, 1),
                ) {
                    clause_done = true;
                    if let Some(&symptom) = self.compose.get(&(part, sensation)) {
                        out.push(self.found(symptom, i, i + len, How::Composition, false));
                    }
                    i += len;
                    continue;
                }
            }
            i += 1;
        }
        out
    }

    /// The body systems (`body_parts.csv`) of the body parts `text` names, in text order.
    pub fn part_systems(&self, text: &str) -> Vec<String> {
        let text = self.prepare(text);
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            match Self::longest_at(&self.parts, self.longest_part, &text, i, 1) {
                Some((part, len)) => {
                    out.push(self.part_systems[part].clone());
                    i += len;
                }
                None => i += 1,
            }
        }
        out
    }

    /// Whether `text` names a sensation before any body part of its clause (疼得睡不着,
    /// 又酸又胀): a complaint about whatever was already being talked about.
    pub fn bare_sensation(&self, text: &str) -> bool {
        let text = self.prepare(text);
        let mut part = false;
        let mut i = 0;
        while i < text.len() {
            if is_boundary(&text, i) {
                part = false;
                i += 1;
                continue;
            }
            if let Some((_, len)) = Self::longest_at(&self.parts, self.longest_part, &text, i, 1) {
                part = true;
                i += len;
                continue;
            }
            if !part
                && Self::longest_at(&self.sensations, self.longest_sensation, &text, i, 1).is_some()
            {
                return true;
            }
            i += 1;
        }
        false
    }

    /// A blood pressure or a heart rate named at `i` and given within a few characters:
    /// 血压160/100, 量了血压是150／95, 高压165, 低压100, 心率才48, 脉搏一百二十.
    fn measurement_at(&self, text: &[char], i: usize) -> Option<Found> {
        const CUES: &[(&str, Vital)] = &[
            ("血压", Vital::Pressure),
            ("高压", Vital::Systolic),
            ("低压", Vital::Diastolic),
            ("心率", Vital::Rate),
            ("心跳", Vital::Rate),
            ("脉搏", Vital::Rate),
            ("脉率", Vital::Rate),
        ];
        let (cue, vital) = CUES.iter().find(|(cue, _)| {
            let cue = chars(cue);
            text.len() >= i + cue.len() && text[i..i + cue.len()] == cue[..]
        })?;
        // A few words between the name and the number: 才, 只有, 量了一下是, 都到.
        let mut k = i + cue.chars().count();
        let limit = (k + 6).min(text.len());
        while k < limit && number_at(text, k).is_none() && !is_boundary(text, k) {
            k += 1;
        }
        let (first, mut end) = number_at(text, k)?;
        let second = match text.get(end) {
            Some('/' | '／' | '、' | '-') => {
                let (second, after) = number_at(text, end + 1)?;
                end = after;
                Some(second)
            }
            _ => None,
        };
        let symptom = match vital {
            Vital::Pressure | Vital::Systolic
                if (140..=300).contains(&first)
                    || second.is_some_and(|d| (90..=200).contains(&d)) =>
            {
                self.high_pressure
            }
            Vital::Diastolic if (90..=200).contains(&first) => self.high_pressure,
            Vital::Rate if (20..60).contains(&first) => self.slow_heart,
            Vital::Rate if (101..=250).contains(&first) => self.fast_heart,
            _ => None,
        }?;
        Some(self.found(symptom, i, end, How::Measurement, false))
    }

    /// A sensation that spreads to another body part: 疼到后背, 麻到手指, 一直窜到肩膀. The
    /// part it reaches has the complaint too (上腹疼, 疼到后背: 背痛 as well).
    fn radiation_at(&self, text: &[char], i: usize) -> Option<Found> {
        const REACHES: &[&str] = &[
            "放射到",
            "牵扯到",
            "牵连到",
            "连着",
            "窜到",
            "传到",
            "扯到",
            "到",
            "至",
        ];
        let (sensation, slen) =
            Self::longest_at(&self.sensations, self.longest_sensation, text, i, 1)?;
        let mut k = i + slen;
        // 疼得连着后背, 疼得一直窜到: a few particles before the verb of reaching.
        while k < text.len() && k - (i + slen) < 4 && "得了着一直都".contains(text[k]) {
            k += 1;
        }
        let reach = REACHES
            .iter()
            .map(|r| chars(r))
            .find(|r| text[k..].starts_with(r))?;
        k += reach.len();
        while k < text.len() && "了整个那这边左右两侧的".contains(text[k]) && k - i < slen + 8
        {
            k += 1;
        }
        let (part, plen) = Self::longest_at(&self.parts, self.longest_part, text, k, 1)?;
        let symptom = *self.compose.get(&(part, sensation))?;
        Some(self.found(symptom, k, k + plen, How::Composition, false))
    }

    /// Getting up at night to pass water, counted: 晚上要起来四五次尿尿, 夜里起来尿好几趟, and
    /// 尿尿不疼，就是次数多，晚上也要起好几次 (the water named earlier in the message). A night
    /// word, then in the same clause a count (次, 趟, 回) and either a word for urine or 起
    /// after an earlier one; waking up often (晚上醒好几次) is not it.
    fn night_urination_at(&self, text: &[char], i: usize) -> Option<Found> {
        const NIGHT: &[&str] = &[
            "晚上",
            "夜里",
            "半夜",
            "夜间",
            "晚间",
            "每晚",
            "一晚上",
            "一夜",
        ];
        const URINE: &[&str] = &["尿", "小便", "厕所", "解手", "起夜"];
        let symptom = self.night_urination?;
        let night = NIGHT
            .iter()
            .map(|w| chars(w))
            .find(|w| text[i..].starts_with(w))?;
        let from = i + night.len();
        let mut end = from;
        while end < text.len() && end - from < 10 && !is_boundary(text, end) {
            end += 1;
        }
        let window = &text[from..end];
        let count = window.iter().rposition(|c| "次趟回".contains(*c))?;
        let contains = |haystack: &[char], word: &str| {
            let w = chars(word);
            haystack.windows(w.len()).any(|x| x == w.as_slice())
        };
        let urine_here = URINE.iter().any(|u| contains(window, u));
        let urine_before = URINE.iter().any(|u| contains(&text[..i], u));
        let gets_up = window.contains(&'起');
        (urine_here || (urine_before && gets_up))
            .then(|| self.found(symptom, i, from + count + 1, How::Composition, false))
    }

    /// Days without a bowel movement, which is constipation however it is said: 三四天没大便,
    /// 好几天都没拉屎, 两天没有解大便. The negation is the complaint here, not a denial.
    fn days_without_stool_at(&self, text: &[char], i: usize) -> Option<Found> {
        const STOOL: &[&str] = &[
            "大便",
            "拉屎",
            "解大便",
            "排便",
            "拉大便",
            "上大号",
            "解手",
            "拉粑粑",
        ];
        let constipation = self.constipation?;
        if !matches!(text.get(i), Some('天' | '日')) {
            return None;
        }
        let mut k = i + 1;
        while k < text.len() && k - i <= 3 && "都也还".contains(text[k]) {
            k += 1;
        }
        let negation: &[char] = if text[k..].starts_with(&['没', '有']) {
            &['没', '有']
        } else if text.get(k) == Some(&'没') {
            &['没']
        } else {
            return None;
        };
        k += negation.len();
        let stool = STOOL
            .iter()
            .map(|w| chars(w))
            .find(|w| text[k..].starts_with(w))?;
        Some(self.found(constipation, i, k + stool.len(), How::Surface, false))
    }

    /// A body temperature of a fever: 38度5, 38.5, 39°, 三十八度二, 40度.
    fn temperature_at(&self, text: &[char], i: usize) -> Option<Found> {
        let fever = self.fever?;
        if i > 0 && (text[i - 1].is_ascii_digit() || text[i - 1] == '.') {
            return None;
        }
        let digit = |c: char| c.to_digit(10);
        let cn = |c: char| "零一二三四五六七八九".chars().position(|d| d == c);
        let (whole, mut k) = match (text.get(i), text.get(i + 1), text.get(i + 2)) {
            (Some(&a), Some(&b), _) if digit(a).is_some() && digit(b).is_some() => {
                (digit(a)? * 10 + digit(b)?, i + 2)
            }
            (Some('三'), Some('十'), Some(&c)) if cn(c).is_some() => (30 + cn(c)? as u32, i + 3),
            (Some('四'), Some('十'), _) => (40, i + 2),
            _ => return None,
        };
        if text.get(k).is_some_and(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut tenths = 0;
        let mut marked = false;
        let mut unit = false;
        if text.get(k) == Some(&'.') && text.get(k + 1).is_some_and(|c| c.is_ascii_digit()) {
            tenths = digit(text[k + 1])?;
            k += 2;
            marked = true;
        }
        if matches!(text.get(k), Some('度' | '°' | '℃')) {
            k += 1;
            marked = true;
            unit = true;
            if text.get(k) == Some(&'c') {
                k += 1;
            }
            if let Some(d) = text
                .get(k)
                .and_then(|&c| digit(c).or(cn(c).map(|x| x as u32)))
            {
                tenths = d;
                k += 1;
            }
        }
        // A decimal without 度 is a temperature only where one is being talked about
        // (烧到39.2, 体温37.8), not 38.5公斤.
        if !unit && tenths != 0 {
            let before: String = text[i.saturating_sub(6)..i].iter().collect();
            if !["烧", "体温", "温度", "量", "测", "热"]
                .iter()
                .any(|w| before.contains(w))
            {
                return None;
            }
        }
        let tenths_total = whole * 10 + tenths;
        (marked && (373..=425).contains(&tenths_total))
            .then(|| self.found(fever, i, k, How::Temperature, false))
    }

    /// A negation at most [`NEGATION_REACH`] characters before `start`, in the same clause,
    /// not cancelled by 但是/可是..., and not itself inside another mention.
    fn negated_before(&self, text: &[char], start: usize, mentions: &[Found]) -> bool {
        let from = start.saturating_sub(NEGATION_REACH + 3);
        let mut negated = false;
        for k in from..start {
            if is_boundary(text, k) {
                negated = false;
                continue;
            }
            if Self::word_at(&self.negation_ends, text, k).is_some() {
                negated = false;
            }
            let inside = mentions.iter().any(|m| m.start <= k && k < m.end);
            if inside {
                continue;
            }
            if let Some(len) = self.negation_at(text, k) {
                if start - (k + len).min(start) <= NEGATION_REACH {
                    negated = true;
                }
            }
        }
        negated
    }

    /// 发烧倒是没有 / 咳嗽没有: a negation right after the mention that ends its clause.
    fn negated_after(&self, text: &[char], end: usize) -> bool {
        let mut k = end;
        while k < text.len() && POST_FILLERS.contains(text[k]) {
            k += 1;
        }
        let Some(len) = Self::word_at(&self.negations, text, k).filter(|_| k < text.len()) else {
            return false;
        };
        let after = k + len;
        let after = if text.get(after) == Some(&'了') {
            after + 1
        } else {
            after
        };
        after >= text.len() || is_boundary(text, after) || matches!(text[after], '啊' | '呢' | '的')
    }

    /// Whether only list joiners (and negations) stand between `from` and `to`.
    fn joined(&self, text: &[char], from: usize, to: usize) -> bool {
        to >= from
            && to - from <= 3
            && text[from..to]
                .iter()
                .all(|c| LIST_JOINERS.contains(*c) || "不没有".contains(*c))
    }

    /// The canonical symptoms a tagged span of `text` stands for: what the readings find
    /// inside it, else the most similar surface when it is similar enough; none otherwise.
    pub fn normalise(&self, span: &str) -> Vec<(String, How)> {
        let mut inside: Vec<(String, How)> = Vec::new();
        for f in self.scan(span).into_iter().filter(|f| !f.negated) {
            if !inside.iter().any(|(s, _)| *s == f.symptom) {
                inside.push((f.symptom, f.how));
            }
        }
        if !inside.is_empty() {
            return inside;
        }
        let grams = bigrams(&fold(span));
        let best = self
            .bigrams
            .iter()
            .map(|(symptom, surface)| (dice(&grams, surface), *symptom))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((score, symptom)) if score >= MIN_SIMILARITY => {
                vec![(self.names[symptom].clone(), How::Similarity)]
            }
            _ => Vec::new(),
        }
    }

    /// The symptoms of a message: what the readings find in `text`, and what the tagger's
    /// `spans` (substrings of `text`) normalise to where no reading covers them. Negated
    /// mentions are left out; spans that map to nothing are returned apart, for the log.
    pub fn read_with_spans(&self, text: &str, spans: &[String]) -> (Vec<String>, Vec<String>) {
        let (located, dropped) = self.locate_with_spans(text, spans);
        let mut symptoms: Vec<String> = Vec::new();
        for l in located {
            if !symptoms.contains(&l.symptom) {
                symptoms.push(l.symptom);
            }
        }
        (symptoms, dropped)
    }

    /// Like [`Reader::read_with_spans`], each symptom with the characters of `text` that
    /// said it (a symptom said twice comes twice), for a reviewer that judges mentions in
    /// their context.
    pub fn locate_with_spans(&self, text: &str, spans: &[String]) -> (Vec<Located>, Vec<String>) {
        let prepared = self.prepare(text);
        let found = self.scan_prepared(&prepared);
        let mut located: Vec<Located> = found
            .iter()
            .filter(|f| !f.negated)
            .map(|f| Located {
                symptom: f.symptom.clone(),
                start: f.start,
                end: f.end,
            })
            .collect();
        let folded = fold(text);
        let mut dropped = Vec::new();
        for span in spans {
            let span_chars = fold(span);
            let at = (0..=folded.len().saturating_sub(span_chars.len()))
                .find(|&i| folded[i..].starts_with(&span_chars));
            if let Some(at) = at {
                let end = at + span_chars.len();
                // Inside a plain word (发热 of 发热门诊): no symptom at all.
                if end > at && prepared[at..end].iter().all(|&c| c == PLAIN) {
                    dropped.push(span.clone());
                    continue;
                }
                // A reading already covers it (and decided about its negation).
                if found.iter().any(|f| f.start < end && at < f.end) {
                    continue;
                }
                if self.negated_before(&folded, at, &found) || self.negated_after(&folded, end) {
                    continue;
                }
            }
            let mapped = self.normalise(span);
            if mapped.is_empty() {
                dropped.push(span.clone());
            }
            let (start, end) = at.map_or((0, folded.len()), |a| (a, a + span_chars.len()));
            located.extend(mapped.into_iter().map(|(symptom, _)| Located {
                symptom,
                start,
                end,
            }));
        }
        (located, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Reader {
        Reader::new(&Lexicon::shipped().unwrap())
    }

    /// Each (text, want, not): reading text finds want and not not.
    fn reads_one_not_other(r: &Reader, cases: &[(&str, &str, &str)]) {
        for (text, want, not) in cases {
            let found = read(r, text);
            assert!(found.contains(&want.to_string()), "{text}: {found:?}");
            assert!(!found.contains(&not.to_string()), "{text}: {found:?}");
        }
    }

    fn read(r: &Reader, text: &str) -> Vec<String> {
        r.symptoms(text)
    }

    #[test]
    fn words_between_the_body_part_and_the_complaint() {
        let r = reader();
        for (text, symptom) in [
            ("嗓子眼儿有点疼", "咽痛"),
            ("肚子又开始疼了", "腹痛"),
            ("眼睛老是很干", "眼干"),
            ("身上起疹子", "皮疹"),
            ("一点胃口都没有", "食欲不振"),
            ("从昨晚到现在拉了五六次", "腹泻"),
            ("老咳，晚上更厉害", "咳嗽"),
            ("喉咙好痒", "咽痒"),
            ("腰这几天特别酸", "腰痛"),
        ] {
            assert_eq!(read(&r, text), [symptom], "{text}");
        }
        // The body part said once, for two complaints.
        for (text, symptoms) in [
            ("眼睛很干，还发红", ["眼干", "眼红"]),
            ("嗓子疼，还有点痒", ["咽痛", "咽痒"]),
            ("眼睛又红又痒", ["眼红", "眼痒"]),
            ("嘴巴又干又苦", ["口干", "口苦"]),
        ] {
            assert_eq!(read(&r, text), symptoms, "{text}");
        }
    }

    #[test]
    fn a_sensation_word_is_read_whole_and_belongs_to_its_part() {
        let r = reader();
        reads_one_not_other(
            &r,
            &[
                // 红斑 is a symptom of its own, not the face's pigment (斑).
                ("左边脸上长了块红斑", "红斑", "色素沉着"),
                // A cold sweat is sweating, not feeling cold.
                ("出了一身虚汗", "多汗", "畏寒"),
                // Woken up by breathlessness is not waking early.
                ("睡到一半被憋醒了", "夜间憋醒", "早醒"),
                // Blisters on one hand are blisters; on hands and feet, hand-foot-mouth's.
                ("右手上起了几个水泡", "水疱", "手足疱疹"),
                ("手脚心冒出些小泡", "手足疱疹", "水疱"),
                ("嘴巴里长了两个泡，喝水都疼", "口腔溃疡", "水疱"),
            ],
        );
        for (text, symptom) in [
            ("脖子好像粗了一圈", "颈部肿大"),
            ("他总是吐", "呕吐"),
            ("这两天总是吐酸水", "反酸"),
        ] {
            assert_eq!(read(&r, text), [symptom], "{text}");
        }
        assert!(read(&r, "小便少，颜色深得很").contains(&"尿色加深".to_string()));
        // The snoring sound in the breath is a wheeze; a period that has not come for more
        // than two months has stopped (没来 is the complaint, not a denial, and 多 of a
        // quantity is "more than", not "a lot"); aching legs are the muscles.
        for (text, symptom) in [
            ("他呼吸起来有呼噜呼噜的声音", "喘息"),
            ("大姨妈两个多月都没来了", "闭经"),
            ("这两天两条腿酸得很", "肌肉疼痛"),
        ] {
            assert_eq!(read(&r, text), [symptom], "{text}");
        }
    }

    #[test]
    fn plain_words_are_no_body_part_and_no_complaint() {
        let r = reader();
        reads_one_not_other(
            &r,
            &[
                ("一抬头脖子就疼", "颈部疼痛", "头痛"),
                ("头几天嗓子疼，现在好了点", "咽痛", "头痛"),
                ("他突然眼睛痛起来", "眼痛", "眼球突出"),
                ("空腹的时候胃疼", "上腹痛", "腹痛"),
            ],
        );
        assert_eq!(read(&r, "发热门诊在几楼"), Vec::<String>::new());
        // The tagger's span inside a plain word is no symptom either.
        let (located, dropped) = r.locate_with_spans("发热门诊在几楼", &["发热".to_string()]);
        assert!(located.is_empty(), "{located:?}");
        assert_eq!(dropped, ["发热"]);
        // A surface that holds a plain word is still that symptom.
        assert_eq!(read(&r, "夜里突然憋醒"), ["夜间憋醒"]);
    }

    #[test]
    fn blood_pressure_and_heart_rate_are_read_from_their_figures() {
        let r = reader();
        for (text, want) in [
            ("早上在家测的血压是158/96", vec!["血压升高"]),
            ("血压135/95", vec!["血压升高"]),
            ("高压一百六十五", vec!["血压升高"]),
            ("低压一直在100左右", vec!["血压升高"]),
            ("血压120/80，正常吧", vec![]),
            ("体检说我心率只有五十二", vec!["心动过缓"]),
            ("脉搏一百二", vec!["心悸"]),
            ("心率72", vec![]),
            ("我体重160斤", vec![]),
        ] {
            let found = read(&r, text);
            for w in &want {
                assert!(found.contains(&w.to_string()), "{text}: {found:?}");
            }
            for unwanted in ["血压升高", "心动过缓", "心悸"] {
                if !want.contains(&unwanted) {
                    assert!(!found.contains(&unwanted.to_string()), "{text}: {found:?}");
                }
            }
        }
        assert!(read(&r, "胃那块儿疼，疼到后背去了").contains(&"背痛".to_string()));
        assert!(read(&r, "心口痛得一直窜到左边肩膀").contains(&"肩部疼痛".to_string()));
        assert!(!read(&r, "疼到晚上才好").contains(&"背痛".to_string()));
        for text in [
            "半夜得爬起来上三次厕所",
            "夜里小便五六回",
            "小便倒还顺畅，一晚上要起来三回",
        ] {
            assert!(read(&r, text).contains(&"夜尿增多".to_string()), "{text}");
        }
        for text in [
            "晚上醒好几次",
            "晚上咳嗽好几次",
            "白天尿多，晚上睡觉醒好几次",
        ] {
            assert!(!read(&r, text).contains(&"夜尿增多".to_string()), "{text}");
        }
        for text in ["娃五天没大便了", "好几天都没拉屎", "两天没有解大便"] {
            assert!(read(&r, text).contains(&"便秘".to_string()), "{text}");
        }
        assert!(!read(&r, "今天没拉肚子").contains(&"便秘".to_string()));
        assert_eq!(number_at(&chars("一百零五"), 0), Some((105, 4)));
        assert_eq!(number_at(&chars("四十八次"), 0), Some((48, 3)));
        assert_eq!(number_at(&chars("1234"), 0), None);
    }

    #[test]
    fn a_fever_is_read_from_its_temperature() {
        let r = reader();
        for text in [
            "烧到38度5了",
            "体温39.2",
            "量了一下37度6",
            "三十八度二",
            "40度",
        ] {
            assert_eq!(read(&r, text), ["发热"], "{text}");
        }
        for text in [
            "体温36度8",
            "今年35岁",
            "38.5公斤",
            "吃了3片",
            "拉了一下门",
            "把饭烧了",
        ] {
            assert!(read(&r, text).is_empty(), "{text}: {:?}", read(&r, text));
        }
    }

    #[test]
    fn negations_govern_what_they_scope_and_nothing_else() {
        let r = reader();
        for text in [
            "没有发烧",
            "没有发烧、咳嗽",
            "也不太咳嗽",
            "头不疼",
            "发烧倒是没有",
            "一点也不痒",
        ] {
            assert!(read(&r, text).is_empty(), "{text}: {:?}", read(&r, text));
        }
        assert_eq!(read(&r, "不发烧，但是咳嗽"), ["咳嗽"]);
        assert_eq!(read(&r, "咳个不停"), ["咳嗽"]);
        assert_eq!(read(&r, "不停地咳嗽"), ["咳嗽"]);
        assert_eq!(read(&r, "疼得受不了，头疼"), ["头痛"]);
        assert_eq!(read(&r, "不知道为什么头疼"), ["头痛"]);
    }

    #[test]
    fn full_width_digits_and_several_symptoms_in_order() {
        let r = reader();
        assert_eq!(read(&r, "我头痛发烧"), ["头痛", "发热"]);
        assert_eq!(read(&r, "烧到３８度５，拉肚子"), ["发热", "腹泻"]);
        // Typed by sound: one character off, same pinyin.
        assert_eq!(read(&r, "投疼了一上午"), ["头痛"]);
        assert_eq!(read(&r, "今天法烧了"), ["发热"]);
        assert_eq!(read(&r, "肚子痛，一会儿好一会儿痛"), ["腹痛"]);
        assert_eq!(read(&r, "咳得小脸通红"), ["咳嗽"]);
        assert!(read(&r, "夜间可加重").is_empty());
        assert_eq!(read(&r, "嗓子疼和低烧"), ["咽痛", "发热"]);
        assert!(read(&r, "增加糖尿病、血脂异常的风险").is_empty());
    }

    #[test]
    fn tagged_spans_map_to_the_lexicon_or_are_dropped() {
        let r = reader();
        assert_eq!(r.normalise("脑袋疼")[0].0, "头痛");
        assert_eq!(r.normalise("嗓子眼儿有点疼")[0].0, "咽痛");
        assert!(r.normalise("吃完饭").is_empty());
        assert!(r.normalise("晚上").is_empty());
        // A span the readings do not cover, one character off an alias.
        assert_eq!(r.normalise("流清鼻涕了")[0].0, "流鼻涕");
        let (symptoms, dropped) =
            r.read_with_spans("吃完饭就想吐", &["吃完饭".to_string(), "想吐".to_string()]);
        assert_eq!(
            (symptoms, dropped),
            (vec!["恶心".to_string()], vec!["吃完饭".to_string()])
        );
        // A span a negation governs adds nothing.
        let (symptoms, _) = r.read_with_spans("没有腹鸣", &["腹鸣".to_string()]);
        assert!(symptoms.is_empty());
    }

    #[test]
    fn similarity_is_symmetric_and_bounded() {
        let (a, b) = (chars("嗓子疼"), chars("嗓子痛"));
        assert_eq!(similarity(&a, &b), similarity(&b, &a));
        assert_eq!(similarity(&a, &a), 1.0);
        assert_eq!(similarity(&a, &chars("拉肚子")), 0.0);
    }
}
