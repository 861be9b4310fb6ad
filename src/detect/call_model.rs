//! The call model: a logistic regression that reads a whole transcript, to tell a scam script
//! from an honest call about the same things.
//!
//! Keyword cues and the nearest canonical line tell the topic of a call, not who asks whom for
//! what: a card issuer verifying a customer who called in, an IT desk connecting to a screen it
//! was asked to fix, a court clerk naming a fine, all match the cues a scam matches (on sets of
//! near-domain honest calls written apart from the packs, keywords alone flagged 20-60% of
//! them). The model reads the transcript's windows as the scam-line check embeds them
//! (`[context.lines]`: the pack's sentence encoder, its window and stride), pools their vectors
//! over the call (element-wise maximum and mean, `2 x dim` values) and adds the keyword score:
//!
//! `p = sigmoid(w_max . max_i(v_i) + w_mean . mean_i(v_i) + w_score * score + bias)`
//!
//! Trained by `benches/train_call_model.py` on labelled transcripts (the dev set's tuning half
//! and near-domain calls written for training, see `benches/call_model_data/`); the weights
//! come with the standardisation folded in, so nothing else is needed here.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The format name the weights file carries, checked at load.
pub const FORMAT: &str = "vishguard-call-model-1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format: String,
    /// The sentence encoder the vectors come from (the pack's context encoder).
    encoder: String,
    dim: usize,
    /// `dim` weights of the max-pooled vector, `dim` of the mean-pooled one, then the keyword
    /// score's.
    weights: Vec<f32>,
    bias: f32,
    /// What it was trained on and how it measured: for people, not read here.
    #[serde(default)]
    #[allow(dead_code)]
    trained: serde_json::Value,
}

/// Weights of the call model (see the module's documentation).
#[derive(Debug, Clone)]
pub struct CallModel {
    /// The sentence encoder the model was trained on (a catalog name).
    pub encoder: String,
    dim: usize,
    w_max: Vec<f32>,
    w_mean: Vec<f32>,
    w_score: f32,
    bias: f32,
}

impl CallModel {
    /// Parses a weights file.
    ///
    /// Errors: not JSON of this format, a length that is not `2 * dim + 1`, a weight that is
    /// not finite.
    pub fn parse(text: &str) -> Result<Self> {
        let f: ModelFile = serde_json::from_str(text).context("not a call-model file")?;
        if f.format != FORMAT {
            bail!("format {:?}, expected {FORMAT:?}", f.format);
        }
        if f.dim == 0 || f.dim > 8192 || f.weights.len() != 2 * f.dim + 1 {
            bail!(
                "{} weights for dim {}: expected 2 * dim + 1 (dim in 1..8192)",
                f.weights.len(),
                f.dim
            );
        }
        if !f.bias.is_finite() || f.weights.iter().any(|w| !w.is_finite()) {
            bail!("a weight is not a finite number");
        }
        if f.encoder.trim().is_empty() {
            bail!("no encoder named");
        }
        Ok(Self {
            encoder: f.encoder,
            dim: f.dim,
            w_max: f.weights[..f.dim].to_vec(),
            w_mean: f.weights[f.dim..2 * f.dim].to_vec(),
            w_score: f.weights[2 * f.dim],
            bias: f.bias,
        })
    }

    /// The length of the window vectors it reads.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The probability that a transcript follows a scam script, from its windows' vectors
    /// (`[windows][dim]`, at least one) and its keyword score (0..1); `None` when there are
    /// no windows or a vector's length is not the model's.
    pub fn probability<V: AsRef<[f32]>>(&self, vectors: &[V], keyword_score: f32) -> Option<f32> {
        if vectors.is_empty() || vectors.iter().any(|v| v.as_ref().len() != self.dim) {
            return None;
        }
        let mut max = vec![f32::NEG_INFINITY; self.dim];
        let mut sum = vec![0f32; self.dim];
        for v in vectors {
            for ((m, s), &x) in max.iter_mut().zip(&mut sum).zip(v.as_ref()) {
                *m = m.max(x);
                *s += x;
            }
        }
        let n = vectors.len() as f32;
        let z = self.bias
            + self.w_score * keyword_score
            + dot(&self.w_max, &max)
            + sum
                .iter()
                .zip(&self.w_mean)
                .map(|(s, w)| s / n * w)
                .sum::<f32>();
        Some(1.0 / (1.0 + (-z).exp()))
    }

    /// The window that pushes the model furthest towards a scam, as the evidence to quote:
    /// the one with the highest `(w_max + w_mean / n) . v`. `None` for no windows.
    pub fn most_scam_like<V: AsRef<[f32]>>(&self, vectors: &[V]) -> Option<usize> {
        let n = vectors.len() as f32;
        vectors
            .iter()
            .map(|v| {
                v.as_ref()
                    .iter()
                    .zip(self.w_max.iter().zip(&self.w_mean))
                    .map(|(x, (a, b))| x * (a + b / n))
                    .sum::<f32>()
            })
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dim: usize, weights: &[f32], bias: f32) -> String {
        serde_json::json!({
            "format": FORMAT, "encoder": "minilm", "dim": dim, "weights": weights, "bias": bias,
        })
        .to_string()
    }

    #[test]
    fn the_probability_pools_the_windows_by_maximum_and_mean() {
        // dim 2: w_max = [1, 0], w_mean = [0, 2], w_score = 3, bias -1.
        let m = CallModel::parse(&file(2, &[1.0, 0.0, 0.0, 2.0, 3.0], -1.0)).unwrap();
        let windows = [vec![0.5, 0.1], vec![-0.5, 0.3]];
        // max = [0.5, 0.3], mean = [0.0, 0.2]: z = -1 + 3 * 0.4 + 0.5 + 0.4 = 1.1.
        let p = m.probability(&windows, 0.4).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.1f32).exp())).abs() < 1e-6, "{p}");
        assert_eq!(m.probability::<Vec<f32>>(&[], 0.4), None);
        assert_eq!(m.probability(&[vec![1.0]], 0.4), None, "wrong length");
        // (w_max + w_mean / 2) . v = v0 + v1: 0.6 against -0.2.
        assert_eq!(m.most_scam_like(&windows), Some(0));
    }

    #[test]
    fn a_bad_weights_file_is_an_error_naming_the_problem() {
        for (text, problem) in [
            ("{".to_owned(), "not a call-model file"),
            (file(2, &[1.0, 0.0, 0.0], 0.0), "expected 2 * dim + 1"),
            (file(0, &[0.0], 0.0), "expected 2 * dim + 1"),
            (
                file(1, &[1.0, 0.0, 0.0], 0.0).replace(FORMAT, "other"),
                "expected",
            ),
            (
                file(1, &[1.0, 0.0, 0.0], 0.0).replace("\"minilm\"", "\" \""),
                "no encoder",
            ),
            (
                file(1, &[1.0, 0.0, 0.0], 0.0).replace("1.0", "1e40"),
                "finite",
            ),
        ] {
            let e = format!("{:#}", CallModel::parse(&text).unwrap_err());
            assert!(e.contains(problem), "{e}");
        }
    }
}
