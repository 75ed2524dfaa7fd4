//! The sentence-pair relevance classifier: the shipped Chinese model over gRPC (Predict
//! with `text` + `text_pair`, and Classify with `tensorflow.Example` features), its
//! character-level tokenizer, the trainer's reproducibility, and fine-tuning the real
//! pre-trained MiniLM. The gradient check is a unit test in `src/models/bert/train.rs`.

use crate::common;

use candle_serving::models::bert::config::BertConfig;
use candle_serving::proto::tensorflow::serving::{
    input, ClassificationRequest, ExampleList, Input,
};
use candle_serving::proto::tensorflow::{
    feature, BytesList, Example as TfExample, Feature, Features,
};
use candle_serving::train::bert_folder::train_wordpiece;
use candle_serving::train::classifier::{
    train_classifier, ClassifierOptions, Example, Progress, Start, TrainedClassifier,
};
use candle_serving::train::corpus::relevance::{PairGenerator, LABELS};
use candle_serving::train::fit::Schedule;
use candle_serving::{lexicon::Lexicon, train::corpus::ner::Split};
use common::*;
use tokenizers::Tokenizer;

fn shipped() -> std::path::PathBuf {
    repo_root().join("model_repo/dialog_relevance/2")
}

/// Pairs a reader would label at once: (first message, second message, related). The
/// shipped model (version 2, pre-trained on Chinese text before fine-tuning) is not good
/// enough for every clear pair (README, "weak points"): it calls 我老是尿频尿急 → 还有尿痛
/// unrelated and 咳嗽发烧 → 红疹浑身痒 related. These are the clear pairs it does get right,
/// one more than version 1 did (眼睛又干又痒 → 还有点怕光); the test guards them.
const CLEAR: &[(&str, &str, bool)] = &[
    ("我这两天咳嗽，还有点发烧", "而且痰多", true),
    ("而且痰多", "还有个事，我眼睛痒", false),
    ("医生，我最近总是头痛", "这个严重吗", true),
    ("医生，我最近总是头痛", "谢谢医生", false),
    ("我肚子疼，还拉肚子", "已经三天了", true),
    ("我肚子疼，还拉肚子", "挂号在哪", false),
    ("孩子发烧了", "晚上更厉害", true),
    ("眼睛又干又痒", "你好", false),
    ("眼睛又干又痒", "还有点怕光", true),
];

#[tokio::test]
async fn the_shipped_model_answers_predict_and_classify_over_grpc() {
    let config = format!(
        "model_config_list {{ config {{ name: \"dialog_relevance\" base_path: \"{}\" model_platform: \"candle\" }} }}",
        repo_root().join("model_repo/dialog_relevance").display()
    );
    let mut s = TestServer::with_config(&config, &repo_root()).await;
    s.wait_for("dialog_relevance", 2, 30).await;

    let firsts: Vec<&str> = CLEAR.iter().map(|c| c.0).collect();
    let seconds: Vec<&str> = CLEAR.iter().map(|c| c.1).collect();
    let response = s
        .grpc
        .predict(predict_request(
            spec("dialog_relevance", None),
            &[("text", strings(&firsts)), ("text_pair", strings(&seconds))],
        ))
        .await
        .unwrap()
        .into_inner();
    let labels: Vec<String> = response.outputs["labels"]
        .string_val
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect();
    let probabilities = floats(&response.outputs["probabilities"]);
    assert_eq!(
        dims(&response.outputs["probabilities"]),
        vec![CLEAR.len() as i64, 2]
    );
    for (i, (first, second, related)) in CLEAR.iter().enumerate() {
        let expected = if *related { "related" } else { "unrelated" };
        assert_eq!(
            labels[i],
            expected,
            "{first} | {second}: p(related) = {}",
            probabilities[2 * i + 1]
        );
    }

    // The Classify API with tensorflow.Example features gives the same scores.
    let bytes = |v: &str| Feature {
        kind: Some(feature::Kind::BytesList(BytesList {
            value: vec![v.as_bytes().to_vec()],
        })),
    };
    let examples = CLEAR
        .iter()
        .map(|(first, second, _)| TfExample {
            features: Some(Features {
                feature: [
                    ("text".to_string(), bytes(first)),
                    ("text_pair".to_string(), bytes(second)),
                ]
                .into(),
            }),
        })
        .collect();
    let classified = s
        .grpc
        .classify(ClassificationRequest {
            model_spec: Some(spec("dialog_relevance", None)),
            input: Some(Input {
                kind: Some(input::Kind::ExampleList(ExampleList { examples })),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let results = classified.result.unwrap().classifications;
    assert_eq!(results.len(), CLEAR.len());
    for (i, classification) in results.iter().enumerate() {
        let names: Vec<&str> = classification
            .classes
            .iter()
            .map(|c| c.label.as_str())
            .collect();
        assert_eq!(names, LABELS);
        for (k, class) in classification.classes.iter().enumerate() {
            assert!(
                (class.score - probabilities[2 * i + k]).abs() < 1e-5,
                "example {i}"
            );
        }
    }
    s.stop().await;
}

#[test]
fn the_chinese_tokenizer_round_trips() {
    // The shipped vocabulary: one token per character, back to the same text.
    let tokenizer = Tokenizer::from_file(shipped().join("tokenizer.json")).unwrap();
    let text = "我这两天咳嗽，还有点发烧";
    let encoding = tokenizer.encode(text, true).unwrap();
    let tokens = encoding.get_tokens();
    assert_eq!(tokens.first().map(String::as_str), Some("[CLS]"));
    assert_eq!(tokens.last().map(String::as_str), Some("[SEP]"));
    assert_eq!(tokens.len(), text.chars().count() + 2, "{tokens:?}");
    assert!(!tokens.iter().any(|t| t == "[UNK]"), "{tokens:?}");
    let decoded = tokenizer.decode(encoding.get_ids(), true).unwrap();
    assert_eq!(decoded.replace(' ', ""), text);
    // A character the corpus never used is [UNK], not an error.
    let odd = tokenizer.encode("头痛鼗", false).unwrap();
    assert_eq!(odd.get_tokens().last().map(String::as_str), Some("[UNK]"));

    // And a vocabulary learnt here from a few sentences, with the crate's WordPiece trainer.
    let corpus = ["头痛发烧", "肚子疼，拉肚子", "咳嗽有痰"];
    let learnt = train_wordpiece(corpus.iter().copied(), 100, true, 32).unwrap();
    for sentence in corpus {
        let encoding = learnt.encode(sentence, false).unwrap();
        assert!(
            !encoding.get_tokens().iter().any(|t| t == "[UNK]"),
            "{:?}",
            encoding.get_tokens()
        );
        assert_eq!(
            learnt
                .decode(encoding.get_ids(), true)
                .unwrap()
                .replace(' ', ""),
            sentence
        );
    }
}

fn tiny_fresh(tokenizer: &Tokenizer) -> BertConfig {
    let pad = tokenizer.token_to_id("[PAD]").unwrap();
    BertConfig::fresh(tokenizer.get_vocab_size(true), 32, 1, 2, 64, pad)
}

fn pairs(split: Split, seed: u64, count: usize) -> Vec<Example> {
    let lexicon = Lexicon::shipped().unwrap();
    PairGenerator::new(&lexicon, seed)
        .corpus(split, count)
        .into_iter()
        .map(|p| Example {
            text: p.first,
            pair: Some(p.second),
            label: p.related as u32,
        })
        .collect()
}

/// Trains a relevance classifier and returns it with the loss of every step.
fn train_recording_losses(
    start: Start,
    train: &[Example],
    dev: &[Example],
    options: &ClassifierOptions,
) -> (TrainedClassifier, Vec<f32>) {
    let mut losses = Vec::new();
    let trained = train_classifier(start, &LABELS, train, dev, options, |p| {
        if let Progress::Step { loss, .. } = p {
            losses.push(loss);
        }
    })
    .unwrap();
    (trained, losses)
}

/// (per-step losses, dev accuracy, the first weights' values) of a short fresh run.
fn short_run(seed: u64) -> (Vec<f32>, f64, Vec<f32>) {
    let train = pairs(Split::Train, 3, 96);
    let dev = pairs(Split::Dev, 4, 32);
    let texts = train
        .iter()
        .flat_map(|e| [e.text.clone(), e.pair.clone().unwrap()]);
    let tokenizer = train_wordpiece(texts, 500, true, 64).unwrap();
    let options = ClassifierOptions {
        schedule: Schedule {
            epochs: 2,
            batch_size: 16,
            learning_rate: 1e-3,
            seed,
            ..ClassifierOptions::default().schedule
        },
        max_len: 64,
        ..Default::default()
    };
    let start = Start::Fresh {
        config: tiny_fresh(&tokenizer),
        tokenizer,
    };
    let (trained, losses) = train_recording_losses(start, &train, &dev, &options);
    let first = trained
        .varmap
        .data()
        .lock()
        .unwrap()
        .get("classifier.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (losses, trained.best_dev_accuracy, first)
}

#[test]
fn training_is_reproducible_with_a_fixed_seed() {
    let (losses, accuracy, weights) = short_run(7);
    assert_eq!(losses.len(), 12);
    let (again, accuracy_again, weights_again) = short_run(7);
    assert_eq!(
        losses, again,
        "the same seed gives the same losses, bit for bit"
    );
    assert_eq!(accuracy, accuracy_again);
    assert_eq!(weights, weights_again);
    let (other, _, other_weights) = short_run(8);
    assert_ne!(losses, other, "another seed starts elsewhere");
    assert_ne!(weights, other_weights);
}

/// English pairs for the MiniLM fine-tuning test: related when both sentences are about the
/// same topic.
fn english_pairs(offset: usize, count: usize) -> Vec<Example> {
    const TOPICS: &[&[&str]] = &[
        &[
            "It rained all day and the wind was cold",
            "The forecast says snow tomorrow",
            "What a sunny and warm afternoon",
            "A storm is coming from the west",
            "The fog was thick this morning",
        ],
        &[
            "My laptop will not turn on",
            "The printer keeps jamming paper",
            "How do I reset my password?",
            "The wifi connection drops every hour",
            "My phone screen is cracked",
        ],
        &[
            "I cooked pasta with tomato sauce",
            "This soup needs more salt",
            "We ordered pizza for dinner",
            "The bread is fresh from the oven",
            "I like rice with curry",
        ],
        &[
            "Our team won the football match",
            "He runs ten kilometres every morning",
            "The tennis final was exciting",
            "She scored three goals",
            "Basketball practice starts at six",
        ],
    ];
    (offset..offset + count)
        .map(|i| {
            let topic = i % TOPICS.len();
            let related = i % 2 == 0;
            let other = if related {
                topic
            } else {
                (topic + 1 + i / 2 % (TOPICS.len() - 1)) % TOPICS.len()
            };
            let a = TOPICS[topic][i / 3 % TOPICS[topic].len()];
            let mut b = TOPICS[other][(i / 5 + 1) % TOPICS[other].len()];
            if b == a {
                b = TOPICS[other][(i / 5 + 2) % TOPICS[other].len()];
            }
            Example {
                text: a.into(),
                pair: Some(b.into()),
                label: related as u32,
            }
        })
        .collect()
}

#[test]
fn fine_tuning_the_real_minilm_lowers_the_loss_and_beats_chance() {
    let train = english_pairs(0, 64);
    let dev = english_pairs(1000, 40);
    let options = ClassifierOptions {
        schedule: Schedule {
            epochs: 3,
            batch_size: 16,
            learning_rate: 1e-4,
            seed: 1,
            ..ClassifierOptions::default().schedule
        },
        max_len: 64,
        ..Default::default()
    };
    let (trained, losses) =
        train_recording_losses(Start::Pretrained(minilm_dir()), &train, &dev, &options);
    let n = losses.len();
    assert_eq!(n, 12);
    let early = losses[..4].iter().sum::<f32>() / 4.0;
    let late = losses[n - 4..].iter().sum::<f32>() / 4.0;
    assert!(late < early * 0.8, "the loss falls: {losses:?}");
    let accuracy = trained.accuracy(&dev).unwrap();
    assert!(
        accuracy >= 0.75,
        "held-out accuracy {accuracy} (chance is 0.5); losses {losses:?}"
    );
}
