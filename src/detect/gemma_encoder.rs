//! EmbeddingGemma (google/embeddinggemma-300m, Vera et al. 2025): a Gemma 3 text model read
//! bidirectionally, then sentence-transformers' head: mean pooling over every token (the prompt
//! included), two bias-free linear layers (768 -> 3072 -> 768) and L2 normalisation.
//!
//! Followed: Hugging Face transformers' `modeling_gemma3.py` (5.25, `use_bidirectional_attention`)
//! and the model folder's `modules.json`, `1_Pooling`, `2_Dense`, `3_Dense`. candle-transformers'
//! `gemma3` is causal only and keeps no mask for padding, so the forward pass is written here:
//!
//! - token embeddings times `sqrt(hidden)`;
//! - per layer: RMSNorm `x / rms(x) * (1 + w)` before and after attention and before and after
//!   the MLP; attention with per-head RMSNorm of queries and keys, rotary positions (theta
//!   10,000 on sliding layers, 1,000,000 on full ones, rotate-half layout), scale
//!   `query_pre_attn_scalar^-1/2`, every query head sharing the one key/value head;
//!   MLP `down(gelu_tanh(gate(x)) * up(x))`;
//! - a final RMSNorm.
//!
//! Sliding layers see keys with `|i - j| < sliding_window / 2 + 1` (257 for the config's 512:
//! transformers' `Gemma3TextConfig` halves the window of a bidirectional model); full layers
//! see every key. Texts are cut at [`MAX_TOKENS`] = 512 tokens.
//!
//! Against sentence-transformers 6.3 with torch on CPU (f32 throughout), vectors agree to
//! cosine > 0.9999, a text past the sliding window included (`tests/detector.rs`).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{linear_no_bias, Linear, Module, VarBuilder};
use serde::Deserialize;

use crate::model_store::weights::WeightFile;

/// Longest input in tokens (the prompt included); longer texts are cut (the call model's
/// 128-character pieces are under 200).
pub const MAX_TOKENS: usize = 512;

/// The prompt the model card gives for classification (`config_sentence_transformers.json`,
/// `prompts.Classification`); put before every text, and pooled with it.
pub const CLASSIFICATION_PROMPT: &str = "task: classification | query: ";

/// The fields of `config.json` (`Gemma3TextConfig`) the forward pass reads.
#[derive(Debug, Deserialize)]
pub struct GemmaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_local_base_freq: f64,
    pub query_pre_attn_scalar: f64,
    pub sliding_window: usize,
    pub layer_types: Vec<String>,
    pub hidden_activation: String,
    #[serde(default)]
    pub use_bidirectional_attention: bool,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

/// `config.json` names a Gemma 3 text model (as opposed to a BERT).
pub fn is_gemma_config(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind {
        model_type: Option<String>,
    }
    serde_json::from_str::<Kind>(text)
        .ok()
        .and_then(|k| k.model_type)
        .is_some_and(|t| t == "gemma3_text")
}

struct RmsNorm {
    /// `1 + w`: Gemma stores the weight as an offset from one.
    scale: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            scale: (vb.get(size, "weight")? + 1.0)?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.scale, self.eps)
    }
}

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attention_norm: RmsNorm,
    pre_mlp_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_mlp_norm: RmsNorm,
    /// Full attention (global rotary base) rather than sliding (local base).
    full: bool,
}

/// The transformer and sentence-transformers head of EmbeddingGemma.
pub struct GemmaEncoder {
    /// Token embeddings `[vocab, hidden]`, kept in f16: the table is 262,144 x 768, 805 MB in
    /// f32 against about 400 MB for the rest of the model; the rows a batch uses are widened.
    words: Tensor,
    scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    dense_up: Linear,
    dense_down: Linear,
    heads: usize,
    head_dim: usize,
    query_scale: f64,
    /// Sliding layers see keys closer than this (`sliding_window / 2 + 1`, see the module).
    window: usize,
    /// Inverse rotary frequencies `[head_dim / 2]` for sliding and full layers.
    inv_freq_local: Vec<f32>,
    inv_freq_global: Vec<f32>,
    device: Device,
}

fn read_config(dir: &std::path::Path) -> Result<GemmaConfig> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let c: GemmaConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a Gemma 3 text config", path.display()))?;
    if c.model_type != "gemma3_text" {
        bail!(
            "{}: model_type {:?}, expected gemma3_text",
            path.display(),
            c.model_type
        );
    }
    if !c.use_bidirectional_attention {
        bail!(
            "{}: a causal Gemma (use_bidirectional_attention is not set) is a language model, \
             not EmbeddingGemma",
            path.display()
        );
    }
    if c.hidden_activation != "gelu_pytorch_tanh" || c.attn_logit_softcapping.is_some() {
        bail!(
            "{}: activation {:?} or logit soft-capping is not EmbeddingGemma's",
            path.display(),
            c.hidden_activation
        );
    }
    if !(1..=64).contains(&c.num_attention_heads)
        || c.num_key_value_heads != 1
        || c.layer_types.len() != c.num_hidden_layers
        || c.sliding_window < 2
        || !(2..=4096).contains(&c.head_dim)
        || !c.head_dim.is_multiple_of(2)
        || !(1..=16384).contains(&c.hidden_size)
    {
        bail!(
            "{}: {} query heads over {} key/value heads of {} values, {} layer types for {} \
             layers, sliding window {}: this reader handles 1..64 heads over one key/value head \
             of an even size, a type per layer and a window of at least 2",
            path.display(),
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.layer_types.len(),
            c.num_hidden_layers,
            c.sliding_window
        );
    }
    if let Some(t) = c
        .layer_types
        .iter()
        .find(|t| *t != "full_attention" && *t != "sliding_attention")
    {
        bail!(
            "{}: layer type {t:?} is neither full_attention nor sliding_attention",
            path.display()
        );
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let sound = positive(c.query_pre_attn_scalar)
        && positive(c.rope_theta)
        && positive(c.rope_local_base_freq)
        && c.rms_norm_eps.is_finite()
        && c.rms_norm_eps >= 0.0;
    if !sound {
        bail!(
            "{}: query_pre_attn_scalar, rope_theta and rope_local_base_freq must be positive and \
             rms_norm_eps at least 0",
            path.display()
        );
    }
    if c.rope_scaling.as_ref().is_some_and(|r| !r.is_null()) {
        bail!(
            "{}: rope_scaling is not read here; EmbeddingGemma has none",
            path.display()
        );
    }
    Ok(c)
}

/// Checks that a sentence-transformers module folder holds what the head assumes: a Dense
/// layer `inputs -> outputs` with no bias and no activation.
fn check_dense(dir: &std::path::Path, inputs: usize, outputs: usize) -> Result<()> {
    #[derive(Deserialize)]
    struct Dense {
        in_features: usize,
        out_features: usize,
        bias: bool,
        activation_function: String,
    }
    let path = dir.join("config.json");
    let d: Dense = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a Dense layer's config", path.display()))?;
    if d.in_features != inputs
        || d.out_features != outputs
        || d.bias
        || !d.activation_function.ends_with("Identity")
    {
        bail!(
            "{}: {} -> {} (bias {}, activation {}); expected {inputs} -> {outputs}, no bias, \
             Identity",
            path.display(),
            d.in_features,
            d.out_features,
            d.bias,
            d.activation_function
        );
    }
    Ok(())
}

fn inverse_frequencies(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| (1.0 / base.powf(2.0 * i as f64 / dim as f64)) as f32)
        .collect()
}

impl GemmaEncoder {
    /// Loads a sentence-transformers folder of EmbeddingGemma: `config.json`,
    /// `model.safetensors`, `2_Dense/` and `3_Dense/` (each `config.json` and
    /// `model.safetensors` with `linear.weight`).
    ///
    /// Errors: a file is missing or unreadable, the config is not a bidirectional Gemma 3 of
    /// the shape handled here, or a tensor is missing or of the wrong shape.
    pub fn load(dir: &std::path::Path, device: &Device) -> Result<Self> {
        let c = read_config(dir)?;
        let h = c.hidden_size;
        let open = |path: std::path::PathBuf| -> Result<VarBuilder<'static>> {
            Ok(WeightFile::open(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .into_var_builder(DType::F32, device))
        };
        let vb = open(dir.join("model.safetensors"))?;
        let model = || -> candle_core::Result<(Tensor, Vec<Layer>, RmsNorm)> {
            let words = vb
                .pp("embed_tokens")
                .to_dtype(DType::F16)
                .get((c.vocab_size, h), "weight")?;
            let (heads, hd, eps) = (c.num_attention_heads, c.head_dim, c.rms_norm_eps);
            let layers = (0..c.num_hidden_layers)
                .map(|i| {
                    let l = vb.pp(format!("layers.{i}"));
                    let a = l.pp("self_attn");
                    let m = l.pp("mlp");
                    Ok(Layer {
                        input_norm: RmsNorm::load(l.pp("input_layernorm"), h, eps)?,
                        q: linear_no_bias(h, heads * hd, a.pp("q_proj"))?,
                        k: linear_no_bias(h, hd, a.pp("k_proj"))?,
                        v: linear_no_bias(h, hd, a.pp("v_proj"))?,
                        o: linear_no_bias(heads * hd, h, a.pp("o_proj"))?,
                        q_norm: RmsNorm::load(a.pp("q_norm"), hd, eps)?,
                        k_norm: RmsNorm::load(a.pp("k_norm"), hd, eps)?,
                        post_attention_norm: RmsNorm::load(
                            l.pp("post_attention_layernorm"),
                            h,
                            eps,
                        )?,
                        pre_mlp_norm: RmsNorm::load(l.pp("pre_feedforward_layernorm"), h, eps)?,
                        gate: linear_no_bias(h, c.intermediate_size, m.pp("gate_proj"))?,
                        up: linear_no_bias(h, c.intermediate_size, m.pp("up_proj"))?,
                        down: linear_no_bias(c.intermediate_size, h, m.pp("down_proj"))?,
                        post_mlp_norm: RmsNorm::load(l.pp("post_feedforward_layernorm"), h, eps)?,
                        full: c.layer_types[i] == "full_attention",
                    })
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let norm = RmsNorm::load(vb.pp("norm"), h, eps)?;
            Ok((words, layers, norm))
        };
        let (words, layers, norm) = model().with_context(|| {
            format!(
                "{}: not EmbeddingGemma's weights",
                dir.join("model.safetensors").display()
            )
        })?;
        let inner = 4 * h;
        check_dense(&dir.join("2_Dense"), h, inner)?;
        check_dense(&dir.join("3_Dense"), inner, h)?;
        let dense = |folder: &str, i: usize, o: usize| -> Result<Linear> {
            let path = dir.join(folder).join("model.safetensors");
            linear_no_bias(i, o, open(path.clone())?.pp("linear"))
                .with_context(|| format!("{}: not a Dense layer", path.display()))
        };
        Ok(Self {
            words,
            scale: (h as f64).sqrt(),
            layers,
            norm,
            dense_up: dense("2_Dense", h, inner)?,
            dense_down: dense("3_Dense", inner, h)?,
            heads: c.num_attention_heads,
            head_dim: c.head_dim,
            query_scale: c.query_pre_attn_scalar.powf(-0.5),
            window: c.sliding_window / 2 + 1,
            inv_freq_local: inverse_frequencies(c.rope_local_base_freq, c.head_dim),
            inv_freq_global: inverse_frequencies(c.rope_theta, c.head_dim),
            device: device.clone(),
        })
    }

    /// Rotary tables `cos`, `sin`, each `[tokens, head_dim / 2]`, for positions `0..tokens`.
    fn rotary(&self, inv_freq: &[f32], tokens: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = inv_freq.len();
        let angles: Vec<f32> = (0..tokens)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (tokens, half), &self.device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// `ids`, `mask`: `[batch, tokens]` u32 (mask 1 for a token, 0 for right padding).
    /// Returns one L2-normalised sentence vector per row, `[batch, hidden]` f32.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > MAX_TOKENS {
            candle_core::bail!("{t} tokens exceed EmbeddingGemma's {MAX_TOKENS} handled here");
        }
        let h = self.words.dim(1)?;
        let (heads, hd) = (self.heads, self.head_dim);
        let mut x = (self
            .words
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(DType::F32)?
            .reshape((b, t, h))?
            * self.scale)?;
        let mask_f = mask.to_dtype(DType::F32)?;
        // Padding keys get a large negative score before the softmax; every query sees every
        // real key on full layers, and those closer than the window on sliding ones.
        let blocked = ((&mask_f - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?;
        let sliding_blocked = if t > self.window {
            let far: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..t).map(move |j| {
                        if i.abs_diff(j) >= self.window {
                            -1e9
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let far = Tensor::from_vec(far, (1, 1, t, t), &self.device)?;
            Some(blocked.broadcast_add(&far)?)
        } else {
            None
        };
        let local = self.rotary(&self.inv_freq_local, t)?;
        let global = self.rotary(&self.inv_freq_global, t)?;
        for l in &self.layers {
            let (cos, sin) = if l.full { &global } else { &local };
            let blocked = match &sliding_blocked {
                Some(m) if !l.full => m,
                _ => &blocked,
            };
            let y = l.input_norm.forward(&x)?;
            let q =
                l.q.forward(&y)?
                    .reshape((b, t, heads, hd))?
                    .transpose(1, 2)?;
            let q = l.q_norm.forward(&q)?;
            let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
            let k = l.k.forward(&y)?.reshape((b, t, 1, hd))?.transpose(1, 2)?;
            let k = candle_nn::rotary_emb::rope(&l.k_norm.forward(&k)?, cos, sin)?;
            let v = l.v.forward(&y)?.reshape((b, 1, t, hd))?;
            // One key/value head: the query heads stack into one matrix product.
            let q = (q.reshape((b, 1, heads * t, hd))? * self.query_scale)?;
            let scores = q
                .matmul(&k.t()?.contiguous()?)?
                .reshape((b, heads, t, t))?
                .broadcast_add(blocked)?;
            let weights = crate::asr::fast_ops::softmax_last_dim(&scores)?;
            let context = weights
                .reshape((b, 1, heads * t, t))?
                .matmul(&v)?
                .reshape((b, heads, t, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, heads * hd))?;
            let attended = l.post_attention_norm.forward(&l.o.forward(&context)?)?;
            x = (x + attended)?;
            let y = l.pre_mlp_norm.forward(&x)?;
            let inner = (l.gate.forward(&y)?.gelu()? * l.up.forward(&y)?)?;
            let out = l.post_mlp_norm.forward(&l.down.forward(&inner)?)?;
            x = (x + out)?;
        }
        let x = self.norm.forward(&x)?;
        let m = mask_f.unsqueeze(2)?;
        let counts = m.sum(1)?.clamp(1.0, f64::MAX)?;
        let mean = x.broadcast_mul(&m)?.sum(1)?.broadcast_div(&counts)?;
        let v = self.dense_down.forward(&self.dense_up.forward(&mean)?)?;
        let norm = v.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        v.broadcast_div(&norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_frequencies_follow_the_reference_formula() {
        // transformers: 1 / base^(arange(0, dim, 2) / dim)
        let f = inverse_frequencies(10_000.0, 256);
        assert_eq!(f.len(), 128);
        assert!((f[0] - 1.0).abs() < 1e-7);
        assert!((f[1] - 10_000f32.powf(-2.0 / 256.0)).abs() < 1e-7);
        assert!((f[127] - 10_000f32.powf(-254.0 / 256.0)).abs() < 1e-9);
    }

    #[test]
    fn a_bert_config_is_not_taken_for_gemma() {
        assert!(is_gemma_config(r#"{"model_type": "gemma3_text", "x": 1}"#));
        assert!(!is_gemma_config(r#"{"model_type": "bert"}"#));
        assert!(!is_gemma_config("not json"));
    }

    #[test]
    fn a_causal_gemma_or_a_wrong_head_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = r#"{"model_type": "gemma3_text", "vocab_size": 8, "hidden_size": 4,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
            "num_key_value_heads": 1, "head_dim": 4, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
            "rope_local_base_freq": 1e4, "query_pre_attn_scalar": 4, "sliding_window": 512,
            "layer_types": ["full_attention"], "hidden_activation": "gelu_pytorch_tanh"}"#;
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let err = format!("{:#}", read_config(dir.path()).unwrap_err());
        assert!(err.contains("causal"), "{err}");
        let bidirectional = config.replace(
            "\"layer_types\"",
            "\"use_bidirectional_attention\": true, \"layer_types\"",
        );
        std::fs::write(dir.path().join("config.json"), bidirectional).unwrap();
        assert!(read_config(dir.path()).is_ok());
        std::fs::create_dir(dir.path().join("2_Dense")).unwrap();
        std::fs::write(
            dir.path().join("2_Dense/config.json"),
            r#"{"in_features": 4, "out_features": 16, "bias": true,
                "activation_function": "torch.nn.modules.linear.Identity"}"#,
        )
        .unwrap();
        let err = format!(
            "{:#}",
            check_dense(&dir.path().join("2_Dense"), 4, 16).unwrap_err()
        );
        assert!(err.contains("bias true"), "{err}");
    }
}
