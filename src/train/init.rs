//! Reproducible weight initialisation. candle's CPU device cannot be seeded, so models built
//! on a fresh `VarMap` are re-initialised here from a seeded generator, variable by variable
//! in name order: the same seed gives the same model, which training reproducibility needs.
//! It touches only the variables it is given; it reads and writes no file.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

/// How a variable starts, chosen from its name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f32),
    Uniform(f32),
}

/// Re-initialises every variable of `varmap` with `choose(name, shape)`, drawing from a
/// generator seeded with `seed`.
pub fn init_seeded(
    varmap: &VarMap,
    seed: u64,
    choose: impl Fn(&str, &[usize]) -> Init,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match choose(name, &shape) {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0, std).expect("a positive standard deviation");
                (0..n).map(|_| d.sample(&mut rng)).collect()
            }
            Init::Uniform(bound) => {
                let d = Uniform::new_inclusive(-bound, bound).expect("a valid range");
                (0..n).map(|_| d.sample(&mut rng)).collect()
            }
        };
        var.set(&Tensor::from_vec(values, shape.as_slice(), var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// BERT's scheme: LayerNorm weights 1 and biases 0, every other bias 0, every other weight
/// normal(0, 0.02).
pub fn bert_init(name: &str, _shape: &[usize]) -> Init {
    let norm = name.contains("LayerNorm");
    if name.ends_with("bias") || name.ends_with("beta") {
        Init::Zeros
    } else if norm {
        Init::Ones
    } else {
        Init::Normal(0.02)
    }
}
