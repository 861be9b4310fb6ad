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
//! plus, where the model reads them, the pieces' and the sounds' terms below.
//!
//! A model may read a second encoder too (`pieces`): the transcript without whitespace, cut
//! into pieces of `chars` characters side by side, each embedded by that encoder
//! (EmbeddingGemma), pooled the same way; its `2 x pieces.dim` weights come after the first
//! encoder's, before the keyword score's. With the Mandarin sets left out in turn, EmbeddingGemma
//! beside e5 flagged 1168 of 1190 scams and 35 of 1187 honest calls where e5 alone flagged 1135
//! and 55 (benches/encoder_compare/).
//!
//! A model may read how the transcript sounds too (`sounds`): its characters as toneless pinyin
//! tokens (`phonetics::sound_tokens`, the initial blurred to its telephone-band class), each run
//! of `n` adjacent tokens hashed into one of `buckets` counts, log(1 + count), L2-normalised;
//! `buckets` weights after the pieces' (after the window vectors' without pieces), before the
//! keyword score's. Whisper base through an 8 kHz channel writes the scam's words as other
//! characters that sound alike or nearly (账户 zhang-hu as 常户 chang-hu), which the encoders
//! read as other words and the blurred sounds keep. With the Mandarin training groups left
//! out in turn, 2,048 buckets of blurred pairs flagged 1,182 of 1,308 scams and 18 of 1,298
//! honest calls, against 1,178 and 32 without (docs/measured.md, "How the call sounds").
//!
//! Trained by `benches/train_call_model.py` on labelled transcripts (the dev set's tuning half
//! and near-domain calls written for training, see `benches/call_model_data/`); the weights
//! come with the standardisation folded in, so nothing else is needed here.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::phonetics::sound_tokens;

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
    /// The sound n-grams, when the model reads them.
    #[serde(default)]
    sounds: Option<SoundsFile>,
    /// `dim` weights of the max-pooled vector, `dim` of the mean-pooled one, then (with
    /// `pieces`) `pieces.dim` of its max-pooled vector and `pieces.dim` of its mean-pooled one,
    /// then (with `sounds`) `sounds.buckets` of the sound n-grams, then the keyword score's.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SoundsFile {
    buckets: usize,
    n: usize,
    blur: bool,
}

/// How a transcript sounds, as a call model reads it (see the module's documentation), and
/// its weights.
#[derive(Debug, Clone)]
pub struct Sounds {
    /// Tokens per n-gram (1..=8, checked at parse).
    n: usize,
    /// Whether an initial is read as its class (`phonetics::sound_tokens`).
    blur: bool,
    weights: Vec<f32>,
}

impl Sounds {
    /// The transcript's sound features, `[buckets]`: each run of `n` tokens of adjacent
    /// characters (whitespace removed; a run through a character without a pinyin reading,
    /// i.e. not Han but for a few such as 〇, is skipped) joined by a space, hashed by 64-bit
    /// FNV-1a into a bucket; log(1 + count); scaled to length 1 (all zeros for a transcript
    /// with no run). `benches/train_call_model.py`
    /// (`attach_sounds`) computes the same.
    pub fn features(&self, text: &str) -> Vec<f32> {
        let tokens = sound_tokens(text, self.blur);
        let buckets = self.weights.len() as u64;
        let mut v = vec![0f32; self.weights.len()];
        for run in tokens.windows(self.n) {
            let Some(run) = run
                .iter()
                .map(Option::as_deref)
                .collect::<Option<Vec<&str>>>()
            else {
                continue;
            };
            v[(fnv1a(run.join(" ").as_bytes()) % buckets) as usize] += 1.0;
        }
        v.iter_mut().for_each(|x| *x = x.ln_1p());
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    fn dot(&self, text: &str) -> f32 {
        self.features(text)
            .iter()
            .zip(&self.weights)
            .map(|(x, w)| x * w)
            .sum()
    }
}

/// 64-bit FNV-1a (Fowler, Noll, Vo), the hash that puts a sound n-gram in its bucket.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
    /// The sound n-grams, when the model reads them.
    pub sounds: Option<Sounds>,
}

impl CallModel {
    /// Parses a weights file.
    ///
    /// Errors: not JSON of this format, a length that is not `2 * dim + 2 * pieces.dim +
    /// sounds.buckets + 1` (without pieces or sounds, their terms 0), a weight that is not
    /// finite, pieces of no characters, sounds of buckets outside 1..=2^20 or runs outside
    /// 1..=8 tokens.
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
        if let Some(s) = &f.sounds {
            if s.buckets == 0 || s.buckets > 1 << 20 || s.n == 0 || s.n > 8 {
                bail!(
                    "sounds of {} buckets and runs of {}: expected buckets in 1..=1048576 and \
                     runs of 1..=8 tokens",
                    s.buckets,
                    s.n
                );
            }
        }
        let piece_dim = f.pieces.as_ref().map_or(0, |p| p.dim);
        let buckets = f.sounds.as_ref().map_or(0, |s| s.buckets);
        if f.dim == 0 || f.dim > 8192 || f.weights.len() != 2 * f.dim + 2 * piece_dim + buckets + 1
        {
            bail!(
                "{} weights for dim {}, pieces of dim {piece_dim} and {buckets} sound buckets: \
                 expected 2 * dim + 2 * pieces.dim + sounds.buckets + 1 (dim in 1..8192)",
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
        let sounds_from = 2 * d + 2 * piece_dim;
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
            sounds: f.sounds.map(|s| Sounds {
                n: s.n,
                blur: s.blur,
                weights: f.weights[sounds_from..sounds_from + s.buckets].to_vec(),
            }),
        })
    }

    /// The length of the window vectors it reads.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The probability that a transcript follows a scam script, from its windows' vectors
    /// (`[windows][dim]`, at least one), its pieces' vectors when the model reads pieces
    /// (`[pieces][pieces.dim]`, at least one; ignored otherwise), its text (read for the
    /// sounds, when the model reads them) and its keyword score (0..1); `None` when there are
    /// no windows or pieces, a vector's length is not the model's, or the sum overflows (a
    /// weights file of huge finite weights: no reading rather than NaN).
    pub fn probability<V: AsRef<[f32]>, P: AsRef<[f32]>>(
        &self,
        vectors: &[V],
        pieces: &[P],
        text: &str,
        keyword_score: f32,
    ) -> Option<f32> {
        let mut z = self.bias
            + self.w_score * keyword_score
            + pooled(vectors, self.dim, &self.w_max, &self.w_mean)?;
        if let Some(p) = &self.pieces {
            z += pooled(pieces, p.dim, &p.w_max, &p.w_mean)?;
        }
        if let Some(s) = &self.sounds {
            z += s.dot(text);
        }
        if !z.is_finite() {
            return None;
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
        let p = m.probability(&windows, &none, "", 0.4).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.1f32).exp())).abs() < 1e-6, "{p}");
        assert_eq!(m.probability(&none, &none, "", 0.4), None);
        assert_eq!(
            m.probability(&[vec![1.0]], &none, "", 0.4),
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
        let p = m.probability(&windows, &piece_vectors, "", 0.5).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.7f32).exp())).abs() < 1e-6, "{p}");
        let none: [Vec<f32>; 0] = [];
        assert_eq!(
            m.probability(&windows, &none, "", 0.5),
            None,
            "pieces are needed"
        );
        assert_eq!(
            m.probability(&windows, &[vec![0.1]], "", 0.5),
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

    fn sounds_file(blur: bool) -> String {
        // dim 1 (w_max 1, w_mean 0), 8 buckets of pairs, w_score 0.
        let mut weights = vec![1.0, 0.0];
        weights.extend([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0]);
        weights.push(0.0);
        serde_json::json!({
            "format": FORMAT, "encoder": "e5-small", "dim": 1,
            "sounds": {"buckets": 8, "n": 2, "blur": blur},
            "weights": weights, "bias": 0.0,
        })
        .to_string()
    }

    #[test]
    fn the_sounds_are_hashed_pairs_of_blurred_syllables_as_the_trainer_hashes_them() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        // The published test vector of 64-bit FNV-1a.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let m = CallModel::parse(&sounds_file(true)).unwrap();
        let sounds = m.sounds.as_ref().unwrap();
        // Blurred: 安 0|an, 全 1|üan, 账 and 长 1|ang, 户 3|u; whitespace is dropped and runs
        // through a, b skipped. Buckets by train_call_model.py's fnv1a, modulo 8: "0|an
        // 1|üan" 3, "1|üan 1|ang" 7, "1|ang 3|u" 6 (twice).
        let v = sounds.features("安全 账户ab长户");
        let (one, two) = (2f32.ln(), 3f32.ln());
        let norm = (2.0 * one * one + two * two).sqrt();
        let expected = [0.0, 0.0, 0.0, one, 0.0, 0.0, two, one].map(|x| x / norm);
        for (got, want) in v.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
        // 长 reads zhang in the pinyin crate, a homophone of 账 either way; 常 chang is read as
        // 账 only with the initial blurred.
        assert_eq!(sounds.features("账户"), sounds.features("长户"));
        let exact = CallModel::parse(&sounds_file(false)).unwrap();
        let exact = exact.sounds.as_ref().unwrap();
        assert_ne!(exact.features("账户"), exact.features("常户"));
        assert_eq!(sounds.features("账户"), sounds.features("常户"));
        assert!(sounds.features("ab 12").iter().all(|&x| x == 0.0));
        // z = 1 * 0.5 (window) + 1 * v[3] + 2 * v[6].
        let windows = [vec![0.5]];
        let none: [Vec<f32>; 0] = [];
        let z = 0.5 + expected[3] + 2.0 * expected[6];
        let p = m
            .probability(&windows, &none, "安全 账户ab长户", 0.3)
            .unwrap();
        assert!((p - 1.0 / (1.0 + (-z).exp())).abs() < 1e-6, "{p}");
        for (good, bad) in [("\"buckets\":8", "\"buckets\":0"), ("\"n\":2", "\"n\":9")] {
            let e = format!(
                "{:#}",
                CallModel::parse(&sounds_file(true).replace(good, bad)).unwrap_err()
            );
            assert!(e.contains("runs of 1..=8 tokens"), "{e}");
        }
        // Finite weights whose sum overflows give no reading, not NaN.
        let huge = sounds_file(true)
            .replace("[1.0,0.0,", "[3e38,0.0,")
            .replace(",2.0,", ",3e38,");
        let m = CallModel::parse(&huge).unwrap();
        assert_eq!(
            m.probability(&[vec![1.0]], &none, "安全 账户ab长户", 0.3),
            None
        );
        let e = format!(
            "{:#}",
            CallModel::parse(&sounds_file(true).replace("\"buckets\":8", "\"buckets\":7"))
                .unwrap_err()
        );
        assert!(e.contains("sounds.buckets"), "{e}");
    }

    #[test]
    fn a_bad_weights_file_is_an_error_naming_the_problem() {
        for (text, problem) in [
            ("{".to_owned(), "not a call-model file"),
            (
                file(2, &[1.0, 0.0, 0.0], 0.0),
                "expected 2 * dim + 2 * pieces.dim + sounds.buckets + 1",
            ),
            (
                file(0, &[0.0], 0.0),
                "expected 2 * dim + 2 * pieces.dim + sounds.buckets + 1",
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
