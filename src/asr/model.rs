//! Whisper as plain tensor code: encoder, decoder with a self-attention KV cache, nothing else.
//! Streaming, batching and decoding policy live in the files beside this one.

use super::fast_ops::{gelu_erf, softmax_last_dim};
use super::step_attention;
use super::step_weights::StepCopy;
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a Hugging Face Whisper `config.json` that inference needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub num_mel_bins: usize,
    pub max_source_positions: usize,
    pub d_model: usize,
    pub encoder_attention_heads: usize,
    pub encoder_layers: usize,
    pub decoder_attention_heads: usize,
    pub decoder_layers: usize,
    pub vocab_size: usize,
    pub max_target_positions: usize,
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
}

impl Config {
    /// openai-whisper's rule: the multilingual vocabulary has 51865 or more entries.
    pub fn is_multilingual(&self) -> bool {
        self.vocab_size >= 51865
    }
}

/// Which weights get a copy in another format, for the CPU. The default: none but the exact
/// f16 copies decoder steps read ([`Projection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quant {
    /// A bf16 copy, packed for AMX tiles, of every layer that only ever sees many rows: the
    /// encoder's linear layers and the decoder's cross-attention keys and values
    /// ([`super::amx_bf16`]). Only where [`super::amx_bf16::available`].
    pub tiles: bool,
    /// Decoder steps read an int8 copy of the vocabulary projection (a scale per 16 weights)
    /// instead of the f16 one ([`StepCopy::I8`], [`Decoder::logits`]).
    pub int8_vocabulary: bool,
}

fn linear(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(i, o, vb)
}

fn linear_no_bias(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear_no_bias(i, o, vb)
}

/// A linear layer `x W^T + b` that may keep a narrow copy of `W` for calls of a few rows on
/// the CPU in f32: a decoder step multiplies one row per sequence by every weight of the
/// decoder, so it is bound by memory bandwidth, and the copy (f16, exact) halves the bytes with
/// the same f32 products ([`super::step_weights`]). More rows (prompts, the encoder) go through `W` in f32, or, for
/// a layer that only sees many rows, through a bf16 copy on AMX tiles when the model was
/// loaded with [`Quant::tiles`] ([`super::amx_bf16`]).
enum Projection {
    /// The f32 weights, with the copy for decoder steps where it is kept.
    Dense {
        dense: Linear,
        step: Option<StepCopy>,
    },
    /// Only the tile copy: the f32 weights would never be read.
    Tiles(TileWeights),
}

/// A layer's weights packed for AMX tiles, both bf16 halves (see
/// [`super::amx_bf16::PackedWeights`]), with its bias as f32 values.
struct TileWeights {
    packed: super::amx_bf16::PackedWeights,
    bias: Option<Vec<f32>>,
}

impl TileWeights {
    /// `weight [n, k]`, `bias [n]`.
    fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        Ok(Self {
            packed: super::amx_bf16::PackedWeights::of_tensor(weight, true)?,
            bias: bias
                .map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
                .transpose()?,
        })
    }
}

impl Projection {
    /// `few_rows`: this layer serves decoder steps, so the step copy is worth its memory.
    /// Otherwise the tile copy, with [`Quant::tiles`].
    fn new(dense: Linear, few_rows: bool, quant: Quant) -> Result<Self> {
        if few_rows {
            // f16 (exact) even with the int8 vocabulary: int8 copies of these layers as well
            // took tiny.en's telephone clips from 0.429 (f32) to 0.443, past the 0.01 bound
            // (tests/transcription.rs; the vocabulary alone 0.435, these layers alone 0.423),
            // and the vocabulary is 71% of tiny.en's step bytes (55% of base's).
            let step = StepCopy::of(dense.weight(), false)?;
            return Ok(Self::Dense { dense, step });
        }
        if quant.tiles && dense.weight().device().is_cpu() {
            return Ok(Self::Tiles(TileWeights::new(dense.weight(), dense.bias())?));
        }
        Ok(Self::Dense { dense, step: None })
    }

    fn has_tiles(&self) -> bool {
        matches!(self, Self::Tiles(_))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (dense, step) = match self {
            Self::Dense { dense, step } => (dense, step),
            Self::Tiles(t) => return super::amx_bf16::linear(x, &t.packed, t.bias.as_deref()),
        };
        match StepCopy::product_of_few_rows(step.as_ref(), x)? {
            Some(y) => match dense.bias() {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            },
            None => dense.forward(x),
        }
    }
}

/// Which layers of an [`Attention`] serve decoder steps (and so get step copies, see
/// [`Projection`]).
#[derive(Clone, Copy)]
enum StepLayers {
    /// The encoder: every call has a window's rows.
    None,
    /// The decoder's self-attention: all four.
    All,
    /// The decoder's cross-attention: the queries and the output; the keys and values are
    /// projected once per window from the encoder's rows.
    QueryAndOutput,
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(d, 1e-5, vb)
}

/// The most attention weights (elements of [b, heads, query rows, key rows]) one step of
/// [`Attention::attend`] holds on the CPU: 4 Mi f32 = 16 MiB, a fifth of one 30-s window of
/// base.
const CPU_ATTENTION_ELEMS: usize = 4 << 20;

struct Attention {
    q: Projection,
    k: Projection,
    v: Projection,
    out: Projection,
    n_head: usize,
}

impl Attention {
    /// `quant`: the copies the layers get ([`Projection::new`]).
    fn load(
        d: usize,
        n_head: usize,
        steps: StepLayers,
        quant: Quant,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (all, qo) = match steps {
            StepLayers::None => (false, false),
            StepLayers::All => (true, true),
            StepLayers::QueryAndOutput => (false, true),
        };
        Ok(Self {
            q: Projection::new(linear(d, d, vb.pp("q_proj"))?, qo, quant)?,
            k: Projection::new(linear_no_bias(d, d, vb.pp("k_proj"))?, all, quant)?,
            v: Projection::new(linear(d, d, vb.pp("v_proj"))?, all, quant)?,
            out: Projection::new(linear(d, d, vb.pp("out_proj"))?, qo, quant)?,
            n_head,
        })
    }

    /// [b, t, d] -> [b, h, t, d/h]
    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.n_head, d / self.n_head))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Self-attention of `x [b, t, d]` over itself with no mask, in one pass on AMX tiles
    /// ([`super::amx_bf16::self_attention`]): `Some` only when this layer's projections have
    /// tile copies ([`Quant::tiles`], the encoder).
    fn self_attention_on_tiles(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !self.q.has_tiles() {
            return Ok(None);
        }
        let d = x.dim(2)?;
        let scale = 1.0 / ((d / self.n_head) as f32).sqrt();
        let o = super::amx_bf16::self_attention(
            &self.q.forward(x)?,
            &self.k.forward(x)?,
            &self.v.forward(x)?,
            self.n_head,
            scale,
        )?;
        self.out.forward(&o).map(Some)
    }

    fn project_kv(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.heads(&self.k.forward(x)?)?,
            self.heads(&self.v.forward(x)?)?,
        ))
    }

    /// `x [b, t, d]` attends over `k, v [bk, heads, t_k, d / heads]`; query row `i` reads the
    /// keys and values of row `kv_rows[i]` (of row `i` when `None`). `mask`: additive,
    /// `[t, t_k]` or `[b, 1, t, t_k]`.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kv_rows: Option<&[u32]>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        // The 1/sqrt(head width) scale goes on the queries ([t, d]) rather than on the
        // scores ([heads, t, t_k]): the same product, one pass over far fewer elements (a
        // 30-s window of tiny.en: 0.6 M instead of 13.5 M per layer).
        let scale = 1.0 / ((d / self.n_head) as f64).sqrt();
        let q = self.heads(&(self.q.forward(x)? * scale)?)?;
        let t_k = k.dim(2)?;
        if t == 1 && step_attention::applies(&q) {
            // A decoder step: one query per sequence, keys and values read in place.
            let mask = mask.map(|m| m.reshape((b, t_k))).transpose()?;
            let o = step_attention::attend_one_query(&q, k, v, kv_rows, mask.as_ref())?;
            return self.out.forward(&o.reshape((b, 1, d))?);
        }
        let shared;
        let (k, v) = match kv_rows {
            Some(rows) => {
                let idx = Tensor::new(rows, k.device())?;
                shared = (k.index_select(&idx, 0)?, v.index_select(&idx, 0)?);
                (&shared.0, &shared.1)
            }
            None => (k, v),
        };
        // On the CPU the weights of one encoder layer over a 30-s window are
        // [b, heads, 1500, 1500]: 72 MB each for base, and three copies live at once
        // (scores, scaled, softmax). Query rows are independent, so they are taken a block at
        // a time: peak RSS of `scan --model base` on a 3-h call fell from 654 MB to the
        // figure in benches/memory.sh's note. Devices with their own memory take all rows.
        let rows = if x.device().is_cpu() {
            (CPU_ATTENTION_ELEMS / (b * self.n_head * t_k).max(1)).clamp(1, t)
        } else {
            t
        };
        let mut blocks = Vec::with_capacity(t.div_ceil(rows));
        for start in (0..t).step_by(rows) {
            let len = rows.min(t - start);
            let q = if len == t {
                q.clone()
            } else {
                q.narrow(2, start, len)?.contiguous()?
            };
            let mut w = q.matmul(&k.t()?)?;
            if let Some(mask) = mask {
                // The query rows are the mask's second-last dimension ([n, m] or [b, 1, n, m]).
                let rows_dim = mask.rank() - 2;
                let mask = if len == t || mask.dim(rows_dim)? == 1 {
                    mask.clone()
                } else {
                    mask.narrow(rows_dim, start, len)?
                };
                w = w.broadcast_add(&mask)?;
            }
            let w = softmax_last_dim(&w)?;
            blocks.push(w.matmul(v)?);
        }
        let o = if blocks.len() == 1 {
            blocks.pop().expect("one block")
        } else {
            Tensor::cat(&blocks, 2)?
        };
        let o = o.transpose(1, 2)?.reshape((b, t, d))?;
        self.out.forward(&o)
    }
}

struct Mlp {
    fc1: Projection,
    fc2: Projection,
}

impl Mlp {
    /// `steps`: the decoder's (copies for its steps, see [`Projection`]); `quant`: which.
    fn load(d: usize, steps: bool, quant: Quant, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Projection::new(linear(d, 4 * d, vb.pp("fc1"))?, steps, quant)?,
            fc2: Projection::new(linear(4 * d, d, vb.pp("fc2"))?, steps, quant)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Whisper was trained with the exact (erf) GELU, not the tanh approximation.
        self.fc2.forward(&gelu_erf(&self.fc1.forward(x)?)?)
    }
}

struct EncoderBlock {
    attn: Attention,
    attn_ln: LayerNorm,
    mlp: Mlp,
    mlp_ln: LayerNorm,
}

impl EncoderBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.attn_ln.forward(x)?;
        let a = match self.attn.self_attention_on_tiles(&h)? {
            Some(a) => a,
            None => {
                let (k, v) = self.attn.project_kv(&h)?;
                self.attn.attend(&h, &k, &v, None, None)?
            }
        };
        let x = (x + a)?;
        &x + self.mlp.forward(&self.mlp_ln.forward(&x)?)?
    }
}

pub struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    blocks: Vec<EncoderBlock>,
    ln_post: LayerNorm,
}

/// The fixed sinusoidal position table of the Whisper encoder.
pub fn sinusoids(length: usize, channels: usize, device: &Device) -> Result<Tensor> {
    let half = channels / 2;
    let inc = (10_000f64).ln() / (half as f64 - 1.0);
    let mut table = vec![0f32; length * channels];
    for t in 0..length {
        for i in 0..half {
            let angle = t as f64 * (-inc * i as f64).exp();
            table[t * channels + i] = angle.sin() as f32;
            table[t * channels + half + i] = angle.cos() as f32;
        }
    }
    Tensor::from_vec(table, (length, channels), device)
}

impl Encoder {
    fn load(cfg: &Config, vb: VarBuilder, quant: Quant) -> Result<Self> {
        let d = cfg.d_model;
        let conv = |stride| Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let blocks = (0..cfg.encoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(EncoderBlock {
                    attn: Attention::load(
                        d,
                        cfg.encoder_attention_heads,
                        StepLayers::None,
                        quant,
                        vb.pp("self_attn"),
                    )?,
                    attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    mlp: Mlp::load(d, false, quant, &vb)?,
                    mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The convolutions stay in f32: on AMX tiles (the log-mel input rounded to bf16) they
        // raised base's WER on the real call 0.173 -> 0.222 and tiny.en's telephone clips
        // 0.423 -> 0.448 (tests/transcription.rs), for 3-6 ms of a 70 ms window.
        Ok(Self {
            conv1: candle_nn::conv1d(cfg.num_mel_bins, d, 3, conv(1), vb.pp("conv1"))?,
            conv2: candle_nn::conv1d(d, d, 3, conv(2), vb.pp("conv2"))?,
            positions: sinusoids(cfg.max_source_positions, d, vb.device())?.to_dtype(vb.dtype())?,
            blocks,
            ln_post: layer_norm(d, vb.pp("layer_norm"))?,
        })
    }

    /// mel [b, n_mels, frames] -> audio features [b, frames/2, d]
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = gelu_erf(&self.conv1.forward(mel)?)?;
        let x = gelu_erf(&self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?;
        let t = x.dim(1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, t)?)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.ln_post.forward(&x)
    }
}

struct DecoderBlock {
    self_attn: Attention,
    self_ln: LayerNorm,
    cross_attn: Attention,
    cross_ln: LayerNorm,
    mlp: Mlp,
    mlp_ln: LayerNorm,
}

/// Per-sequence decoder state: cached keys and values of the tokens so far, and the projected
/// audio features each cross-attention reads. Cloning shares the tensors (they are never
/// written in place: a step makes new ones).
#[derive(Clone)]
pub struct DecoderState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    /// The row of `cross_kv` each sequence reads (`None`: row `i` for sequence `i`). On the
    /// CPU, sequences that keep or copy a window's audio ([`Self::select_rows`]) read one copy
    /// of it: decodes of one window at several temperatures, or the beams of a beam search.
    cross_rows: Option<Vec<u32>>,
    pub len: usize,
}

impl DecoderState {
    /// Drops all cached tokens after the first `len` (to rewind a rejected decode).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for kv in &mut self.self_kv {
            if let Some((k, v)) = kv {
                if len == 0 {
                    *kv = None;
                } else {
                    *kv = Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?));
                }
            }
        }
        self.len = len;
        Ok(())
    }

    /// Reorders the cached tokens only: sequence `i` takes the tokens of `rows[i]`, and the
    /// audio of row `i` stays where it is (beam search: the sequences of one window trade
    /// places, the window's audio does not move).
    pub fn select_self_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in self.self_kv.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }

    /// Puts `n` empty token places before every sequence's cached tokens (zero keys and
    /// values, which the caller's mask must hide: they become left padding of each row).
    pub fn pad_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for (k, v) in self.self_kv.iter_mut().flatten() {
            let (b, h, _, w) = k.dims4()?;
            let zeros = Tensor::zeros((b, h, n, w), k.dtype(), k.device())?;
            *k = Tensor::cat(&[&zeros, &*k], 2)?;
            *v = Tensor::cat(&[&zeros, &*v], 2)?;
        }
        self.len += n;
        Ok(())
    }

    /// Drops the first `n` token places of every sequence (padding that no row reads any
    /// more: the rows that needed it left the batch).
    pub fn drop_front(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.len);
        if n == 0 {
            return Ok(());
        }
        for (k, v) in self.self_kv.iter_mut().flatten() {
            *k = k.narrow(2, n, self.len - n)?;
            *v = v.narrow(2, n, self.len - n)?;
        }
        self.len -= n;
        Ok(())
    }

    /// Each sequence's own copy of the audio it reads, in sequence order (undoes the sharing
    /// of [`Self::select_rows`]; drops the audio rows no sequence reads any more).
    fn own_audio(&mut self) -> Result<()> {
        if let Some(rows) = self.cross_rows.take() {
            let idx = Tensor::new(rows.as_slice(), &self.device()?)?;
            for (k, v) in &mut self.cross_kv {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
        }
        Ok(())
    }

    fn device(&self) -> Result<Device> {
        match self.cross_kv.first() {
            Some((k, _)) => Ok(k.device().clone()),
            None => candle_core::bail!("a decoder state without layers"),
        }
    }

    /// Appends the sequences of `other` (same model, same number of cached token places and
    /// audio of the same length) after this state's: continuous batching, where decodes of new
    /// windows join a running batch. Copies the audio rows of both (`[rows, heads, frames, w]`
    /// per layer; tiny.en, 15-s window: 9 MB a row).
    pub fn append(&mut self, mut other: DecoderState) -> Result<()> {
        if other.len != self.len || other.self_kv.len() != self.self_kv.len() {
            candle_core::bail!(
                "cannot join decoder states of {} and {} tokens",
                self.len,
                other.len
            );
        }
        self.own_audio()?;
        other.own_audio()?;
        for (mine, theirs) in self.self_kv.iter_mut().zip(other.self_kv) {
            *mine = match (mine.take(), theirs) {
                (Some((k, v)), Some((k2, v2))) => {
                    Some((Tensor::cat(&[k, k2], 0)?, Tensor::cat(&[v, v2], 0)?))
                }
                (None, None) => None,
                _ => candle_core::bail!("cannot join a decoder state with an empty one"),
            };
        }
        for ((k, v), (k2, v2)) in self.cross_kv.iter_mut().zip(other.cross_kv) {
            *k = Tensor::cat(&[&*k, &k2], 0)?;
            *v = Tensor::cat(&[&*v, &v2], 0)?;
        }
        Ok(())
    }

    /// Keeps only the batch rows `rows` (indices into the current batch, in the new order):
    /// a sequence that finished leaves the batch and the others go on.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in self.self_kv.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        let in_place = self
            .cross_kv
            .first()
            .is_some_and(|(k, _)| step_attention::applies(k));
        if in_place {
            // Each sequence points at the audio row it reads; nothing is copied (9 MB per row
            // for tiny.en's 15-s window, copied once per decode at a new temperature).
            let picked: Vec<u32> = rows.to_vec1()?;
            self.cross_rows = Some(match &self.cross_rows {
                Some(now) => picked.iter().map(|&r| now[r as usize]).collect(),
                None => picked,
            });
        } else {
            for (k, v) in &mut self.cross_kv {
                *k = k.index_select(rows, 0)?;
                *v = v.index_select(rows, 0)?;
            }
        }
        Ok(())
    }
}

pub struct Decoder {
    embed: Embedding,
    /// A copy of the token embedding for the output projection of a few rows in f32 on the
    /// CPU (see [`Decoder::logits`]): as stored (f16), or int8 with [`Quant::int8_vocabulary`];
    /// `None` elsewhere, or when f16 would round it.
    logits_step: Option<StepCopy>,
    positions: Tensor,
    blocks: Vec<DecoderBlock>,
    ln: LayerNorm,
    max_len: usize,
}

impl Decoder {
    fn load(cfg: &Config, vb: VarBuilder, quant: Quant) -> Result<Self> {
        let d = cfg.d_model;
        let blocks = (0..cfg.decoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(DecoderBlock {
                    self_attn: Attention::load(
                        d,
                        cfg.decoder_attention_heads,
                        StepLayers::All,
                        quant,
                        vb.pp("self_attn"),
                    )?,
                    self_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    cross_attn: Attention::load(
                        d,
                        cfg.decoder_attention_heads,
                        StepLayers::QueryAndOutput,
                        quant,
                        vb.pp("encoder_attn"),
                    )?,
                    cross_ln: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
                    mlp: Mlp::load(d, true, quant, &vb)?,
                    mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = candle_nn::embedding(cfg.vocab_size, d, vb.pp("embed_tokens"))?;
        let logits_step = StepCopy::of(embed.embeddings(), quant.int8_vocabulary)?;
        tracing::debug!(
            copy = logits_step.as_ref().map(StepCopy::name),
            "vocabulary projection"
        );
        Ok(Self {
            embed,
            logits_step,
            positions: vb.get((cfg.max_target_positions, d), "embed_positions.weight")?,
            blocks,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
            max_len: cfg.max_target_positions,
        })
    }

    /// Prepares a fresh state for the audio features `[b, frames, d]`.
    pub fn start(&self, audio: &Tensor) -> Result<DecoderState> {
        let cross_kv = self
            .blocks
            .iter()
            .map(|b| b.cross_attn.project_kv(audio))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderState {
            self_kv: vec![None; self.blocks.len()],
            cross_kv,
            cross_rows: None,
            len: 0,
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Runs `tokens [b, n]` after what `state` holds; returns hidden states `[b, n, d]`.
    pub fn forward(&self, tokens: &Tensor, state: &mut DecoderState) -> Result<Tensor> {
        let (_, n) = tokens.dims2()?;
        let offset = state.len;
        if offset + n > self.max_len {
            candle_core::bail!("decoder context of {} tokens exceeded", self.max_len);
        }
        let pos = self.positions.narrow(0, offset, n)?;
        let x = self.embed.forward(tokens)?.broadcast_add(&pos)?;
        let mask = if n > 1 {
            Some(causal_mask(n, offset, x.device(), x.dtype())?)
        } else {
            None
        };
        self.run_blocks(x, mask.as_ref(), state)
    }

    /// Runs a batch whose rows sit at different positions (left-padded prompts of different
    /// lengths): `tokens [b, n]`, `positions [b, n]` (u32, each row's own token positions) and
    /// an additive `mask [b, 1, n, state.len + n]` (0 where a query may look, -inf where not:
    /// the causal rule and each row's padding). Returns hidden states `[b, n, d]`.
    pub fn forward_rows(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        state: &mut DecoderState,
    ) -> Result<Tensor> {
        let (b, n) = tokens.dims2()?;
        if state.len + n > self.max_len {
            candle_core::bail!("decoder context of {} tokens exceeded", self.max_len);
        }
        let d = self.positions.dim(1)?;
        let pos = self
            .positions
            .index_select(&positions.flatten_all()?, 0)?
            .reshape((b, n, d))?;
        let x = (self.embed.forward(tokens)? + pos)?;
        let mask = mask.to_dtype(x.dtype())?;
        self.run_blocks(x, Some(&mask), state)
    }

    fn run_blocks(
        &self,
        mut x: Tensor,
        mask: Option<&Tensor>,
        state: &mut DecoderState,
    ) -> Result<Tensor> {
        let n = x.dim(1)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.self_ln.forward(&x)?;
            let (k, v) = block.self_attn.project_kv(&h)?;
            let (k, v) = match &state.self_kv[i] {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            x = (&x + block.self_attn.attend(&h, &k, &v, None, mask)?)?;
            state.self_kv[i] = Some((k, v));
            let (ck, cv) = &state.cross_kv[i];
            let h = block.cross_ln.forward(&x)?;
            x = (&x
                + block
                    .cross_attn
                    .attend(&h, ck, cv, state.cross_rows.as_deref(), None)?)?;
            x = (&x + block.mlp.forward(&block.mlp_ln.forward(&x)?)?)?;
        }
        state.len += n;
        self.ln.forward(&x)
    }

    /// Logits over the vocabulary for hidden states `[b, n, d]` (the output projection is tied
    /// to the token embedding).
    ///
    /// On the CPU in f32, up to [`super::step_weights::MAX_ROWS`] rows read a copy of the
    /// embedding ([`StepCopy`]): as the model file stores it, in f16 (half the bytes of f32,
    /// the same products), or in int8 with a scale per 16 weights ([`Quant::int8_vocabulary`]).
    /// This product is about half of a decoder step on the CPU (tiny.en: 384 x 51864 weights,
    /// read once per step) and is bound by memory bandwidth. candle's q8_0 copy of it (which
    /// also rounds each input row to int8) was the old `int8`; it changed no word on the real
    /// call, where q8_0 copies of the decoder's layers cost a phrase (base, WER 0.173 ->
    /// 0.210); see docs/measured.md for the weight-only int8 copies' numbers.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match StepCopy::product_of_few_rows(self.logits_step.as_ref(), hidden)? {
            Some(logits) => Ok(logits),
            None => hidden.broadcast_matmul(&self.embed.embeddings().t()?),
        }
    }
}

fn causal_mask(n: usize, offset: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let total = offset + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (n, total), device)?.to_dtype(dtype)
}

pub struct Whisper {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub config: Config,
}

impl Whisper {
    /// Loads the weights `vb` holds (Hugging Face names) and makes the copies `quant` asks for.
    pub fn load(cfg: &Config, vb: VarBuilder, quant: Quant) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::load(cfg, vb.pp("model.encoder"), quant)?,
            decoder: Decoder::load(cfg, vb.pp("model.decoder"), quant)?,
            config: cfg.clone(),
        })
    }
}

/// log-softmax over the last dimension, in f32.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}
