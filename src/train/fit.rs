//! What every trainer here shares: the epoch loop ([`fit`]: seeded batch order, AdamW with
//! an optional warm-up and linear decay, gradient clipping, a dev score after every epoch,
//! early stopping on it), variables in a fixed order (so runs repeat exactly), and
//! publishing the result as a version folder. A trainer supplies only its loss on a batch
//! and its dev score.
//! It knows no model and no data format.

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// How [`fit`] trains: the optimiser, its schedule and when to stop.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Largest global gradient norm; larger gradients are scaled down to it.
    pub clip: f64,
    /// Epochs without a better dev score before training stops.
    pub patience: usize,
    /// Seeds the batch order (and whatever the trainer draws from the generator it is given).
    pub seed: u64,
    /// `Some(share)`: the rate rises linearly over that share of all steps, then decays
    /// linearly to zero. `None`: constant.
    pub warmup: Option<f64>,
}

/// What [`fit`] reports as it goes; `R` is the trainer's dev score.
pub enum Progress<R> {
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
        learning_rate: f64,
    },
    Epoch {
        epoch: usize,
        mean_loss: f32,
        dev: R,
    },
}

/// A terminal display of [`fit`]'s progress for the trainers' command lines: a bar per
/// epoch with the smoothed loss, the learning rate and the last dev score, and a line per
/// epoch. `score` writes a dev score with its name ("dev F1 0.9312"). Returns the bar (to
/// clear when training ends) and the callback to hand to [`fit`].
pub fn show_progress<R>(
    steps_per_epoch: u64,
    score: impl Fn(&R) -> String,
) -> anyhow::Result<(indicatif::ProgressBar, impl FnMut(Progress<R>))> {
    let bar = indicatif::ProgressBar::new(steps_per_epoch);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix:>2} [{bar:30}] {pos}/{len} {per_sec} {msg}",
        )?
        .progress_chars("=> "),
    );
    let shown = bar.clone();
    let mut smoothed = None::<f32>;
    let mut last = String::from("dev -");
    let callback = move |p: Progress<R>| match p {
        Progress::Step {
            epoch,
            step,
            loss,
            learning_rate,
            ..
        } => {
            if step == 1 {
                shown.reset();
                shown.set_prefix(epoch.to_string());
            }
            let s = smoothed.map_or(loss, |s| 0.95 * s + 0.05 * loss);
            smoothed = Some(s);
            shown.set_position(step as u64);
            shown.set_message(format!("loss {s:.3} lr {learning_rate:.1e} {last}"));
        }
        Progress::Epoch {
            epoch,
            mean_loss,
            dev,
        } => {
            last = score(&dev);
            shown.suspend(|| println!("epoch {epoch:>2}: mean loss {mean_loss:.4}, {last}"));
        }
    };
    Ok((bar, callback))
}

/// The best epoch, whose weights [`fit`] leaves in the varmap.
pub struct Fitted<R> {
    pub best_epoch: usize,
    pub best_dev: R,
}

/// Trains every variable of `varmap` on `examples` items. Each step calls `batch_loss` with
/// the indices of one shuffled batch and the seeded generator (for the trainer's own noise:
/// dropout masks, token replacement), then clips and applies the gradients of the loss it
/// returns. After each epoch `dev` scores the model; the weights of the epoch with the best
/// score (by `better`) are restored at the end.
pub fn fit<R: Clone>(
    varmap: &VarMap,
    examples: usize,
    schedule: &Schedule,
    mut batch_loss: impl FnMut(&[usize], &mut StdRng) -> anyhow::Result<Tensor>,
    mut dev: impl FnMut() -> anyhow::Result<R>,
    better: impl Fn(&R, &R) -> bool,
    mut progress: impl FnMut(Progress<R>),
) -> anyhow::Result<Fitted<R>> {
    let vars = sorted_vars(varmap);
    let mut optimizer = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: schedule.learning_rate,
            weight_decay: schedule.weight_decay,
            ..Default::default()
        },
    )?;
    let steps = examples.div_ceil(schedule.batch_size.max(1));
    let rate = learning_rate(schedule, steps);
    let mut rng = StdRng::seed_from_u64(schedule.seed);
    let mut order: Vec<usize> = (0..examples).collect();
    let mut stopping = EarlyStopping::new(schedule.patience);
    let mut global_step = 0;
    for epoch in 1..=schedule.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for (step, chunk) in order.chunks(schedule.batch_size.max(1)).enumerate() {
            let loss = batch_loss(chunk, &mut rng)?;
            let mut grads = loss.backward()?;
            clip_grad_norm(&mut grads, &vars, schedule.clip)?;
            let learning_rate = rate(global_step);
            optimizer.set_learning_rate(learning_rate);
            optimizer.step(&grads)?;
            global_step += 1;
            let loss = loss.to_scalar::<f32>()?;
            loss_sum += loss;
            progress(Progress::Step {
                epoch,
                step: step + 1,
                steps,
                loss,
                learning_rate,
            });
        }
        let score = dev()?;
        progress(Progress::Epoch {
            epoch,
            mean_loss: loss_sum / steps.max(1) as f32,
            dev: score.clone(),
        });
        if stopping.record(epoch, score, &better, varmap)? {
            break;
        }
    }
    let (best_epoch, best_dev) = stopping.restore_best(varmap)?;
    Ok(Fitted {
        best_epoch,
        best_dev,
    })
}

/// The learning rate at each global step.
fn learning_rate(schedule: &Schedule, steps_per_epoch: usize) -> impl Fn(usize) -> f64 {
    let peak = schedule.learning_rate;
    let total = (steps_per_epoch * schedule.epochs).max(1);
    let warmup = schedule
        .warmup
        .map(|share| ((total as f64) * share).ceil().max(1.0) as usize);
    move |step| match warmup {
        None => peak,
        Some(warmup) if step < warmup => peak * (step + 1) as f64 / warmup as f64,
        Some(warmup) => {
            peak * ((total.saturating_sub(step)) as f64 / (total - warmup).max(1) as f64).max(0.0)
        }
    }
}

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
