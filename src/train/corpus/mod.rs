//! Training data written here: the medical lexicon and the generators that turn it into
//! labelled sentences (tagger) and sentence pairs (relevance). Offline only: nothing on the
//! serving path reads this module, except the doctor's embedded graph built from the lexicon.

pub mod lexicon;
pub mod ner;
pub mod relevance;

pub use lexicon::Lexicon;
