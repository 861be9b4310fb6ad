//! A sentence-embedding model (all-MiniLM-L6-v2, a six-layer BERT): text in, one unit vector
//! out, so that two sentences that mean the same thing land close together even when they share
//! no word. The paraphrase layer compares transcript windows with canonical scam sentences.

use crate::model_store::weights::WeightFile;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::model_store::ModelFiles;

/// all-MiniLM-L6-v2 was trained on at most 128 word pieces; longer inputs are cut.
const MAX_TOKENS: usize = 128;
/// Texts embedded per forward pass: enough to keep the matrix kernels busy, small enough that
/// padding to the longest text in a batch wastes little.
const BATCH: usize = 32;

pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl SentenceEncoder {
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self> {
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(files.config())
                .with_context(|| format!("reading {}", files.config().display()))?,
        )
        .with_context(|| format!("{}: not a BERT config", files.config().display()))?;
        let mut tokenizer = Tokenizer::from_file(files.tokenizer()).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot load tokenizer: {e}",
                files.tokenizer().display()
            )
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let weights = files.weights();
        // Read tensor by tensor, not memory-mapped: see model_store::weights.
        let vb = WeightFile::open(&weights)
            .with_context(|| format!("reading {}", weights.display()))?
            .into_var_builder(DType::F32, device);
        let model = BertModel::load(vb, &config).with_context(|| {
            format!(
                "{}: not a BERT sentence encoder (wrong model for --encoder?)",
                weights.display()
            )
        })?;
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
        })
    }

    /// One L2-normalised vector per text (mean of the token vectors, as the model was trained).
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
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing for the sentence encoder: {e}"))?;
        let width = encodings[0].get_ids().len();
        if width == 0 {
            bail!("the sentence encoder's tokenizer produced no tokens");
        }
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).to_vec()).collect()
        };
        let shape = (texts.len(), width);
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), shape, &self.device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), shape, &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), shape, &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
