//! The automatic analysis of a rollout: what one side did over a window, and the decision a
//! window of each side leads to. Pure, apart from the clock a window starts on.

use std::time::{Duration, Instant};

use super::{AutoPolicy, SideFigures};

/// Latencies kept per window; beyond it, a uniform sample (reservoir) of them.
const SAMPLES: usize = 4096;

/// Fewer stable requests than this and the latency comparison is skipped: a p99 of a handful
/// of requests says nothing.
const MIN_STABLE_FOR_LATENCY: u64 = 20;

/// One side's requests since its window started.
#[derive(Debug, Clone)]
pub struct Window {
    started: Instant,
    requests: u64,
    errors: u64,
    /// Microseconds.
    samples: Vec<u32>,
    /// xorshift state for the reservoir.
    rng: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            started: Instant::now(),
            requests: 0,
            errors: 0,
            samples: Vec::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Window {
    pub fn add(&mut self, took: Duration, server_error: bool) {
        self.requests += 1;
        self.errors += u64::from(server_error);
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        if self.samples.len() < SAMPLES {
            self.samples.push(micros);
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let slot = self.rng % self.requests;
            if let Some(s) = self.samples.get_mut(slot as usize) {
                *s = micros;
            }
        }
    }

    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The 99th percentile latency in milliseconds (0 without requests).
    pub fn p99_ms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
        f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
    }

    pub fn figures(&self, version: i64) -> SideFigures {
        SideFigures {
            version,
            requests: self.requests,
            errors: self.errors,
            error_rate: self.error_rate(),
            p99_ms: self.p99_ms(),
        }
    }
}

/// What one analysis decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Too little canary traffic to judge: keep gathering.
    Wait(String),
    /// The canary misbehaves: weight to 0.
    Rollback(String),
    /// Healthy: the canary's new share.
    Step(u32),
    /// Healthy at the last step: stable moves to the canary.
    Promote,
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Wait(_) => "wait",
            Decision::Rollback(_) => "rollback",
            Decision::Step(_) => "step",
            Decision::Promote => "promote",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Decision::Wait(why) | Decision::Rollback(why) => why.clone(),
            Decision::Step(p) => format!("the canary is healthy; its share rises to {p}%"),
            Decision::Promote => "the canary is healthy at the last step; promoting it".into(),
        }
    }
}

/// Compares the canary's window with stable's under `policy`, at `percent`.
pub fn decide(policy: &AutoPolicy, percent: u32, stable: &Window, canary: &Window) -> Decision {
    if canary.requests < policy.min_requests {
        return Decision::Wait(format!(
            "the canary ran {} requests of the {} a decision needs",
            canary.requests, policy.min_requests
        ));
    }
    let rate = canary.error_rate();
    if rate > policy.max_error_rate {
        return Decision::Rollback(format!(
            "canary error rate {:.4} ({} of {}) is above max_error_rate {} (stable: {:.4})",
            rate,
            canary.errors,
            canary.requests,
            policy.max_error_rate,
            stable.error_rate()
        ));
    }
    if stable.requests >= MIN_STABLE_FOR_LATENCY {
        let (c, s) = (canary.p99_ms(), stable.p99_ms());
        if s > 0.0 && c / s > policy.max_p99_ratio {
            return Decision::Rollback(format!(
                "canary p99 {c:.2} ms is {:.2}x stable's {s:.2} ms, above max_p99_ratio {}",
                c / s,
                policy.max_p99_ratio
            ));
        }
    }
    let next = (percent + policy.step_percent).min(100);
    if next >= 100 {
        Decision::Promote
    } else {
        Decision::Step(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AutoPolicy {
        AutoPolicy {
            step_percent: 30,
            interval_seconds: 1.0,
            min_requests: 100,
            max_error_rate: 0.05,
            max_p99_ratio: 2.0,
        }
    }

    fn window(n: u64, errors: u64, ms: u64) -> Window {
        let mut w = Window::default();
        for i in 0..n {
            w.add(Duration::from_millis(ms), i < errors);
        }
        w
    }

    #[test]
    fn healthy_canaries_step_then_promote() {
        let stable = window(500, 0, 10);
        assert_eq!(
            decide(&policy(), 10, &stable, &window(100, 0, 12)),
            Decision::Step(40)
        );
        assert_eq!(
            decide(&policy(), 70, &stable, &window(100, 0, 12)),
            Decision::Promote
        );
    }

    #[test]
    fn too_little_traffic_waits() {
        let d = decide(&policy(), 10, &window(500, 0, 10), &window(99, 0, 10));
        assert!(
            matches!(d, Decision::Wait(ref why) if why.contains("99")),
            "{d:?}"
        );
    }

    #[test]
    fn errors_or_slowness_roll_back() {
        let stable = window(500, 0, 10);
        let d = decide(&policy(), 10, &stable, &window(100, 6, 10));
        assert!(
            matches!(d, Decision::Rollback(ref why) if why.contains("error rate")),
            "{d:?}"
        );
        // Exactly at the limit is allowed.
        assert_eq!(
            decide(&policy(), 10, &stable, &window(100, 5, 10)),
            Decision::Step(40)
        );
        let d = decide(&policy(), 10, &stable, &window(100, 0, 25));
        assert!(
            matches!(d, Decision::Rollback(ref why) if why.contains("p99")),
            "{d:?}"
        );
        // Without enough stable traffic the latency is not compared.
        assert_eq!(
            decide(&policy(), 10, &window(5, 0, 1), &window(100, 0, 25)),
            Decision::Step(40)
        );
    }

    #[test]
    fn p99_and_the_reservoir() {
        let mut w = Window::default();
        for i in 1..=100u64 {
            w.add(Duration::from_millis(i), false);
        }
        assert_eq!(w.p99_ms(), 99.0);
        let mut big = Window::default();
        for i in 0..50_000u64 {
            big.add(Duration::from_micros(i % 1000), false);
        }
        assert_eq!(big.samples.len(), SAMPLES);
        let p99 = big.p99_ms();
        assert!((0.95..=1.0).contains(&p99), "{p99}");
    }
}
