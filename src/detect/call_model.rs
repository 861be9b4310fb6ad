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
//! A model may read a second encoder too (`pieces`): the transcript without whitespace, cut
//! into pieces of `chars` characters side by side, each embedded by that encoder
//! (EmbeddingGemma), pooled the same way; its `2 x pieces.dim` weights come after the first
//! encoder's, before the keyword score's. With the Mandarin sets left out in turn, EmbeddingGemma
//! beside e5 flagged 1168 of 1190 scams and 35 of 1187 honest calls where e5 alone flagged 1135
//! and 55 (benches/encoder_compare/).
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
    /// The second encoder's pieces, when the model reads them.
    #[serde(default)]
    pieces: Option<PiecesFile>,
    /// `dim` weights of the max-pooled vector, `dim` of the mean-pooled one, then (with
    /// `pieces`) `pieces.dim` of its max-pooled vector and `pieces.dim` of its mean-pooled one,
    /// then the keyword score's.
    weights: Vec<f32>,
    bias: f32,
    /// What it was trained on and how it measured: for people, not read here.
    #[serde(default)]
    #[allow(dead_code)]
    trained: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PiecesFile {
    encoder: String,
    chars: usize,
    dim: usize,
}

/// The second encoder a call model reads, and its weights.
#[derive(Debug, Clone)]
pub struct Pieces {
    /// The sentence encoder (a catalog name).
    pub encoder: String,
    /// Characters per piece (whitespace removed first).
    pub chars: usize,
    dim: usize,
    w_max: Vec<f32>,
    w_mean: Vec<f32>,
}

impl Pieces {
    /// The transcript's pieces: its characters but whitespace, `chars` at a time, side by side
    /// (the last one shorter); none for a transcript of only whitespace.
    pub fn cut(&self, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        chars
            .chunks(self.chars.max(1))
            .map(|c| c.iter().collect())
            .collect()
    }
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
    /// The second encoder's pieces, when the model reads them.
    pub pieces: Option<Pieces>,
}

impl CallModel {
    /// Parses a weights file.
    ///
    /// Errors: not JSON of this format, a length that is not `2 * dim + 1` (or
    /// `2 * dim + 2 * pieces.dim + 1`), a weight that is not finite, pieces of no characters.
    pub fn parse(text: &str) -> Result<Self> {
        let f: ModelFile = serde_json::from_str(text).context("not a call-model file")?;
        if f.format != FORMAT {
            bail!("format {:?}, expected {FORMAT:?}", f.format);
        }
        if let Some(p) = &f.pieces {
            if p.dim == 0 || p.dim > 8192 || p.chars == 0 || p.chars > 4096 {
                bail!(
                    "pieces of {} characters and dim {}: expected characters in 1..4096 and \
                     dim in 1..8192",
                    p.chars,
                    p.dim
                );
            }
            if p.encoder.trim().is_empty() {
                bail!("no encoder named for the pieces");
            }
        }
        let piece_dim = f.pieces.as_ref().map_or(0, |p| p.dim);
        if f.dim == 0 || f.dim > 8192 || f.weights.len() != 2 * f.dim + 1 + 2 * piece_dim {
            bail!(
                "{} weights for dim {} and pieces of dim {piece_dim}: expected \
                 2 * dim + 2 * pieces.dim + 1 (dim in 1..8192)",
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
        let d = f.dim;
        Ok(Self {
            encoder: f.encoder,
            dim: d,
            w_max: f.weights[..d].to_vec(),
            w_mean: f.weights[d..2 * d].to_vec(),
            w_score: *f.weights.last().expect("the length was checked"),
            bias: f.bias,
            pieces: f.pieces.map(|p| Pieces {
                w_max: f.weights[2 * d..2 * d + p.dim].to_vec(),
                w_mean: f.weights[2 * d + p.dim..2 * d + 2 * p.dim].to_vec(),
                encoder: p.encoder,
                chars: p.chars,
                dim: p.dim,
            }),
        })
    }

    /// The length of the window vectors it reads.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The probability that a transcript follows a scam script, from its windows' vectors
    /// (`[windows][dim]`, at least one), its pieces' vectors when the model reads pieces
    /// (`[pieces][pieces.dim]`, at least one; ignored otherwise) and its keyword score (0..1);
    /// `None` when there are no windows or pieces, or a vector's length is not the model's.
    pub fn probability<V: AsRef<[f32]>, P: AsRef<[f32]>>(
        &self,
        vectors: &[V],
        pieces: &[P],
        keyword_score: f32,
    ) -> Option<f32> {
        let mut z = self.bias
            + self.w_score * keyword_score
            + pooled(vectors, self.dim, &self.w_max, &self.w_mean)?;
        if let Some(p) = &self.pieces {
            z += pooled(pieces, p.dim, &p.w_max, &p.w_mean)?;
        }
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

/// `w_max . max_i(v_i) + w_mean . mean_i(v_i)`; `None` for no vectors or one of another length.
fn pooled<V: AsRef<[f32]>>(
    vectors: &[V],
    dim: usize,
    w_max: &[f32],
    w_mean: &[f32],
) -> Option<f32> {
    if vectors.is_empty() || vectors.iter().any(|v| v.as_ref().len() != dim) {
        return None;
    }
    let mut max = vec![f32::NEG_INFINITY; dim];
    let mut sum = vec![0f32; dim];
    for v in vectors {
        for ((m, s), &x) in max.iter_mut().zip(&mut sum).zip(v.as_ref()) {
            *m = m.max(x);
            *s += x;
        }
    }
    let n = vectors.len() as f32;
    Some(
        max.iter()
            .zip(w_max)
            .map(|(m, w)| m * w)
            .chain(sum.iter().zip(w_mean).map(|(s, w)| s / n * w))
            .sum(),
    )
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
        let none: [Vec<f32>; 0] = [];
        let p = m.probability(&windows, &none, 0.4).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.1f32).exp())).abs() < 1e-6, "{p}");
        assert_eq!(m.probability(&none, &none, 0.4), None);
        assert_eq!(
            m.probability(&[vec![1.0]], &none, 0.4),
            None,
            "wrong length"
        );
        // (w_max + w_mean / 2) . v = v0 + v1: 0.6 against -0.2.
        assert_eq!(m.most_scam_like(&windows), Some(0));
    }

    #[test]
    fn a_second_encoders_pieces_are_pooled_beside_the_windows() {
        // dim 1 (w_max 1, w_mean 0), pieces dim 2 (w_max [0, 1], w_mean [2, 0]), w_score 3.
        let text = serde_json::json!({
            "format": FORMAT, "encoder": "e5-small", "dim": 1,
            "pieces": {"encoder": "embeddinggemma", "chars": 3, "dim": 2},
            "weights": [1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0], "bias": -1.0,
        })
        .to_string();
        let m = CallModel::parse(&text).unwrap();
        let pieces = m.pieces.as_ref().unwrap();
        assert_eq!(
            pieces.cut("您好 我是\n公安局的"),
            ["您好我", "是公安", "局的"]
        );
        assert!(pieces.cut(" \t").is_empty());
        let windows = [vec![0.5]];
        let piece_vectors = [vec![0.2, -0.4], vec![0.4, 0.1]];
        // -1 + 3 * 0.5 + 0.5 + (0.1 + 2 * 0.3) = 1.7.
        let p = m.probability(&windows, &piece_vectors, 0.5).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.7f32).exp())).abs() < 1e-6, "{p}");
        let none: [Vec<f32>; 0] = [];
        assert_eq!(
            m.probability(&windows, &none, 0.5),
            None,
            "pieces are needed"
        );
        assert_eq!(
            m.probability(&windows, &[vec![0.1]], 0.5),
            None,
            "wrong length"
        );
        let e = format!(
            "{:#}",
            CallModel::parse(&text.replace("\"chars\":3", "\"chars\":0")).unwrap_err()
        );
        assert!(e.contains("characters in 1..4096"), "{e}");
        let huge = text.replace("\"dim\":2", &format!("\"dim\":{}", usize::MAX));
        let e = format!("{:#}", CallModel::parse(&huge).unwrap_err());
        assert!(e.contains("dim in 1..8192"), "{e}");
        let e = format!(
            "{:#}",
            CallModel::parse(&text.replace("3.0]", "3.0, 1.0]")).unwrap_err()
        );
        assert!(e.contains("2 * pieces.dim"), "{e}");
    }

    #[test]
    fn a_bad_weights_file_is_an_error_naming_the_problem() {
        for (text, problem) in [
            ("{".to_owned(), "not a call-model file"),
            (
                file(2, &[1.0, 0.0, 0.0], 0.0),
                "expected 2 * dim + 2 * pieces.dim + 1",
            ),
            (
                file(0, &[0.0], 0.0),
                "expected 2 * dim + 2 * pieces.dim + 1",
            ),
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
