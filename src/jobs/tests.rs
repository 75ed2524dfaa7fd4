use super::*;

/// Doubles the request's bytes; fails on an empty request.
struct Echo;

impl Executor for Echo {
    fn run<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            assert_eq!(Priority::current(), Priority::Background);
            if job.request.is_empty() {
                return Outcome::Failed {
                    error: ServingError::invalid_argument("model `m`: empty"),
                };
            }
            Outcome::Succeeded {
                version: 7,
                result: job.request.repeat(2),
            }
        })
    }
}

fn new_job(request: &[u8]) -> NewJob {
    NewJob {
        kind: JobKind::Rest,
        model: "m".into(),
        version: VersionChoice::Latest,
        client_key: None,
        request: request.to_vec(),
    }
}

fn memory_jobs(max_pending: usize, ttl: Duration) -> Arc<Jobs> {
    Jobs::new(
        JobOptions {
            max_pending,
            result_ttl: ttl,
            ..JobOptions::default()
        },
        &Registry::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn jobs_run_in_the_background_and_their_results_are_kept() {
    let jobs = memory_jobs(100, Duration::from_secs(60));
    let (stop, stopped) = watch::channel(false);
    let workers = jobs.start_workers(Arc::new(Echo), Box::new(|| true), stopped);
    let ok = jobs.submit(new_job(b"ab")).await.unwrap();
    let bad = jobs.submit(new_job(b"")).await.unwrap();
    assert_eq!(ok.state, JobState::Pending);
    assert!(is_job_id(&ok.id));
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let ok = jobs.wait(&ok.id, until).await.unwrap();
    assert_eq!(ok.state, JobState::Succeeded);
    assert_eq!(ok.result.as_deref(), Some(&b"abab"[..]));
    assert_eq!(ok.version(), Some(7));
    assert!(ok.started_at_ms.is_some() && ok.finished_at_ms >= ok.started_at_ms);
    let bad = jobs.wait(&bad.id, until).await.unwrap();
    assert_eq!(bad.state, JobState::Failed);
    assert_eq!(
        bad.error,
        Some((Code::InvalidArgument, "model `m`: empty".into()))
    );
    // A finished job cannot be cancelled.
    assert!(matches!(
        jobs.cancel(&ok.id).await.unwrap(),
        Cancelled::TooLate(_)
    ));
    stop.send(true).unwrap();
    workers.await.unwrap();
}

#[tokio::test]
async fn the_memory_queue_bounds_cancels_and_expires() {
    // No workers: jobs stay pending.
    let jobs = memory_jobs(2, Duration::from_millis(50));
    let a = jobs.submit(new_job(b"a")).await.unwrap();
    let _b = jobs.submit(new_job(b"b")).await.unwrap();
    let full = jobs.submit(new_job(b"c")).await.unwrap_err();
    assert_eq!(full.code, Code::ResourceExhausted);
    assert!(
        full.message.contains("--max_pending_jobs"),
        "{}",
        full.message
    );
    assert!(matches!(
        jobs.cancel(&a.id).await.unwrap(),
        Cancelled::Now(_)
    ));
    assert!(matches!(
        jobs.cancel(&a.id).await.unwrap(),
        Cancelled::Already(_)
    ));
    // The cancelled job made room.
    jobs.submit(new_job(b"c")).await.unwrap();
    assert_eq!(jobs.get(&a.id).await.unwrap().state, JobState::Cancelled);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(jobs.get(&a.id).await.unwrap_err().code, Code::NotFound);
    // Ids that are not job ids are never looked up.
    assert_eq!(jobs.get("../x").await.unwrap_err().code, Code::NotFound);
}

#[test]
fn versions_and_codes_survive_the_round_trip() {
    for v in [
        VersionChoice::Latest,
        VersionChoice::Number(12),
        VersionChoice::Label("canary".into()),
    ] {
        assert_eq!(decode_version(&encode_version(&v)), Some(v));
    }
    assert_eq!(
        code_from_name("RESOURCE_EXHAUSTED"),
        Code::ResourceExhausted
    );
    assert_eq!(code_from_name("nonsense"), Code::Unknown);
    assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
}

#[tokio::test]
async fn finished_jobs_in_memory_share_a_byte_budget_oldest_forgotten_first() {
    // Room for about three finished jobs of 1 KB.
    let queue = MemoryQueue::with_budget(100, Duration::from_secs(3600), 3 * (1024 + 256));
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = new_id();
        queue.submit(&id, &new_job(b"x"), i).unwrap();
        let taken = queue.take(1, Duration::from_millis(10)).await;
        assert_eq!(taken.len(), 1);
        let outcome = Outcome::Succeeded {
            version: 1,
            result: vec![0; 1024],
        };
        assert!(queue.finish(&taken[0].id, &outcome, 10 + i));
        ids.push(id);
    }
    let kept: Vec<bool> = ids.iter().map(|id| queue.get(id, 20).is_some()).collect();
    assert_eq!(kept, vec![false, false, true, true, true]);
    // Pending jobs are never evicted by the budget.
    let pending = new_id();
    queue.submit(&pending, &new_job(b"y"), 30).unwrap();
    for _ in 0..3 {
        let id = new_id();
        queue.submit(&id, &new_job(b"z"), 31).unwrap();
    }
    assert!(queue.get(&pending, 40).is_some());
}

#[test]
fn the_memory_queue_bounds_the_bytes_of_pending_requests() {
    let queue = MemoryQueue::new(100, 10, Duration::from_secs(60));
    let (a, b) = (new_id(), new_id());
    queue.submit(&a, &new_job(b"123456"), 0).unwrap();
    assert_eq!(
        queue.submit(&b, &new_job(b"12345"), 0),
        Err(QueueError::FullBytes { max_bytes: 10 })
    );
    // A cancelled job gives its bytes back; so does a finished one.
    assert!(matches!(queue.cancel(&a, 1), Some(Cancelled::Now(_))));
    queue.submit(&b, &new_job(b"12345"), 2).unwrap();
    let outcome = Outcome::Failed {
        error: ServingError::invalid_argument("no"),
    };
    assert!(queue.finish(&b, &outcome, 3));
    queue.submit(&new_id(), &new_job(b"0123456789"), 4).unwrap();
}
