//! A linear-chain CRF over plain `f32` slices: the Viterbi decoder the servable runs, and the
//! log-partition and path score the trainer's loss is checked against. Emissions are
//! row-major `[len, tags]`; `transitions[i * tags + j]` scores tag `i` followed by tag `j`.
//! Plain arithmetic: no candle, no I/O, no vocabulary or signature.

/// CRF parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Crf {
    pub tags: usize,
    pub transitions: Vec<f32>,
    pub start: Vec<f32>,
    pub end: Vec<f32>,
}

impl Crf {
    /// The score of one tag path.
    pub fn path_score(&self, emissions: &[f32], path: &[usize]) -> f32 {
        let t = self.tags;
        let mut score = self.start[path[0]] + emissions[path[0]];
        for i in 1..path.len() {
            score += self.transitions[path[i - 1] * t + path[i]] + emissions[i * t + path[i]];
        }
        score + self.end[path[path.len() - 1]]
    }

    /// log Σ over all paths of exp(score): the forward algorithm.
    pub fn log_partition(&self, emissions: &[f32]) -> f32 {
        let t = self.tags;
        let len = emissions.len() / t;
        let mut alpha: Vec<f32> = (0..t).map(|j| self.start[j] + emissions[j]).collect();
        let mut next = vec![0.0; t];
        for i in 1..len {
            for (j, slot) in next.iter_mut().enumerate() {
                let scores = (0..t).map(|k| alpha[k] + self.transitions[k * t + j]);
                *slot = log_sum_exp(scores) + emissions[i * t + j];
            }
            std::mem::swap(&mut alpha, &mut next);
        }
        log_sum_exp((0..t).map(|j| alpha[j] + self.end[j]))
    }

    /// The best path and its score. `scratch` avoids allocating per call on the serving path.
    pub fn viterbi(&self, emissions: &[f32], scratch: &mut ViterbiScratch) -> (f32, Vec<usize>) {
        let t = self.tags;
        let len = emissions.len() / t;
        if len == 0 {
            return (0.0, Vec::new());
        }
        scratch.back.clear();
        scratch.back.resize(len * t, 0);
        scratch.score.clear();
        scratch
            .score
            .extend((0..t).map(|j| self.start[j] + emissions[j]));
        scratch.next.resize(t, 0.0);
        for i in 1..len {
            for j in 0..t {
                let (mut best, mut arg) = (f32::NEG_INFINITY, 0);
                for k in 0..t {
                    let s = scratch.score[k] + self.transitions[k * t + j];
                    if s > best {
                        best = s;
                        arg = k;
                    }
                }
                scratch.next[j] = best + emissions[i * t + j];
                scratch.back[i * t + j] = arg as u16;
            }
            std::mem::swap(&mut scratch.score, &mut scratch.next);
        }
        let (mut best, mut last) = (f32::NEG_INFINITY, 0);
        for j in 0..t {
            let s = scratch.score[j] + self.end[j];
            if s > best {
                best = s;
                last = j;
            }
        }
        let mut path = vec![0; len];
        path[len - 1] = last;
        for i in (1..len).rev() {
            path[i - 1] = scratch.back[i * t + path[i]] as usize;
        }
        (best, path)
    }
}

/// Buffers reused across Viterbi calls.
#[derive(Debug, Default)]
pub struct ViterbiScratch {
    back: Vec<u16>,
    score: Vec<f32>,
    next: Vec<f32>,
}

pub fn log_sum_exp(values: impl Iterator<Item = f32> + Clone) -> f32 {
    let max = values.clone().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    pub fn random_crf(rng: &mut StdRng, tags: usize) -> Crf {
        let mut v = |n: usize| {
            (0..n)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect::<Vec<_>>()
        };
        Crf {
            tags,
            transitions: v(tags * tags),
            start: v(tags),
            end: v(tags),
        }
    }

    /// Every tag path of `len` steps over `tags` tags.
    pub fn all_paths(len: usize, tags: usize) -> Vec<Vec<usize>> {
        (0..tags.pow(len as u32))
            .map(|mut code| {
                (0..len)
                    .map(|_| {
                        let t = code % tags;
                        code /= tags;
                        t
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn viterbi_and_the_partition_function_agree_with_brute_force() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut scratch = ViterbiScratch::default();
        for case in 0..200 {
            let tags = 2 + case % 3;
            let len = 1 + case % 5;
            let crf = random_crf(&mut rng, tags);
            let emissions: Vec<f32> = (0..len * tags)
                .map(|_| rng.random_range(-3.0f32..3.0))
                .collect();
            let paths = all_paths(len, tags);
            let scores: Vec<f32> = paths
                .iter()
                .map(|p| crf.path_score(&emissions, p))
                .collect();
            let (best_index, best) = scores
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            let (score, path) = crf.viterbi(&emissions, &mut scratch);
            assert!(
                (score - best).abs() < 1e-4,
                "case {case}: {score} vs {best}"
            );
            assert_eq!(path, paths[best_index], "case {case}");
            let brute = log_sum_exp(scores.iter().copied());
            assert!(
                (crf.log_partition(&emissions) - brute).abs() < 1e-4,
                "case {case}"
            );
        }
    }
}
