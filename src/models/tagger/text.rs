//! Characters in, entities out: the normalisation training and serving share, the
//! character vocabulary, and turning BIO tags into entities with character spans.
//! Training and serving must both go through these unchanged, or the tagger sees text it was
//! not trained on. Its only files are the `vocab.txt` paths it is given.

use std::collections::HashMap;
use std::path::Path;

pub const PAD: &str = "[PAD]";
pub const UNK: &str = "[UNK]";

/// The same for training and serving: full-width ASCII forms (，！Ａ１) become ASCII and ASCII
/// letters lower-case. One character maps to one character, so spans stay aligned.
pub fn normalize_char(c: char) -> char {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    c.to_ascii_lowercase()
}

/// Character → id. Id 0 is padding, id 1 every character not in the vocabulary.
#[derive(Debug, Clone)]
pub struct CharVocab {
    ids: HashMap<char, u32>,
    tokens: Vec<String>,
}

impl CharVocab {
    /// A vocabulary of the given characters (normalised, deduplicated, in first-seen order).
    pub fn build(chars: impl IntoIterator<Item = char>) -> Self {
        let mut vocab = CharVocab {
            ids: HashMap::new(),
            tokens: vec![PAD.to_string(), UNK.to_string()],
        };
        for c in chars {
            let c = normalize_char(c);
            if c.is_whitespace() || vocab.ids.contains_key(&c) {
                continue;
            }
            vocab.ids.insert(c, vocab.tokens.len() as u32);
            vocab.tokens.push(c.to_string());
        }
        vocab
    }

    /// Reads `vocab.txt`: one token per line, the line number is the id.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let tokens: Vec<String> = text.lines().map(str::to_string).collect();
        if tokens.len() < 2 || tokens[0] != PAD || tokens[1] != UNK {
            return Err(format!("must start with the lines {PAD} and {UNK}"));
        }
        let mut ids = HashMap::new();
        for (i, t) in tokens.iter().enumerate().skip(2) {
            let mut chars = t.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    ids.insert(c, i as u32);
                }
                _ => return Err(format!("line {}: `{t}` is not one character", i + 1)),
            }
        }
        Ok(CharVocab { ids, tokens })
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.tokens.join("\n") + "\n")
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= 2
    }

    pub fn id(&self, c: char) -> u32 {
        self.ids.get(&normalize_char(c)).copied().unwrap_or(1)
    }

    pub fn encode(&self, chars: &[char]) -> Vec<u32> {
        chars.iter().map(|&c| self.id(c)).collect()
    }
}

/// An entity found in a text: its characters, type and span `[start, end)` in characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    pub text: String,
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

/// BIO tags (`B-SYM`, `I-SYM`, `O`) → entities. An `I-` that does not continue an entity of
/// its type starts one, as most BIO readers do.
pub fn entities(chars: &[char], tags: &[&str]) -> Vec<Entity> {
    let mut found: Vec<Entity> = Vec::new();
    let mut open: Option<(String, usize)> = None;
    let close = |open: &mut Option<(String, usize)>, end: usize, found: &mut Vec<Entity>| {
        if let Some((kind, start)) = open.take() {
            found.push(Entity {
                text: chars[start..end].iter().collect(),
                kind,
                start,
                end,
            });
        }
    };
    for (i, tag) in tags.iter().enumerate() {
        let (prefix, kind) = tag.split_once('-').unwrap_or((tag, ""));
        match prefix {
            "B" => {
                close(&mut open, i, &mut found);
                open = Some((kind.to_string(), i));
            }
            "I" if open.as_ref().is_some_and(|(k, _)| k == kind) => {}
            "I" => {
                close(&mut open, i, &mut found);
                open = Some((kind.to_string(), i));
            }
            _ => close(&mut open, i, &mut found),
        }
    }
    close(&mut open, tags.len(), &mut found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bio_tags_become_entities_with_character_spans() {
        let chars: Vec<char> = "我头痛还发烧三天".chars().collect();
        let tags = [
            "O", "B-SYM", "I-SYM", "O", "B-SYM", "I-SYM", "B-DUR", "I-DUR",
        ];
        let found = entities(&chars, &tags);
        let summary: Vec<(&str, &str, usize, usize)> = found
            .iter()
            .map(|e| (e.text.as_str(), e.kind.as_str(), e.start, e.end))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("头痛", "SYM", 1, 3),
                ("发烧", "SYM", 4, 6),
                ("三天", "DUR", 6, 8)
            ]
        );
        // A stray I- starts an entity; a type change closes the previous one.
        let chars: Vec<char> = "abcd".chars().collect();
        let found = entities(&chars, &["I-SYM", "I-SYM", "I-DIS", "O"]);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].start, found[0].end, found[1].start, found[1].end),
            (0, 2, 2, 3)
        );
    }

    #[test]
    fn normalisation_and_vocabulary() {
        assert_eq!(normalize_char('，'), ',');
        assert_eq!(normalize_char('Ａ'), 'a');
        assert_eq!(normalize_char('头'), '头');
        let vocab = CharVocab::build("头痛，头".chars());
        assert_eq!(vocab.len(), 5);
        assert_eq!(vocab.encode(&['头', '痛', ',', '咳']), vec![2, 3, 4, 1]);
        let dir = tempfile::tempdir().unwrap();
        vocab.write(&dir.path().join("vocab.txt")).unwrap();
        let again = CharVocab::read(&dir.path().join("vocab.txt")).unwrap();
        assert_eq!(again.encode(&['头', '痛', '，']), vec![2, 3, 4]);
    }
}
