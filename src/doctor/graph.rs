//! The knowledge graph `(:Symptom {name})-[:SYMPTOM_OF]->(:Disease {name, department})`:
//! which diseases explain a patient's symptoms, ranked by how many of them each explains.
//! Behind a trait: a Bolt server (Neo4j, ArcadeDB) through neo4rs, or the embedded graph
//! built from the lexicon in `data/` when no graph URL is given.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use neo4rs::{query, ConfigBuilder, Graph as BoltGraph};

use super::connect::Reconnecting;
use crate::lexicon::Lexicon;

/// A disease that explains some of the symptoms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiseaseMatch {
    pub name: String,
    pub department: String,
    /// The patient's symptoms this disease has.
    pub matched: Vec<String>,
    /// How many symptoms the graph links to this disease in all.
    pub linked: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("knowledge graph: {0}")]
pub struct GraphError(pub String);

#[async_trait::async_trait]
pub trait KnowledgeGraph: Send + Sync {
    /// Diseases linked to any of `symptoms` (canonical names), the ones explaining the most
    /// symptoms first (ties by the share of their own symptoms, then name), at most `limit`.
    async fn diseases_for(
        &self,
        symptoms: &[String],
        limit: usize,
    ) -> Result<Vec<DiseaseMatch>, GraphError>;
    fn describe(&self) -> String;
}

/// Sorts by how many symptoms each disease explains, then by the share of its own linked
/// symptoms they are (of two diseases that explain two symptoms, the one with four in all
/// fits better than the one with twelve), then by name, and keeps `limit`; each disease's
/// matched symptoms in name order, whichever backend found them.
fn rank(mut found: Vec<DiseaseMatch>, limit: usize) -> Vec<DiseaseMatch> {
    for d in &mut found {
        d.matched.sort();
    }
    found.sort_by(|a, b| {
        b.matched
            .len()
            .cmp(&a.matched.len())
            // a.matched / a.linked > b.matched / b.linked, without division.
            .then_with(|| {
                (b.matched.len() * a.linked.max(1)).cmp(&(a.matched.len() * b.linked.max(1)))
            })
            .then_with(|| a.name.cmp(&b.name))
    });
    found.truncate(limit);
    found
}

/// The lexicon as an in-process graph.
pub struct EmbeddedGraph {
    by_symptom: BTreeMap<String, Vec<String>>,
    departments: BTreeMap<String, String>,
    linked: BTreeMap<String, usize>,
}

impl EmbeddedGraph {
    pub fn new(lexicon: &Lexicon) -> Self {
        let mut by_symptom: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut linked: BTreeMap<String, usize> = BTreeMap::new();
        for (disease, symptom) in &lexicon.links {
            by_symptom
                .entry(symptom.clone())
                .or_default()
                .push(disease.clone());
            *linked.entry(disease.clone()).or_default() += 1;
        }
        EmbeddedGraph {
            by_symptom,
            linked,
            departments: lexicon
                .diseases
                .iter()
                .map(|d| (d.name.clone(), d.department.clone()))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl KnowledgeGraph for EmbeddedGraph {
    async fn diseases_for(
        &self,
        symptoms: &[String],
        limit: usize,
    ) -> Result<Vec<DiseaseMatch>, GraphError> {
        let mut matched: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in symptoms {
            for d in self.by_symptom.get(s).into_iter().flatten() {
                matched.entry(d).or_default().insert(s);
            }
        }
        let found = matched
            .into_iter()
            .map(|(name, symptoms)| DiseaseMatch {
                name: name.to_string(),
                department: self.departments.get(name).cloned().unwrap_or_default(),
                matched: symptoms.into_iter().map(String::from).collect(),
                linked: self.linked.get(name).copied().unwrap_or(0),
            })
            .collect();
        Ok(rank(found, limit))
    }

    fn describe(&self) -> String {
        "the embedded graph from data/".into()
    }
}

/// Where a Bolt graph server is and how to log in.
#[derive(Debug, Clone)]
pub struct BoltSettings {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    /// Bound on connecting and on each query.
    pub timeout: Duration,
}

/// A Bolt server through neo4rs. Connects lazily and again after a failure (at most once a
/// second, see [`Reconnecting`]), so the facade starts while the server is down and
/// recovers when it returns.
pub struct BoltKnowledgeGraph {
    settings: BoltSettings,
    graph: Reconnecting<BoltGraph>,
}

/// Every disease linked to one of the symptoms, with how many links it has in all; ranked
/// here by [`rank`], the same way for every backend.
const DISEASES_QUERY: &str =
    "MATCH (s:Symptom)-[:SYMPTOM_OF]->(d:Disease) WHERE s.name IN $symptoms \
     WITH d, collect(s.name) AS matched \
     MATCH (a:Symptom)-[:SYMPTOM_OF]->(d) \
     RETURN d.name AS disease, d.department AS department, matched, count(a) AS linked";

impl BoltKnowledgeGraph {
    pub fn new(settings: BoltSettings) -> Self {
        BoltKnowledgeGraph {
            settings,
            graph: Reconnecting::new(),
        }
    }

    async fn graph(&self) -> Result<BoltGraph, GraphError> {
        let s = &self.settings;
        let connect = || async {
            let mut config = ConfigBuilder::default()
                .uri(s.url.as_str())
                .user(s.user.as_str())
                .password(s.password.as_str())
                .max_connections(8);
            if let Some(db) = &s.database {
                config = config.db(db.as_str());
            }
            let config = config
                .build()
                .map_err(|e| format!("invalid settings for {}: {e}", s.url))?;
            tokio::time::timeout(s.timeout, BoltGraph::connect(config))
                .await
                .map_err(|_| format!("connecting to {} timed out", s.url))?
                .map_err(|e| format!("cannot connect to {}: {e}", s.url))
        };
        self.graph.get(connect).await.map_err(GraphError)
    }

    /// Forgets the connection after a failure, so a later call reconnects.
    async fn reset(&self) {
        self.graph.reset().await;
    }

    async fn query_diseases(
        &self,
        symptoms: &[String],
        limit: usize,
    ) -> Result<Vec<DiseaseMatch>, GraphError> {
        let graph = self.graph().await?;
        let q = query(DISEASES_QUERY).param("symptoms", symptoms.to_vec());
        let mut rows = graph
            .execute(q)
            .await
            .map_err(|e| GraphError(format!("query failed: {e}")))?;
        let mut found = Vec::new();
        while let Some(row) = rows
            .next()
            .await
            .map_err(|e| GraphError(format!("reading results failed: {e}")))?
        {
            let field = |k: &str| {
                row.get::<String>(k)
                    .map_err(|e| GraphError(format!("result field `{k}`: {e}")))
            };
            found.push(DiseaseMatch {
                name: field("disease")?,
                department: row.get::<String>("department").unwrap_or_default(),
                matched: row
                    .get::<Vec<String>>("matched")
                    .map_err(|e| GraphError(format!("result field `matched`: {e}")))?,
                linked: row
                    .get::<i64>("linked")
                    .map_err(|e| GraphError(format!("result field `linked`: {e}")))?
                    .try_into()
                    .unwrap_or(0),
            });
        }
        Ok(rank(found, limit))
    }

    /// Every (disease, symptom) link the graph holds.
    pub async fn links(&self) -> Result<BTreeSet<(String, String)>, GraphError> {
        let graph = self.graph().await?;
        let mut rows = graph
            .execute(query(
                "MATCH (s:Symptom)-[:SYMPTOM_OF]->(d:Disease) RETURN d.name AS disease, s.name AS symptom",
            ))
            .await
            .map_err(|e| GraphError(format!("query failed: {e}")))?;
        let mut links = BTreeSet::new();
        while let Some(row) = rows
            .next()
            .await
            .map_err(|e| GraphError(format!("reading results failed: {e}")))?
        {
            let field = |k: &str| {
                row.get::<String>(k)
                    .map_err(|e| GraphError(format!("result field `{k}`: {e}")))
            };
            links.insert((field("disease")?, field("symptom")?));
        }
        Ok(links)
    }

    /// Merges (disease, symptom) links into the graph, nodes included, idempotently
    /// (MERGE); returns how many were new and how many it already had.
    pub async fn merge_links(
        &self,
        links: &BTreeSet<(String, String)>,
    ) -> Result<(usize, usize), GraphError> {
        let existing = self.links().await?;
        let new: Vec<&(String, String)> = links.iter().filter(|l| !existing.contains(*l)).collect();
        let graph = self.graph().await?;
        for chunk in new.chunks(200) {
            let rows: Vec<HashMap<String, String>> = chunk
                .iter()
                .map(|(d, s)| {
                    HashMap::from([
                        ("disease".to_string(), d.clone()),
                        ("symptom".to_string(), s.clone()),
                    ])
                })
                .collect();
            graph
                .run(
                    query(
                        "UNWIND $rows AS r MERGE (s:Symptom {name: r.symptom}) MERGE (d:Disease {name: r.disease}) MERGE (s)-[:SYMPTOM_OF]->(d)",
                    )
                    .param("rows", rows),
                )
                .await
                .map_err(|e| GraphError(format!("writing failed: {e}")))?;
        }
        Ok((new.len(), links.len() - new.len()))
    }

    /// Writes the lexicon into the graph, idempotently (MERGE), in batches: symptoms,
    /// diseases with their department and description, and the links. Returns the number
    /// of links written.
    pub async fn load_lexicon(&self, lexicon: &Lexicon) -> Result<usize, GraphError> {
        let graph = self.graph().await?;
        let run = |q: neo4rs::Query| {
            let graph = graph.clone();
            async move {
                graph
                    .run(q)
                    .await
                    .map_err(|e| GraphError(format!("writing failed: {e}")))
            }
        };
        for chunk in lexicon.symptoms.chunks(200) {
            let rows: Vec<HashMap<String, String>> = chunk
                .iter()
                .map(|s| {
                    HashMap::from([
                        ("name".into(), s.name.clone()),
                        ("body_part".into(), s.body_part.clone()),
                        ("aliases".into(), s.aliases.join("|")),
                    ])
                })
                .collect();
            run(query("UNWIND $rows AS r MERGE (s:Symptom {name: r.name}) SET s.body_part = r.body_part, s.aliases = r.aliases").param("rows", rows)).await?;
        }
        for chunk in lexicon.diseases.chunks(200) {
            let rows: Vec<HashMap<String, String>> = chunk
                .iter()
                .map(|d| {
                    HashMap::from([
                        ("name".into(), d.name.clone()),
                        ("department".into(), d.department.clone()),
                        ("description".into(), d.description.clone()),
                    ])
                })
                .collect();
            run(query("UNWIND $rows AS r MERGE (d:Disease {name: r.name}) SET d.department = r.department, d.description = r.description").param("rows", rows)).await?;
        }
        for chunk in lexicon.links.chunks(200) {
            let rows: Vec<HashMap<String, String>> = chunk
                .iter()
                .map(|(d, s)| {
                    HashMap::from([("disease".into(), d.clone()), ("symptom".into(), s.clone())])
                })
                .collect();
            run(query(
                "UNWIND $rows AS r MATCH (s:Symptom {name: r.symptom}) MATCH (d:Disease {name: r.disease}) MERGE (s)-[:SYMPTOM_OF]->(d)",
            )
            .param("rows", rows))
            .await?;
        }
        Ok(lexicon.links.len())
    }
}

#[async_trait::async_trait]
impl KnowledgeGraph for BoltKnowledgeGraph {
    async fn diseases_for(
        &self,
        symptoms: &[String],
        limit: usize,
    ) -> Result<Vec<DiseaseMatch>, GraphError> {
        let result =
            tokio::time::timeout(self.settings.timeout, self.query_diseases(symptoms, limit))
                .await
                .unwrap_or_else(|_| {
                    Err(GraphError(format!(
                        "{} did not answer within {:?}",
                        self.settings.url, self.settings.timeout
                    )))
                });
        if result.is_err() {
            self.reset().await;
        }
        result
    }

    fn describe(&self) -> String {
        format!("the Bolt graph at {}", self.settings.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_graph_ranks_by_symptoms_explained() {
        let lexicon = Lexicon::shipped().unwrap();
        let graph = EmbeddedGraph::new(&lexicon);
        let found = graph
            .diseases_for(&["发热".into(), "咳嗽".into(), "流鼻涕".into()], 5)
            .await
            .unwrap();
        assert_eq!(found.len(), 5);
        assert_eq!(found[0].matched.len(), 3, "{found:?}");
        assert!(found
            .windows(2)
            .all(|w| w[0].matched.len() >= w[1].matched.len()));
        assert!(found.iter().any(|d| d.name == "感冒"));
        assert!(graph
            .diseases_for(&["不存在的症状".into()], 5)
            .await
            .unwrap()
            .is_empty());
    }
}
