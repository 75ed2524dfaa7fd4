//! Offline training: the corpus generators, the training networks, the trainers and what
//! they share (seeded initialisation, the epoch loop with AdamW, gradient clipping, early
//! stopping, publishing a version folder). Compiled only with the `train` feature: the
//! model server never links it. It may read `crate::models` (a trained version must load
//! as the server loads it) but nothing on the serving path depends on it.

pub mod bert_folder;
pub mod classifier;
pub mod corpus;
pub mod fit;
pub mod init;
pub mod mlm;
pub mod tagger;
pub mod tagger_network;
