//! `train_ner`: trains the BiLSTM-CRF symptom tagger on sentences generated from the
//! lexicon in `data/`, evaluates it per entity type, and writes a version folder the server
//! loads unchanged.
//! CLI wiring over `candle_serving::train`: it never talks to a running server, and writes
//! only the version folder given with `--out` (a hidden temporary folder, then one rename).
//!
//!     train_ner train --out model_repo/symptom_ner/1
//!     train_ner evaluate --model model_repo/symptom_ner/1
//!     train_ner tag --model model_repo/symptom_ner/1 我最近总是头痛，还有点发烧

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use candle_serving::train::fit::{publish_version, show_progress, Schedule};
use clap::{Args, Parser, Subcommand};

use candle_serving::lexicon::Lexicon;
use candle_serving::models::open_weights;
use candle_serving::models::tagger::config::TaggerConfig;
use candle_serving::models::tagger::fast::FastTagger;
use candle_serving::models::tagger::text::{entities, CharVocab, Entity};
use candle_serving::train::corpus::ner::{Generator, Sample, Split, TAGS};
use candle_serving::train::tagger::{self, Report, TrainOptions};

#[derive(Parser)]
#[command(
    name = "train_ner",
    version,
    about = "Train and evaluate the BiLSTM-CRF symptom tagger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Corpus {
    /// The lexicon folder (symptoms.csv, diseases.csv, disease_symptoms.csv).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Seed of the corpus, the initial weights and the batch order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 30000)]
    train_size: usize,
    #[arg(long, default_value_t = 3000)]
    dev_size: usize,
    #[arg(long, default_value_t = 5000)]
    test_size: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Train and write a version folder.
    Train(TrainArgs),
    /// Entity-level precision, recall and F1 per type on a generated split.
    Evaluate(EvaluateArgs),
    /// Tag texts with a trained model.
    Tag(TagArgs),
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    corpus: Corpus,
    /// The version folder to create (it must not exist).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.005)]
    learning_rate: f64,
    #[arg(long, default_value_t = 4)]
    patience: usize,
    #[arg(long, default_value_t = 64)]
    embedding_dim: usize,
    #[arg(long, default_value_t = 64)]
    hidden_size: usize,
    /// Threads for candle's kernels. One is fastest for these small matrices.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    corpus: Corpus,
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_parser = ["dev", "test"], default_value = "test")]
    split: String,
    /// Also print this many sentences the model gets wrong.
    #[arg(long, default_value_t = 0)]
    errors: usize,
}

#[derive(Args)]
struct TagArgs {
    #[arg(long)]
    model: PathBuf,
    texts: Vec<String>,
}

/// The lexicon, then the train, dev and test sentences.
type Corpora = (Lexicon, Vec<Sample>, Vec<Sample>, Vec<Sample>);

fn corpora(corpus: &Corpus) -> anyhow::Result<Corpora> {
    let lexicon = Lexicon::load(&corpus.data).map_err(anyhow::Error::msg)?;
    let train = Generator::new(&lexicon, corpus.seed).corpus(Split::Train, corpus.train_size);
    let dev = Generator::new(&lexicon, corpus.seed + 1).corpus(Split::Dev, corpus.dev_size);
    let test = Generator::new(&lexicon, corpus.seed + 2).corpus(Split::Test, corpus.test_size);
    Ok((lexicon, train, dev, test))
}

fn print_report(title: &str, report: &Report) {
    println!("{title}");
    println!(
        "  {:<8} {:>9} {:>7} {:>7} {:>8}",
        "type", "precision", "recall", "F1", "support"
    );
    for (kind, s) in report
        .per_type
        .iter()
        .map(|(k, s)| (k.as_str(), s))
        .chain([("overall", &report.overall)])
    {
        println!(
            "  {kind:<8} {:>9.4} {:>7.4} {:>7.4} {:>8}",
            s.precision, s.recall, s.f1, s.support
        );
    }
}

fn report_json(report: &Report) -> serde_json::Value {
    let one = |s: &candle_serving::train::fit::Score| serde_json::json!({"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support});
    let mut map: serde_json::Map<String, serde_json::Value> = report
        .per_type
        .iter()
        .map(|(k, s)| (k.clone(), one(s)))
        .collect();
    map.insert("overall".into(), one(&report.overall));
    serde_json::Value::Object(map)
}

/// A trained tagger version folder, loaded for decoding.
struct SavedTagger {
    config: TaggerConfig,
    vocab: CharVocab,
    fast: FastTagger,
}

impl SavedTagger {
    /// The entities the tagger finds in `chars`.
    fn entities(&self, chars: &[char]) -> Vec<Entity> {
        let path = self.fast.decode(&self.vocab.encode(chars));
        let tags = &self.config.tags;
        let names: Vec<&str> = path.iter().map(|&t| tags[t].as_str()).collect();
        entities(chars, &names)
    }
}

/// Loads a trained tagger version folder.
fn load(model: &Path) -> anyhow::Result<SavedTagger> {
    let config: TaggerConfig =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json"))?)?;
    let vocab = CharVocab::read(&model.join(&config.vocab_file)).map_err(anyhow::Error::msg)?;
    let vb = open_weights(model).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fast = FastTagger::load(&config, &vb)?;
    Ok(SavedTagger {
        config,
        vocab,
        fast,
    })
}

fn main() -> anyhow::Result<()> {
    candle_serving::train::fit::keep_freed_memory();
    match Cli::parse().command {
        Command::Train(args) => train(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Tag(args) => tag(args),
    }
}

/// Trains the tagger on a generated corpus, scores it on the test split, writes a version folder.
fn train(args: TrainArgs) -> anyhow::Result<()> {
    let TrainArgs {
        corpus,
        out,
        epochs,
        batch_size,
        learning_rate,
        patience,
        embedding_dim,
        hidden_size,
        threads,
    } = args;
    if out.exists() {
        bail!(
            "{} exists; versions are immutable, pick a new folder",
            out.display()
        );
    }
    // candle reads this when its thread pool starts, before any tensor op.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let started = Instant::now();
    let (lexicon, train_set, dev_set, test_set) = corpora(&corpus)?;
    let vocab = CharVocab::build(
        train_set
            .iter()
            .flat_map(|s| s.chars.iter().copied())
            .chain(lexicon.chars()),
    );
    println!(
        "corpus: {} train / {} dev / {} test sentences (templates disjoint between splits); {} characters in the vocabulary",
        train_set.len(), dev_set.len(), test_set.len(), vocab.len()
    );
    for s in train_set.iter().take(3) {
        println!("  e.g. {}", s.text());
    }
    let options = TrainOptions {
        schedule: Schedule {
            epochs,
            batch_size,
            learning_rate,
            patience,
            seed: corpus.seed,
            ..TrainOptions::default().schedule
        },
        embedding_dim,
        hidden_size,
        ..TrainOptions::default()
    };
    let (bar, progress) =
        show_progress(train_set.len().div_ceil(batch_size) as u64, |r: &Report| {
            format!("dev F1 {:.4}", r.overall.f1)
        })?;
    let trained = tagger::train(&train_set, &dev_set, vocab, &TAGS, &options, progress)?;
    bar.finish_and_clear();
    let train_seconds = started.elapsed().as_secs_f64();
    let fast = trained.fast()?;
    let test = tagger::evaluate(&fast, &trained.vocab, &trained.config.tags, &test_set);
    print_report(
        &format!("held-out test (best epoch {}):", trained.best_epoch),
        &test,
    );
    let record = serde_json::json!({
        "trainer": "train_ner",
        "seed": corpus.seed,
        "corpus": {"train": train_set.len(), "dev": dev_set.len(), "test": test_set.len()},
        "best_epoch": trained.best_epoch,
        "dev": report_json(&trained.best_dev),
        "test": report_json(&test),
        "training_seconds": train_seconds,
        "threads": threads,
    });
    publish_version(&out, &record, |dir| trained.write(dir))?;
    println!("wrote {} in {:.0} s", out.display(), train_seconds);
    Ok(())
}

/// Prints a saved tagger's precision, recall and F1 per entity type on a generated split.
fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let EvaluateArgs {
        corpus,
        model,
        split,
        errors,
    } = args;
    let saved = load(&model)?;
    let (_, _, dev, test) = corpora(&Corpus {
        train_size: 0,
        ..corpus
    })?;
    let samples = if split == "dev" { dev } else { test };
    let report = tagger::evaluate(&saved.fast, &saved.vocab, &saved.config.tags, &samples);
    let show = |es: &[Entity]| {
        es.iter()
            .map(|e| format!("{}:{}", e.kind, e.text))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for s in samples
        .iter()
        .filter_map(|s| {
            let predicted = saved.entities(&s.chars);
            (predicted != s.entities()).then(|| {
                format!(
                    "{}\n    gold: {}\n    got:  {}",
                    s.text(),
                    show(&s.entities()),
                    show(&predicted)
                )
            })
        })
        .take(errors)
    {
        println!("{s}");
    }
    print_report(
        &format!(
            "{} on {} generated {split} sentences:",
            model.display(),
            samples.len()
        ),
        &report,
    );
    Ok(())
}

/// Prints the entities a saved tagger finds in each text.
fn tag(args: TagArgs) -> anyhow::Result<()> {
    let saved = load(&args.model)?;
    for text in args.texts {
        let chars: Vec<char> = text.chars().collect();
        let found: Vec<String> = saved
            .entities(&chars)
            .iter()
            .map(|e| format!("{}:{}[{}..{}]", e.kind, e.text, e.start, e.end))
            .collect();
        println!("{text} → {}", found.join(" "));
    }
    Ok(())
}
