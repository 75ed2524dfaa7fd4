//! Training data written here: generators that turn the medical lexicon ([`crate::lexicon`])
//! into labelled sentences (tagger), sentence pairs (relevance) and candidate spans
//! (entity review). Offline only: nothing on
//! the serving path reads this module, and it must never read the hand-written evaluation
//! set in `data/eval/`.

pub mod ner;
pub mod relevance;
pub mod review;
