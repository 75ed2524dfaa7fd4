//! The AI doctor of seed 000, as one thin service over the model server: for each message,
//! load the user's session (per entry point: WeChat and the chat API never share one); read
//! the message's symptoms (the tagger's spans and the lexicon's readings, all canonical names:
//! `crate::lexicon::reader`); if there was a previous message, decide whether this one
//! continues it (symptoms add up) or starts over (the session resets), by the lexicon's rule
//! (`relate`) and, where it cannot tell, the relevance model; ask the knowledge graph which
//! diseases explain the symptoms; answer in Chinese; save the session with an expiry. Every
//! dependency can fail: the answer then says what is unavailable, and the next message works
//! again once it is back.

pub use crate::connect;
pub mod eval;
pub mod expiring;
pub mod graph;
pub mod model_client;
pub mod pipeline;
pub use crate::redis_conn;
pub mod relate;
pub mod replay;
pub mod reply;
pub mod session;
pub mod web;
pub mod wechat;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use self::graph::{DiseaseMatch, KnowledgeGraph};
use self::model_client::{ModelClient, ModelError};
use self::relate::Relatedness;
use self::session::{Session, SessionKey, SessionStore};
use crate::lexicon::review::review_input;
use crate::lexicon::{Lexicon, Reader};

/// How many diseases a reply lists.
pub const TOP_DISEASES: usize = 3;

/// One answer, with what went into it (the JSON API returns all of it).
#[derive(Debug, Clone, Serialize)]
pub struct ChatReply {
    pub reply: String,
    /// Canonical symptoms of the whole conversation so far.
    pub symptoms: Vec<String>,
    pub diseases: Vec<DiseaseMatch>,
    /// Whether the message continued the previous one (`None`: there was none, or the
    /// relevance model could not be asked).
    pub related: Option<bool>,
    pub session: SessionInfo,
    /// Dependencies that failed while answering.
    pub degraded: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub turns: u32,
    /// Whether the previous state could be read (false when the session store is down).
    pub history: bool,
}

pub struct Doctor {
    models: ModelClient,
    sessions: Arc<dyn SessionStore>,
    graph: Arc<dyn KnowledgeGraph>,
    lexicon: Arc<Lexicon>,
    reader: Reader,
    relatedness: Relatedness,
    session_ttl: Duration,
    /// The entity review model's threshold, when the doctor asks it about each mention.
    review: Option<f32>,
}

impl Doctor {
    pub fn new(
        models: ModelClient,
        sessions: Arc<dyn SessionStore>,
        graph: Arc<dyn KnowledgeGraph>,
        lexicon: Arc<Lexicon>,
        session_ttl: Duration,
    ) -> Self {
        Doctor {
            models,
            sessions,
            graph,
            reader: Reader::new(&lexicon),
            relatedness: Relatedness::new(&lexicon),
            lexicon,
            session_ttl,
            review: None,
        }
    }

    /// Has the entity review model judge every symptom mention in its message before the
    /// graph lookup, and drops those it gives less than `threshold`. Off by default: on the
    /// hand-written evaluation set it costs recall (see the README).
    pub fn with_review(mut self, threshold: Option<f32>) -> Self {
        self.review = threshold;
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "models at {}, {}, {}",
            self.models.address(),
            self.sessions.describe(),
            self.graph.describe()
        )
    }

    /// Answers one message of the user `key` names (in its channel's key space only).
    pub async fn chat(&self, key: &SessionKey, text: &str) -> ChatReply {
        let text = text.trim();
        let mut degraded = Vec::new();
        let (previous, history) = match self.sessions.load(key).await {
            Ok(s) => (s, true),
            Err(e) => {
                tracing::warn!(user = %key, error = %e, "session store unavailable; answering without history");
                degraded.push(e.to_string());
                (None, false)
            }
        };

        // The message's own symptoms first: the relatedness rule needs them.
        let read = self.read(key, text).await;
        let new_symptoms = read.as_ref().map_or(&[][..], Vec::as_slice);
        let related = match &previous {
            Some(p) if !p.last_message.is_empty() => {
                match self.relatedness.decide(
                    &self.reader,
                    &p.last_message,
                    &p.symptoms,
                    text,
                    new_symptoms,
                ) {
                    Some((related, why)) => {
                        tracing::debug!(user = %key, related, ?why, "relatedness by the lexicon");
                        Some(related)
                    }
                    None => match self.models.related(&p.last_message, text).await {
                        Ok((related, probability)) => {
                            tracing::debug!(user = %key, related, probability, "relatedness by the model");
                            Some(related)
                        }
                        Err(e) => {
                            tracing::warn!(user = %key, error = %e, "relevance model unavailable; treating the message as a continuation");
                            degraded.push(e.to_string());
                            None
                        }
                    },
                }
            }
            _ => None,
        };
        // A message that is no complaint (thanks, a question about the hospital) is a new
        // topic, but it does not wipe the consultation: only a new complaint does.
        let continues = matches!((&previous, related), (Some(_), Some(true) | None))
            || (previous.is_some() && related == Some(false) && new_symptoms.is_empty());
        let carried = match (&previous, continues) {
            (Some(p), true) => p.symptoms.clone(),
            _ => Vec::new(),
        };
        let (symptoms, diseases, reply) = self.answer(key, read, carried, &mut degraded).await;

        let turns = match &previous {
            Some(p) if continues => p.turns + 1,
            _ => 1,
        };
        let session = Session {
            last_message: text.to_string(),
            symptoms: symptoms.clone(),
            turns,
        };
        if let Err(e) = self.sessions.save(key, &session, self.session_ttl).await {
            tracing::warn!(user = %key, error = %e, "could not save the session");
            // Once the load has failed, the store being down is already reported.
            if history {
                degraded.push(e.to_string());
            }
        }
        ChatReply {
            reply,
            symptoms,
            diseases,
            related,
            session: SessionInfo { turns, history },
            degraded,
        }
    }

    /// The canonical symptoms `text` affirms: the lexicon's readings of it, and the tagger's
    /// spans normalised to the lexicon. A span that maps to no symptom is dropped (and
    /// logged at debug level: it is the patient's words).
    async fn read(&self, user: &SessionKey, text: &str) -> Result<Vec<String>, ModelError> {
        let mentions = self.models.entities(text).await?;
        let spans: Vec<String> = mentions
            .into_iter()
            .filter(|m| m.kind == "SYM")
            .map(|m| m.text)
            .collect();
        let (located, dropped) = self.reader.locate_with_spans(text, &spans);
        if !dropped.is_empty() {
            tracing::debug!(user = %user, ?dropped, "tagged spans that name no symptom of the lexicon");
        }
        let located = match self.review {
            Some(threshold) if !located.is_empty() => {
                let chars: Vec<char> = text.chars().collect();
                let inputs: Vec<(String, String)> = located
                    .iter()
                    .map(|l| review_input(&chars, l.start, l.end))
                    .collect();
                match self.models.review(&inputs).await {
                    Ok(scores) => located
                        .into_iter()
                        .zip(scores)
                        .filter(|(l, p)| {
                            let keep = *p >= threshold;
                            if !keep {
                                tracing::debug!(user = %user, symptom = %l.symptom, probability = p, "the review model rejected a mention");
                            }
                            keep
                        })
                        .map(|(l, _)| l)
                        .collect(),
                    Err(e) => {
                        tracing::warn!(user = %user, error = %e, "entity review unavailable; keeping every mention");
                        located
                    }
                }
            }
            _ => located,
        };
        let mut symptoms: Vec<String> = Vec::new();
        for l in located {
            if !symptoms.contains(&l.symptom) {
                symptoms.push(l.symptom);
            }
        }
        Ok(symptoms)
    }

    /// The symptoms of the conversation (`carried` plus those `read` in the message), the
    /// diseases that explain them, and the reply; a failing dependency is added to
    /// `degraded` and answered with a fixed text.
    async fn answer(
        &self,
        user: &SessionKey,
        read: Result<Vec<String>, ModelError>,
        carried: Vec<String>,
        degraded: &mut Vec<String>,
    ) -> (Vec<String>, Vec<DiseaseMatch>, String) {
        let found = match read {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "tagger unavailable");
                degraded.push(e.to_string());
                return (carried, Vec::new(), reply::MODELS_DOWN.to_string());
            }
        };
        let mut symptoms = carried;
        for canonical in found {
            if !symptoms.contains(&canonical) {
                symptoms.push(canonical);
            }
        }
        if symptoms.is_empty() {
            return (symptoms, Vec::new(), reply::NO_SYMPTOMS.to_string());
        }
        match self.graph.diseases_for(&symptoms, TOP_DISEASES).await {
            Ok(diseases) => {
                let text = reply::diagnosis(&symptoms, &diseases, &self.lexicon);
                (symptoms, diseases, text)
            }
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "knowledge graph unavailable");
                degraded.push(e.to_string());
                let text = reply::graph_down(&symptoms);
                (symptoms, Vec::new(), text)
            }
        }
    }
}
