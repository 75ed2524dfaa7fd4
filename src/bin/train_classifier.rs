//! `train_classifier`: trains a `BertForSequenceClassification` on texts or text pairs and
//! writes a version folder the server loads unchanged. Either fine-tunes a pre-trained BERT
//! folder (`--from`) or trains a small BERT from scratch with a WordPiece vocabulary learnt
//! from the corpus (`--fresh`, how the Chinese dialog-relevance model is made).
//! CLI wiring over `candle_serving::train`: it never talks to a running server, and writes
//! only the version folder given with `--out` (a hidden temporary folder, then one rename).
//!
//!     train_classifier train --corpus relevance --fresh --out model_repo/dialog_relevance/1
//!     train_classifier train --from model_repo/minilm/1 --train pairs.jsonl --dev dev.jsonl --out /tmp/m/1
//!     train_classifier evaluate --model model_repo/dialog_relevance/1 --corpus relevance
//!     train_classifier pretrain --text reviews.txt --corpus relevance --out /tmp/zh_mlm
//!     train_classifier train --corpus relevance --from /tmp/zh_mlm --out model_repo/dialog_relevance/2
//!     train_classifier train --corpus review --fresh --out model_repo/entity_review/1
//!     train_classifier evaluate --model model_repo/entity_review/1 --spans data/eval/review_spans.jsonl
//!     train_classifier predict --model model_repo/dialog_relevance/2 我头痛 还有点发烧

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_serving::train::fit::{publish_version, show_progress, Schedule};
use clap::{Args, Parser, Subcommand};

use candle_serving::lexicon::Lexicon;
use candle_serving::models::bert::config::BertConfig;
use candle_serving::servable::{Inputs, Outputs, Servable};
use candle_serving::tensor::{Tensor, TensorData};
use candle_serving::train::bert_folder::train_wordpiece;
use candle_serving::train::classifier::{train_classifier, ClassifierOptions, Example, Start};
use candle_serving::train::corpus::ner::Split;
use candle_serving::train::corpus::relevance::{PairGenerator, LABELS};
use candle_serving::train::corpus::review::{self, ReviewGenerator};

#[derive(Parser)]
#[command(
    name = "train_classifier",
    version,
    about = "Train and evaluate BERT sequence classifiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Data {
    /// A built-in corpus: `relevance` (Chinese patient-message pairs from the lexicon) or
    /// `review` (candidate symptom spans with their sentence, for the entity review model).
    #[arg(long, value_parser = ["relevance", "review"])]
    corpus: Option<String>,
    /// JSON lines {"text": ..., "text_pair": ... (optional), "label": ...} for training.
    #[arg(long)]
    train: Option<PathBuf>,
    /// JSON lines like --train, for dev accuracy and early stopping (or evaluation).
    #[arg(long)]
    dev: Option<PathBuf>,
    #[arg(long, default_value = "data")]
    lexicon: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 24000)]
    train_size: usize,
    #[arg(long, default_value_t = 2000)]
    dev_size: usize,
    #[arg(long, default_value_t = 4000)]
    test_size: usize,
}

#[derive(Subcommand)]
enum Command {
    Train(TrainArgs),
    /// Pre-train a small BERT from scratch with masked language modelling on plain text
    /// (one document per line), for `train --from` to fine-tune.
    Pretrain(PretrainArgs),
    /// Accuracy on the built-in corpus's test split or on a JSON-lines file (--dev).
    Evaluate(EvaluateArgs),
    /// Classify one text or one pair.
    Predict(PredictArgs),
}

// No `///` here: clap would show it as the help of `train`, which has none.
#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: Data,
    #[arg(long)]
    out: PathBuf,
    /// Fine-tune this pre-trained BERT folder.
    #[arg(long, conflicts_with = "fresh")]
    from: Option<PathBuf>,
    /// Train a small BERT from scratch.
    #[arg(long)]
    fresh: bool,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 3000)]
    vocab_size: usize,
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long, default_value_t = 3)]
    patience: usize,
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// Share of input tokens replaced by [UNK] while training (default 0.15 for --fresh,
    /// 0 when fine-tuning), so unseen characters do not throw the model.
    #[arg(long)]
    token_dropout: Option<f64>,
}

#[derive(Args)]
struct PretrainArgs {
    /// Plain-text files, one document per line (repeat the flag for several). Long lines
    /// are cut into sequences at sentence ends.
    #[arg(long, required = true)]
    text: Vec<PathBuf>,
    /// The texts of a built-in corpus's training split (`--corpus relevance`) join the
    /// pre-training text, so the vocabulary and the model know the wording fine-tuning sees.
    #[command(flatten)]
    data: Data,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 6000)]
    vocab_size: usize,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-4)]
    learning_rate: f64,
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// Use at most this many sequences (a random sample), to bound the run's time.
    #[arg(long, default_value_t = 200_000)]
    max_sequences: usize,
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    data: Data,
    #[arg(long)]
    model: PathBuf,
    /// Also print this many misclassified examples.
    #[arg(long, default_value_t = 0)]
    errors: usize,
    /// Evaluate an entity review model on hand-written candidate spans instead: JSON lines
    /// {"sentence", "span", "occurrence" (optional), "label": "symptom" | "not"}.
    #[arg(long)]
    spans: Option<PathBuf>,
}

#[derive(Args)]
struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    text: String,
    pair: Option<String>,
}

/// (text, text_pair, label) of each line of a JSON-lines file.
fn read_jsonl(path: &PathBuf) -> anyhow::Result<Vec<(String, Option<String>, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let at = || format!("{}:{}", path.display(), i + 1);
            let v: serde_json::Value = serde_json::from_str(line).with_context(at)?;
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
            Ok((
                field("text").with_context(|| format!("{}: no string `text`", at()))?,
                field("text_pair"),
                field("label").with_context(|| format!("{}: no string `label`", at()))?,
            ))
        })
        .collect()
}

/// Hand-written candidate spans as the review model reads them.
fn read_review_spans(path: &Path) -> anyhow::Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
        let sentence: Vec<char> = field("sentence").chars().collect();
        let occurrence = v.get("occurrence").and_then(|x| x.as_u64()).unwrap_or(0) as usize;
        let (start, end) =
            candle_serving::lexicon::review::locate(&sentence, field("span"), occurrence)
                .with_context(|| format!("{}: the span is not in the sentence", at()))?;
        let label = review::LABELS
            .iter()
            .position(|l| *l == field("label"))
            .with_context(|| format!("{}: label must be one of {:?}", at(), review::LABELS))?;
        let (span, context) = candle_serving::lexicon::review::review_input(&sentence, start, end);
        out.push(Example {
            text: span,
            pair: Some(context),
            label: label as u32,
        });
    }
    Ok(out)
}

/// Class labels, then the train, dev and test examples.
type Dataset = (Vec<String>, Vec<Example>, Vec<Example>, Vec<Example>);

/// (labels, train, dev, test) from the built-in corpus or files.
fn load_data(data: &Data) -> anyhow::Result<Dataset> {
    match data.corpus.as_deref() {
        Some("relevance") => {
            let lexicon = Lexicon::load(&data.lexicon).map_err(anyhow::Error::msg)?;
            let examples = |split, seed, n| -> Vec<Example> {
                PairGenerator::new(&lexicon, seed)
                    .corpus(split, n)
                    .into_iter()
                    .map(|p| Example {
                        text: p.first,
                        pair: Some(p.second),
                        label: p.related as u32,
                    })
                    .collect()
            };
            Ok((
                LABELS.iter().map(|s| s.to_string()).collect(),
                examples(Split::Train, data.seed, data.train_size),
                examples(Split::Dev, data.seed + 1, data.dev_size),
                examples(Split::Test, data.seed + 2, data.test_size),
            ))
        }
        Some("review") => {
            let lexicon = Lexicon::load(&data.lexicon).map_err(anyhow::Error::msg)?;
            let examples = |split, seed, n| -> Vec<Example> {
                ReviewGenerator::new(&lexicon, seed)
                    .corpus(split, n)
                    .into_iter()
                    .map(|c| Example {
                        text: c.span,
                        pair: Some(c.context),
                        label: c.real as u32,
                    })
                    .collect()
            };
            Ok((
                review::LABELS.iter().map(|s| s.to_string()).collect(),
                examples(Split::Train, data.seed, data.train_size),
                examples(Split::Dev, data.seed + 1, data.dev_size),
                examples(Split::Test, data.seed + 2, data.test_size),
            ))
        }
        _ => {
            let dev_file = data.dev.as_ref().context(
                "give --corpus relevance|review, or --dev (and --train) JSON-lines files",
            )?;
            let train = data
                .train
                .as_ref()
                .map(read_jsonl)
                .transpose()?
                .unwrap_or_default();
            let dev = read_jsonl(dev_file)?;
            let mut labels: Vec<String> = train
                .iter()
                .chain(&dev)
                .map(|(_, _, l)| l.clone())
                .collect();
            labels.sort();
            labels.dedup();
            let examples = |rows: Vec<(String, Option<String>, String)>| -> Vec<Example> {
                rows.into_iter()
                    .map(|(text, pair, label)| Example {
                        text,
                        pair,
                        label: labels
                            .iter()
                            .position(|l| *l == label)
                            .expect("every label was collected")
                            as u32,
                    })
                    .collect()
            };
            let (train, dev) = (examples(train), examples(dev));
            Ok((labels.clone(), train, dev.clone(), dev))
        }
    }
}

/// Loads the version folder `model` as the server would.
fn load_model(model: &Path) -> anyhow::Result<Arc<dyn Servable>> {
    candle_serving::models::load_servable(model)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))
}

/// Runs a classifier's default signature on texts, and on their pairs when given.
fn classify(
    servable: &dyn Servable,
    texts: Vec<String>,
    pairs: Option<Vec<String>>,
) -> anyhow::Result<Outputs> {
    let mut inputs = Inputs::from([("text".to_string(), Tensor::strings(texts))]);
    if let Some(pairs) = pairs {
        inputs.insert("text_pair".into(), Tensor::strings(pairs));
    }
    servable
        .run("serving_default", &inputs)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn main() -> anyhow::Result<()> {
    candle_serving::train::fit::keep_freed_memory();
    match Cli::parse().command {
        Command::Train(args) => train(args),
        Command::Pretrain(args) => pretrain(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Predict(args) => predict(args),
    }
}

/// Trains a classifier (fine-tuning --from, or --fresh from scratch) and writes a version folder.
fn train(args: TrainArgs) -> anyhow::Result<()> {
    let TrainArgs {
        data,
        out,
        from,
        fresh,
        hidden,
        layers,
        heads,
        vocab_size,
        epochs,
        batch_size,
        learning_rate,
        patience,
        max_len,
        token_dropout,
    } = args;
    if out.exists() {
        bail!(
            "{} exists; versions are immutable, pick a new folder",
            out.display()
        );
    }
    let started = Instant::now();
    let (labels, train, dev, test) = load_data(&data)?;
    if train.is_empty() {
        bail!("no training data: give --corpus relevance|review or --train FILE");
    }
    println!(
        "{} train / {} dev / {} test examples; classes {labels:?}",
        train.len(),
        dev.len(),
        test.len()
    );
    let start = match (from, fresh) {
        (Some(dir), _) => Start::Pretrained(dir),
        (None, true) => {
            let texts = train
                .iter()
                .flat_map(|e| std::iter::once(e.text.clone()).chain(e.pair.clone()));
            let tokenizer = train_wordpiece(texts, vocab_size, true, max_len)?;
            let config = BertConfig::fresh(
                tokenizer.get_vocab_size(true),
                hidden,
                layers,
                heads,
                max_len.max(16),
                tokenizer.token_to_id("[PAD]").unwrap_or(0),
            );
            println!(
                "WordPiece vocabulary of {} tokens learnt from the training texts",
                config.vocab_size
            );
            Start::Fresh { config, tokenizer }
        }
        (None, false) => bail!("give --from PRETRAINED_FOLDER or --fresh"),
    };
    let fine_tuning = matches!(start, Start::Pretrained(_));
    let options = ClassifierOptions {
        schedule: Schedule {
            epochs,
            batch_size,
            learning_rate: learning_rate.unwrap_or(if fine_tuning { 5e-5 } else { 5e-4 }),
            patience,
            seed: data.seed,
            ..ClassifierOptions::default().schedule
        },
        max_len,
        token_dropout: token_dropout.unwrap_or(if fine_tuning { 0.0 } else { 0.15 }),
        ..ClassifierOptions::default()
    };
    let (bar, progress) = show_progress(train.len().div_ceil(batch_size) as u64, |a: &f64| {
        format!("dev accuracy {a:.4}")
    })?;
    let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let trained = train_classifier(start, &label_refs, &train, &dev, &options, progress)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let test_accuracy = trained.accuracy(&test)?;
    println!(
        "held-out test accuracy {test_accuracy:.4} (best epoch {}, dev {:.4})",
        trained.best_epoch, trained.best_dev_accuracy
    );
    let record = serde_json::json!({
        "trainer": "train_classifier",
        "start": if fine_tuning { "pretrained" } else { "fresh" },
        "seed": data.seed,
        "examples": {"train": train.len(), "dev": dev.len(), "test": test.len()},
        "best_epoch": trained.best_epoch,
        "dev_accuracy": trained.best_dev_accuracy,
        "test_accuracy": test_accuracy,
        "training_seconds": seconds,
    });
    publish_version(&out, &record, |dir| trained.write(dir))?;
    println!("wrote {} in {seconds:.0} s", out.display());
    Ok(())
}

/// Pre-trains a small BERT with masked language modelling and writes a BERT folder.
fn pretrain(args: PretrainArgs) -> anyhow::Result<()> {
    use candle_serving::train::mlm::{pieces, pretrain, MlmOptions};
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    let PretrainArgs {
        text,
        data,
        out,
        hidden,
        layers,
        heads,
        vocab_size,
        epochs,
        batch_size,
        learning_rate,
        max_len,
        max_sequences,
    } = args;
    if out.exists() {
        bail!("{} exists; pick a new folder", out.display());
    }
    let started = Instant::now();
    let mut sequences = Vec::new();
    for path in &text {
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for line in content.lines() {
            sequences.extend(pieces(line, max_len.saturating_sub(2).max(8)));
        }
    }
    let from_files = sequences.len();
    if data.corpus.is_some() || data.train.is_some() {
        let (_, train, _, _) = load_data(&data)?;
        sequences.extend(
            train
                .into_iter()
                .flat_map(|e| std::iter::once(e.text).chain(e.pair)),
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(data.seed);
    sequences.shuffle(&mut rng);
    sequences.truncate(max_sequences);
    let dev_len = (sequences.len() / 50).clamp(1, 2000);
    if sequences.len() < 2 * dev_len {
        bail!("too little text: {} sequences", sequences.len());
    }
    let dev = sequences.split_off(sequences.len() - dev_len);
    println!(
        "{} sequences ({from_files} from the text files before sampling), {} held out",
        sequences.len(),
        dev.len()
    );
    let tokenizer = train_wordpiece(sequences.iter(), vocab_size, true, max_len)?;
    let config = BertConfig::fresh(
        tokenizer.get_vocab_size(true),
        hidden,
        layers,
        heads,
        max_len.max(16),
        tokenizer.token_to_id("[PAD]").unwrap_or(0),
    );
    println!("WordPiece vocabulary of {} tokens", config.vocab_size);
    let options = MlmOptions {
        schedule: Schedule {
            epochs,
            batch_size,
            learning_rate,
            patience: epochs,
            seed: data.seed,
            ..ClassifierOptions::default().schedule
        },
        max_len,
    };
    let (bar, progress) = show_progress(sequences.len().div_ceil(batch_size) as u64, |a| {
        format!("dev masked accuracy {a:.4}")
    })?;
    let trained = pretrain(config, tokenizer, &sequences, &dev, &options, progress)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let record = serde_json::json!({
        "trainer": "train_classifier pretrain",
        "objective": "masked language modelling",
        "texts": text.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "corpus": data.corpus,
        "sequences": sequences.len(),
        "seed": data.seed,
        "best_epoch": trained.best_epoch,
        "dev_masked_accuracy": trained.best_dev_accuracy,
        "training_seconds": seconds,
    });
    publish_version(&out, &record, |dir| trained.write(dir))?;
    println!(
        "masked-token accuracy {:.4} on held-out text (epoch {}); wrote {} in {seconds:.0} s",
        trained.best_dev_accuracy,
        trained.best_epoch,
        out.display()
    );
    Ok(())
}

/// Prints a saved classifier's accuracy on held-out examples and, with --errors, its mistakes.
fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let EvaluateArgs {
        data,
        model,
        errors,
        spans,
    } = args;
    let servable = load_model(&model)?;
    let (labels, test) = match spans {
        Some(path) => (
            review::LABELS.iter().map(|s| s.to_string()).collect(),
            read_review_spans(&path)?,
        ),
        None => {
            let (labels, _, _, test) = load_data(&Data {
                train_size: 0,
                ..data
            })?;
            (labels, test)
        }
    };
    let (mut correct, mut shown) = (0, 0);
    for chunk in test.chunks(64) {
        let texts = chunk.iter().map(|e| e.text.clone()).collect();
        let pairs = chunk.iter().map(|e| e.pair.clone()).collect();
        let out = classify(&*servable, texts, pairs)?;
        let TensorData::String(predicted) = out["labels"].data() else {
            bail!("no labels output")
        };
        for (p, e) in predicted.iter().zip(chunk) {
            if p.as_slice() == labels[e.label as usize].as_bytes() {
                correct += 1;
            } else if shown < errors {
                shown += 1;
                let got = String::from_utf8_lossy(p);
                println!(
                    "{} | {} → {got} (gold {})",
                    e.text,
                    e.pair.as_deref().unwrap_or(""),
                    labels[e.label as usize]
                );
            }
        }
    }
    println!(
        "{}: accuracy {:.4} on {} held-out examples",
        model.display(),
        correct as f64 / test.len() as f64,
        test.len()
    );
    Ok(())
}

/// Classifies one text or one pair with a saved classifier; prints the label and probabilities.
fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let servable = load_model(&args.model)?;
    let out = classify(&*servable, vec![args.text], args.pair.map(|p| vec![p]))?;
    let (TensorData::String(labels), TensorData::Float(p)) =
        (out["labels"].data(), out["probabilities"].data())
    else {
        bail!("not a classifier")
    };
    println!("{} {:?}", String::from_utf8_lossy(&labels[0]), p);
    Ok(())
}
