//! The scheduler against a servable that records every batch it runs and can be held
//! inside a batch, so each test controls exactly what is queued when.
//! Unit tests only: no server, no model files, no network.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::*;
use crate::servable::SignatureMap;
use crate::tensor::{Tensor, TensorData};

/// `x` (float `[n, k]`) → `y = 2x`; `s` (strings `[n]`) → `len` (characters). Refuses a
/// negative `x`. Reports each batch's first column (or lengths) when it starts, and waits
/// for a token on `gate` before finishing when one is given.
struct Recorder {
    policy: BatchPolicy,
    started: Sender<Vec<f32>>,
    gate: Option<Receiver<()>>,
    signatures: SignatureMap,
}

impl Servable for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }

    fn signatures(&self) -> &SignatureMap {
        &self.signatures
    }

    fn batch_policy(&self) -> BatchPolicy {
        self.policy
    }

    fn run(&self, _signature: &str, inputs: &Inputs) -> Result<Outputs, ServableError> {
        let mut outputs = Outputs::new();
        if let Some(x) = inputs.get("x") {
            let TensorData::Float(v) = x.data() else {
                unreachable!()
            };
            if v.iter().any(|&f| f < 0.0) {
                return Err(ServableError::InvalidInput("negative value".into()));
            }
            let k = x.shape()[1];
            let _ = self
                .started
                .send(v.iter().step_by(k.max(1)).copied().collect());
            let y = v.iter().map(|f| f * 2.0).collect();
            outputs.insert(
                "y".into(),
                Tensor::new(x.shape().to_vec(), TensorData::Float(y)).unwrap(),
            );
        }
        if let Some(s) = inputs.get("s") {
            let TensorData::String(v) = s.data() else {
                unreachable!()
            };
            let lens: Vec<i64> = v.iter().map(|b| b.len() as i64).collect();
            let _ = self.started.send(lens.iter().map(|&l| l as f32).collect());
            outputs.insert(
                "len".into(),
                Tensor::new(vec![v.len()], TensorData::Int64(lens)).unwrap(),
            );
        }
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        Ok(outputs)
    }
}

struct Rig {
    batcher: Arc<Batcher>,
    started: Receiver<Vec<f32>>,
    release: Sender<()>,
}

fn start_rig(options: BatchingOptions, policy: BatchPolicy, gated: bool) -> Rig {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (release, gate) = crossbeam_channel::unbounded();
    let servable = Arc::new(Recorder {
        policy,
        started: started_tx,
        gate: gated.then_some(gate),
        signatures: SignatureMap::new(),
    });
    let pool = Arc::new(WorkerPool::new("batch-test", 2, 64));
    Rig {
        batcher: Arc::new(Batcher::new(servable, options, pool, Box::new(|_| {}))),
        started,
        release,
    }
}

fn x(rows: &[f32]) -> Inputs {
    let data = rows.iter().flat_map(|&r| [r, r + 0.5]).collect();
    Inputs::from([(
        "x".to_string(),
        Tensor::new(vec![rows.len(), 2], TensorData::Float(data)).unwrap(),
    )])
}

fn y(outputs: &Outputs) -> Vec<f32> {
    let TensorData::Float(v) = outputs["y"].data() else {
        panic!("y is float")
    };
    v.clone()
}

fn spawn(rig: &Rig, rows: &[f32]) -> tokio::task::JoinHandle<Result<Outputs, BatchError>> {
    let batcher = rig.batcher.clone();
    let inputs = x(rows);
    tokio::spawn(async move { batcher.run("serving_default", inputs).await })
}

/// Waits for the next batch to start and returns its first column. Polls rather than
/// blocking a thread, so that on a paused clock tokio can advance time meanwhile.
async fn next_batch(rig: &Rig) -> Vec<f32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(first) = rig.started.try_recv() {
            return first;
        }
        assert!(std::time::Instant::now() < deadline, "no batch started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Lets the queue settle: requests spawned just before are in the batcher's channel.
async fn settle(batcher: &Batcher, rows: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while batcher.waiting_rows() < rows {
        assert!(
            std::time::Instant::now() < deadline,
            "{rows} rows never queued"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn options(max_batch_size: usize) -> BatchingOptions {
    BatchingOptions {
        max_batch_size,
        ..BatchingOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_behind_a_batch_run_together_in_order_with_their_own_results() {
    let rig = start_rig(options(8), BatchPolicy::Rows, true);
    let first = spawn(&rig, &[100.0]);
    assert_eq!(next_batch(&rig).await, vec![100.0]);
    // While the first batch runs, five requests (seven rows) queue up.
    let mut queued = Vec::new();
    for rows in [&[1.0][..], &[2.0, 3.0], &[4.0], &[5.0, 6.0], &[7.0]] {
        queued.push((rows.to_vec(), spawn(&rig, rows)));
        settle(&rig.batcher, queued.iter().map(|(r, _)| r.len()).sum()).await;
    }
    rig.release.send(()).unwrap();
    assert_eq!(
        first.await.unwrap().unwrap()["y"].data(),
        &TensorData::Float(vec![200.0, 201.0])
    );
    // They form one batch, in arrival order.
    assert_eq!(
        next_batch(&rig).await,
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    );
    rig.release.send(()).unwrap();
    for (rows, handle) in queued {
        let outputs = handle.await.unwrap().unwrap();
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&r| [2.0 * r, 2.0 * r + 1.0])
            .collect();
        assert_eq!(y(&outputs), want);
        assert_eq!(outputs["y"].shape(), &[rows.len(), 2]);
    }
    assert_eq!(rig.batcher.stats().batches.load(Ordering::Relaxed), 2);
    assert_eq!(rig.batcher.stats().requests.load(Ordering::Relaxed), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_exceeds_max_batch_size() {
    let rig = start_rig(options(3), BatchPolicy::Rows, true);
    let first = spawn(&rig, &[0.0]);
    next_batch(&rig).await;
    let mut handles = Vec::new();
    for (i, r) in [1.0, 2.0, 3.0, 4.0, 5.0].into_iter().enumerate() {
        handles.push(spawn(&rig, &[r]));
        settle(&rig.batcher, i + 1).await;
    }
    for _ in 0..3 {
        rig.release.send(()).unwrap();
    }
    assert_eq!(next_batch(&rig).await, vec![1.0, 2.0, 3.0]);
    assert_eq!(next_batch(&rig).await, vec![4.0, 5.0]);
    first.await.unwrap().unwrap();
    for h in handles {
        h.await.unwrap().unwrap();
    }
}

/// Brings the scheduler of a gated rig to "the previous batch had 4 rows": one lone
/// request, then four rows queued behind it.
async fn after_a_batch_of_four(rig: &Rig) {
    let lone = spawn(rig, &[0.0]);
    assert_eq!(
        next_batch(rig).await,
        vec![0.0],
        "a lone first request never waits"
    );
    let mut four = Vec::new();
    for (i, r) in [10.0, 11.0, 12.0, 13.0].into_iter().enumerate() {
        four.push(spawn(rig, &[r]));
        settle(&rig.batcher, i + 1).await;
    }
    rig.release.send(()).unwrap();
    assert_eq!(next_batch(rig).await, vec![10.0, 11.0, 12.0, 13.0]);
    rig.release.send(()).unwrap();
    lone.await.unwrap().unwrap();
    for h in four {
        h.await.unwrap().unwrap();
    }
}

/// On tokio's paused clock: the hour-long and 20 ms waits are exact, not raced against.
#[tokio::test(start_paused = true)]
async fn under_load_a_batch_waits_for_as_many_rows_as_the_last_up_to_the_timeout() {
    let long = BatchingOptions {
        max_batch_size: 8,
        batch_timeout: Duration::from_secs(3600),
        ..BatchingOptions::default()
    };
    let rig = start_rig(long, BatchPolicy::Rows, true);
    after_a_batch_of_four(&rig).await;
    let a = spawn(&rig, &[1.0]);
    settle(&rig.batcher, 1).await;
    let b = spawn(&rig, &[2.0]);
    settle(&rig.batcher, 2).await;
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert!(
        rig.started.try_recv().is_err(),
        "two rows after a batch of four wait (here for an hour)"
    );
    let c = spawn(&rig, &[3.0, 4.0]);
    assert_eq!(next_batch(&rig).await, vec![1.0, 2.0, 3.0, 4.0]);
    rig.release.send(()).unwrap();
    for h in [a, b, c] {
        h.await.unwrap().unwrap();
    }

    // With a short timeout, the same two rows go when it expires.
    let short = BatchingOptions {
        max_batch_size: 8,
        batch_timeout: Duration::from_millis(20),
        ..BatchingOptions::default()
    };
    let rig = start_rig(short, BatchPolicy::Rows, true);
    after_a_batch_of_four(&rig).await;
    let a = spawn(&rig, &[5.0]);
    settle(&rig.batcher, 1).await;
    let b = spawn(&rig, &[6.0]);
    settle(&rig.batcher, 2).await;
    let waiting = tokio::time::Instant::now();
    assert_eq!(next_batch(&rig).await, vec![5.0, 6.0]);
    assert!(
        waiting.elapsed() >= Duration::from_millis(10),
        "{:?}",
        waiting.elapsed()
    );
    rig.release.send(()).unwrap();
    assert_eq!(y(&a.await.unwrap().unwrap()), vec![10.0, 11.0]);
    b.await.unwrap().unwrap();
    // That batch had two rows: now two rows are enough, and a lone one waits 20 ms.
    let c = spawn(&rig, &[7.0]);
    assert_eq!(next_batch(&rig).await, vec![7.0]);
    rig.release.send(()).unwrap();
    c.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_new_requests_and_keeps_the_queued_ones() {
    let small = BatchingOptions {
        max_batch_size: 2,
        max_enqueued_batches: 2,
        ..BatchingOptions::default()
    };
    let rig = start_rig(small, BatchPolicy::Rows, true);
    let running = spawn(&rig, &[0.0]);
    next_batch(&rig).await;
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(spawn(&rig, &[i as f32 + 1.0]));
        settle(&rig.batcher, i + 1).await;
    }
    let refused = rig.batcher.run("serving_default", x(&[9.0])).await;
    assert_eq!(refused.unwrap_err(), BatchError::Full { capacity: 4 });
    for _ in 0..3 {
        rig.release.send(()).unwrap();
    }
    running.await.unwrap().unwrap();
    for (i, h) in queued.into_iter().enumerate() {
        let r = i as f32 + 1.0;
        assert_eq!(y(&h.await.unwrap().unwrap()), vec![2.0 * r, 2.0 * r + 1.0]);
    }
    assert_eq!(rig.batcher.waiting_rows(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_caller_went_away_is_dropped_from_the_queue() {
    let rig = start_rig(options(8), BatchPolicy::Rows, true);
    let running = spawn(&rig, &[0.0]);
    next_batch(&rig).await;
    let gone = spawn(&rig, &[66.0]);
    settle(&rig.batcher, 1).await;
    let kept = spawn(&rig, &[7.0]);
    settle(&rig.batcher, 2).await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    rig.release.send(()).unwrap();
    rig.release.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        next_batch(&rig).await,
        vec![7.0],
        "the abandoned row never reaches the model"
    );
    assert_eq!(y(&kept.await.unwrap().unwrap()), vec![14.0, 15.0]);
    assert_eq!(rig.batcher.stats().abandoned.load(Ordering::Relaxed), 1);
    assert_eq!(rig.batcher.waiting_rows(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requests_bad_input_fails_only_that_request() {
    let rig = start_rig(options(8), BatchPolicy::Rows, true);
    let running = spawn(&rig, &[0.0]);
    next_batch(&rig).await;
    let good = spawn(&rig, &[1.0]);
    settle(&rig.batcher, 1).await;
    let bad = spawn(&rig, &[-1.0]);
    settle(&rig.batcher, 2).await;
    let also_good = spawn(&rig, &[3.0]);
    settle(&rig.batcher, 3).await;
    for _ in 0..8 {
        rig.release.send(()).unwrap();
    }
    running.await.unwrap().unwrap();
    assert_eq!(y(&good.await.unwrap().unwrap()), vec![2.0, 3.0]);
    assert_eq!(y(&also_good.await.unwrap().unwrap()), vec![6.0, 7.0]);
    assert_eq!(
        bad.await.unwrap().unwrap_err(),
        BatchError::Servable(ServableError::InvalidInput("negative value".into()))
    );
}

fn strings(values: &[&str]) -> Inputs {
    Inputs::from([("s".to_string(), Tensor::strings(values.iter()))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_that_pad_get_batches_of_similar_length() {
    let rig = start_rig(options(8), BatchPolicy::ByLength, true);
    let b = rig.batcher.clone();
    let running = tokio::spawn(async move { b.run("serving_default", strings(&["warm"])).await });
    next_batch(&rig).await;
    let long = "x".repeat(100);
    let mut handles = Vec::new();
    for (i, text) in ["short", long.as_str(), "tiny", long.as_str()]
        .into_iter()
        .enumerate()
    {
        let b = rig.batcher.clone();
        let inputs = strings(&[text]);
        handles.push(tokio::spawn(async move {
            b.run("serving_default", inputs).await
        }));
        settle(&rig.batcher, i + 1).await;
    }
    for _ in 0..3 {
        rig.release.send(()).unwrap();
    }
    running.await.unwrap().unwrap();
    assert_eq!(next_batch(&rig).await, vec![5.0, 4.0]);
    assert_eq!(next_batch(&rig).await, vec![100.0, 100.0]);
    for h in handles {
        h.await.unwrap().unwrap();
    }
}

#[test]
fn merging_pads_rank_2_inputs_and_splitting_restores_each_request() {
    let a = Inputs::from([(
        "ids".to_string(),
        Tensor::new(vec![1, 3], TensorData::Int64(vec![1, 2, 3])).unwrap(),
    )]);
    let b = Inputs::from([(
        "ids".to_string(),
        Tensor::new(
            vec![2, 5],
            TensorData::Int64(vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),
        )
        .unwrap(),
    )]);
    let (ka, kb) = (
        QueueKey::of("s", &a, true, BatchPolicy::Rows),
        QueueKey::of("s", &b, true, BatchPolicy::Rows),
    );
    assert_eq!(ka, kb, "with padding, widths do not split queues");
    assert_ne!(
        QueueKey::of("s", &a, false, BatchPolicy::Rows),
        QueueKey::of("s", &b, false, BatchPolicy::Rows)
    );
    let merged = merge(&[&a, &b], None).unwrap();
    assert_eq!(merged["ids"].shape(), &[3, 5]);
    assert_eq!(
        merged["ids"].data(),
        &TensorData::Int64(vec![1, 2, 3, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
    );
    // A model that names its mask gets one written for the padding.
    let masked = merge(&[&a, &b], Some(("ids", "mask"))).unwrap();
    assert_eq!(masked["ids"], merged["ids"]);
    assert_eq!(
        masked["mask"].data(),
        &TensorData::Int64(vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    );
    // Equal widths need no mask; a mask the clients sent is padded, not replaced.
    assert!(!merge(&[&b, &b], Some(("ids", "mask")))
        .unwrap()
        .contains_key("mask"));
    let outputs = Outputs::from([(
        "n".to_string(),
        Tensor::new(vec![3], TensorData::Int64(vec![10, 20, 30])).unwrap(),
    )]);
    let parts = split(outputs, &[1, 2]).unwrap();
    assert_eq!(parts[0]["n"].data(), &TensorData::Int64(vec![10]));
    assert_eq!(parts[1]["n"].data(), &TensorData::Int64(vec![20, 30]));
    let not_batch_major = Outputs::from([(
        "total".to_string(),
        Tensor::new(vec![1], TensorData::Int64(vec![60])).unwrap(),
    )]);
    assert!(split(not_batch_major, &[1, 2])
        .unwrap_err()
        .contains("cannot be batched"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_wait_behind_interactive_requests_and_fill_what_room_is_left() {
    let rig = start_rig(options(3), BatchPolicy::Rows, true);
    let first = spawn(&rig, &[100.0]);
    assert_eq!(next_batch(&rig).await, vec![100.0]);
    // While a batch runs, two jobs queue, then two interactive requests.
    let mut handles = Vec::new();
    for (row, priority) in [
        (1.0, crate::pool::Priority::Background),
        (2.0, crate::pool::Priority::Background),
        (3.0, crate::pool::Priority::Interactive),
        (4.0, crate::pool::Priority::Interactive),
    ] {
        let batcher = rig.batcher.clone();
        handles.push(tokio::spawn(priority.scope(async move {
            batcher.run("serving_default", x(&[row])).await
        })));
        settle(&rig.batcher, handles.len()).await;
    }
    rig.release.send(()).unwrap();
    first.await.unwrap().unwrap();
    // The interactive requests go first; the older job fills the batch's last row.
    assert_eq!(next_batch(&rig).await, vec![3.0, 4.0, 1.0]);
    rig.release.send(()).unwrap();
    assert_eq!(next_batch(&rig).await, vec![2.0]);
    rig.release.send(()).unwrap();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
}
