//! What every trainer here shares: variables in a fixed order (so runs repeat exactly),
//! gradient clipping, keeping the best weights seen on the dev set, and publishing the result.

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

/// Makes glibc keep freed memory for reuse instead of unmapping it. Training allocates and
/// frees the same large activations every step; by default each one is a fresh mmap and
/// page faults, which measured as 40% of a training run's time (all of it in the kernel).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before any thread
    // that allocates is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The variables of `varmap` sorted by name, so optimiser updates and gradient norms are
/// computed in the same order on every run.
pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Scales all gradients down so their global L2 norm is at most `max_norm`. Returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        for (_, var) in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// A copy of every variable's value, to restore the best epoch at the end of training.
pub struct Snapshot(Vec<(String, Tensor)>);

impl Snapshot {
    pub fn take(varmap: &VarMap) -> Result<Self> {
        sorted_vars(varmap)
            .into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().copy()?)))
            .collect::<Result<_>>()
            .map(Snapshot)
    }

    pub fn restore(&self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().expect("varmap lock poisoned");
        for (name, value) in &self.0 {
            if let Some(var) = data.get(name) {
                var.set(value)?;
            }
        }
        Ok(())
    }
}

/// Early stopping on a dev score: keeps the weights of the best epoch so far and says when
/// `patience` epochs in a row have not improved on it.
pub struct EarlyStopping<R> {
    patience: usize,
    best: Option<(usize, R, Snapshot)>,
    since_best: usize,
}

impl<R> EarlyStopping<R> {
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            patience,
            best: None,
            since_best: 0,
        }
    }

    /// Records `epoch`'s dev result, snapshotting the weights when `better(result, best)`
    /// (or it is the first). Returns whether training should stop.
    pub fn record(
        &mut self,
        epoch: usize,
        result: R,
        better: impl FnOnce(&R, &R) -> bool,
        varmap: &VarMap,
    ) -> Result<bool> {
        if self
            .best
            .as_ref()
            .is_none_or(|(_, best, _)| better(&result, best))
        {
            self.best = Some((epoch, result, Snapshot::take(varmap)?));
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        Ok(self.since_best >= self.patience)
    }

    /// Puts the best epoch's weights back; returns that epoch and its dev result.
    pub fn restore_best(self, varmap: &VarMap) -> anyhow::Result<(usize, R)> {
        let (epoch, result, snapshot) = self.best.ok_or_else(|| anyhow::anyhow!("no epoch ran"))?;
        snapshot.restore(varmap)?;
        Ok((epoch, result))
    }
}

/// Publishes a trained version at `out` the way the server expects: `write` fills a hidden
/// sibling folder, `training.json` records how it was made, and one rename makes it appear
/// whole, so a server watching the repository never loads a half-written version.
pub fn publish_version(
    out: &Path,
    record: &serde_json::Value,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("version");
    let tmp = out.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    write(&tmp)?;
    std::fs::write(
        tmp.join("training.json"),
        serde_json::to_string_pretty(record)?,
    )?;
    std::fs::rename(&tmp, out).with_context(|| format!("moving the model into {}", out.display()))
}

/// Precision, recall and F1 of one class of predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many gold items there were.
    pub support: usize,
}

impl Score {
    pub fn from_counts(true_positive: usize, predicted: usize, gold: usize) -> Self {
        let precision = if predicted == 0 {
            0.0
        } else {
            true_positive as f64 / predicted as f64
        };
        let recall = if gold == 0 {
            0.0
        } else {
            true_positive as f64 / gold as f64
        };
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Score {
            precision,
            recall,
            f1,
            support: gold,
        }
    }
}
