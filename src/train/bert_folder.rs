//! Writing BERT version folders: the tokenizer, `config.json` and `model.safetensors` in the
//! layout the servables load. Used by the trainer and by tests that need a small model.
//! It writes folders only; it never loads or serves one (that is `crate::models`).

use std::collections::HashMap;
use std::path::Path;

use candle_nn::VarMap;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationParams};

use crate::models::bert::config::BertConfig;

/// The special tokens a BERT vocabulary starts with, in this order.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A BERT WordPiece tokenizer over `vocab` (which must contain [`SPECIAL_TOKENS`]):
/// BERT normalisation (Chinese characters split apart), `[CLS] a [SEP] b [SEP]` pairs.
pub fn wordpiece_tokenizer(
    vocab: &[String],
    lowercase: bool,
    max_len: usize,
) -> anyhow::Result<Tokenizer> {
    let ids: HashMap<String, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let id = |t: &str| {
        ids.get(t)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("the vocabulary has no {t}"))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    id("[UNK]")?;
    id("[PAD]")?;
    let model = WordPiece::builder()
        .vocab(ids.into_iter().collect::<ahash::AHashMap<String, u32>>())
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow::anyhow!("building WordPiece: {e}"))?;
    let mut tokenizer = bert_pipeline(model, lowercase)?;
    finish(&mut tokenizer, cls, sep, max_len)?;
    Ok(tokenizer)
}

/// A tokenizer with `model` behind BERT's normaliser and pre-tokenizer.
fn bert_pipeline(model: WordPiece, lowercase: bool) -> anyhow::Result<Tokenizer> {
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    Ok(tokenizer)
}

/// `[CLS] a [SEP] b [SEP]` framing and truncation at `max_len` tokens.
fn finish(tokenizer: &mut Tokenizer, cls: u32, sep: u32, max_len: usize) -> anyhow::Result<()> {
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// A BERT WordPiece tokenizer whose vocabulary is learnt from `texts` by the tokenizers
/// crate's trainer. BERT's normaliser splits every Chinese character into a word of its
/// own, so for Chinese text the vocabulary is character-level.
pub fn train_wordpiece<S: AsRef<str> + Send>(
    texts: impl Iterator<Item = S> + Send,
    vocab_size: usize,
    lowercase: bool,
    max_len: usize,
) -> anyhow::Result<Tokenizer> {
    use tokenizers::models::wordpiece::WordPieceTrainer;
    use tokenizers::models::TrainerWrapper;
    use tokenizers::AddedToken;

    let mut tokenizer = bert_pipeline(WordPiece::default(), lowercase)?;
    let mut trainer = TrainerWrapper::WordPieceTrainer(
        WordPieceTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(1)
            .show_progress(false)
            .continuing_subword_prefix("##".into())
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(t.to_string(), true))
                    .collect(),
            )
            .build(),
    );
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| anyhow::anyhow!("training the WordPiece vocabulary: {e}"))?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| anyhow::anyhow!("the trained vocabulary lacks {t}"))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    finish(&mut tokenizer, cls, sep, max_len)?;
    Ok(tokenizer)
}

/// Writes `config.json`, `tokenizer.json` and `model.safetensors` into `dir` (created if
/// needed). Publish the folder by renaming it into the repository, never by writing in place.
pub fn write_version_folder(
    dir: &Path,
    config: &BertConfig,
    varmap: &VarMap,
    tokenizer: &Tokenizer,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config)?,
    )?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    varmap.save(dir.join("model.safetensors"))?;
    Ok(())
}
