//! The Chinese medical lexicon in `data/`: symptoms with the words patients use for them,
//! diseases with their department, and which symptoms belong to which disease. The tagger's
//! corpus, the relevance corpus and the doctor's graph all come from it.
//! Read-only, and compiled only with the `doctor` or `train` feature: the model server never
//! links it. It talks to no model, store or graph server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

pub mod language;
pub mod reader;
pub mod review;

pub use language::{Language, WordKind};
pub use reader::Reader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symptom {
    pub name: String,
    /// Colloquial forms and synonyms (`头疼`, `脑袋疼` for `头痛`).
    pub aliases: Vec<String>,
    pub body_part: String,
}

impl Symptom {
    /// The name and every alias.
    pub fn surfaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Disease {
    pub name: String,
    pub department: String,
    pub body_system: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Lexicon {
    pub symptoms: Vec<Symptom>,
    pub diseases: Vec<Disease>,
    /// (disease, symptom) by canonical names.
    pub links: Vec<(String, String)>,
    /// Body parts, sensations and word classes of `language/` (empty when absent).
    pub language: Language,
    canonical: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct SymptomRow {
    name: String,
    aliases: String,
    body_part: String,
}

#[derive(Deserialize)]
struct LinkRow {
    disease: String,
    symptom: String,
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    reader
        .deserialize()
        .map(|row| row.map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

impl Lexicon {
    /// Reads `symptoms.csv`, `diseases.csv`, `disease_symptoms.csv` and (when present) the
    /// `language/` tables from `dir`, checking that every link names a known disease and
    /// symptom.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let symptoms: Vec<Symptom> = read::<SymptomRow>(&dir.join("symptoms.csv"))?
            .into_iter()
            .map(|r| Symptom {
                name: r.name,
                aliases: r
                    .aliases
                    .split('|')
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect(),
                body_part: r.body_part,
            })
            .collect();
        let diseases: Vec<Disease> = read(&dir.join("diseases.csv"))?;
        let links: Vec<(String, String)> = read::<LinkRow>(&dir.join("disease_symptoms.csv"))?
            .into_iter()
            .map(|r| (r.disease, r.symptom))
            .collect();
        let mut canonical = HashMap::new();
        for (i, s) in symptoms.iter().enumerate() {
            for surface in s.surfaces() {
                if canonical.insert(surface.to_string(), i).is_some() {
                    return Err(format!("symptoms.csv: `{surface}` appears twice"));
                }
            }
        }
        let disease_names: BTreeSet<&str> = diseases.iter().map(|d| d.name.as_str()).collect();
        for (d, s) in &links {
            if !disease_names.contains(d.as_str()) {
                return Err(format!("disease_symptoms.csv: unknown disease `{d}`"));
            }
            if !symptoms.iter().any(|x| &x.name == s) {
                return Err(format!("disease_symptoms.csv: unknown symptom `{s}`"));
            }
        }
        let language = Language::load(&dir.join("language"), |name| {
            symptoms.iter().any(|s| s.name == name)
        })?;
        Ok(Lexicon {
            symptoms,
            diseases,
            links,
            language,
            canonical,
        })
    }

    /// The lexicon shipped in the repository's `data/`.
    pub fn shipped() -> Result<Self, String> {
        Self::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
    }

    /// The canonical symptom a word stands for (`脑袋疼` → `头痛`).
    pub fn canonical_symptom(&self, surface: &str) -> Option<&Symptom> {
        self.canonical.get(surface).map(|&i| &self.symptoms[i])
    }

    pub fn disease(&self, name: &str) -> Option<&Disease> {
        self.diseases.iter().find(|d| d.name == name)
    }

    /// Disease → its symptoms.
    pub fn symptoms_by_disease(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (d, s) in &self.links {
            map.entry(d.as_str()).or_default().push(s.as_str());
        }
        map
    }

    /// Every character in the lexicon, for vocabularies.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        self.symptoms
            .iter()
            .flat_map(|s| s.surfaces().flat_map(str::chars).collect::<Vec<_>>())
            .chain(
                self.diseases
                    .iter()
                    .flat_map(|d| d.name.chars().collect::<Vec<_>>()),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_lexicon_loads_and_maps_aliases() {
        let lexicon = Lexicon::shipped().unwrap();
        assert!(lexicon.symptoms.len() >= 150);
        assert!(lexicon.diseases.len() >= 100);
        assert_eq!(lexicon.canonical_symptom("发烧").unwrap().name, "发热");
        assert_eq!(lexicon.canonical_symptom("头疼").unwrap().name, "头痛");
        let by_disease = lexicon.symptoms_by_disease();
        assert!(by_disease["感冒"].contains(&"咳嗽"));
        assert_eq!(lexicon.disease("感冒").unwrap().department, "呼吸内科");
    }
}
