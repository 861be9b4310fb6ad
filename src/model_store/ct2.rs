//! Reader for CTranslate2 `model.bin` files (binary version 6) and their conversion to the
//! Hugging Face tensor names that [`crate::asr::model`] loads.
//!
//! The format is little-endian with no padding: a header, a list of variables (name, shape,
//! dtype, raw bytes) and a list of aliases. Every read is bounds-checked, so a truncated or
//! corrupt file ends in an error that names the file and the offset, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Element types CTranslate2 stores, by their on-disk code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ct2Variable {
    pub dims: Vec<usize>,
    pub dtype: Ct2Dtype,
    pub data: Vec<u8>,
}

impl Ct2Variable {
    /// The value of a rank-0 integer variable (head counts, activation codes).
    pub fn scalar_i64(&self) -> Option<i64> {
        if !self.dims.is_empty() && self.dims.iter().product::<usize>() != 1 {
            return None;
        }
        let d = &self.data;
        Some(match self.dtype {
            Ct2Dtype::I8 => d[0] as i8 as i64,
            Ct2Dtype::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            Ct2Dtype::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub struct Ct2Model {
    pub spec: String,
    pub revision: u32,
    pub variables: BTreeMap<String, Ct2Variable>,
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a usable CTranslate2 model at byte {offset}: {problem}")]
    Format {
        path: PathBuf,
        offset: usize,
        problem: String,
    },
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(format!(
                "truncated: {what} needs {n} bytes but only {} remain",
                self.bytes.len() - self.pos
            )),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// Parses `model.bin` from memory; `path` only names the file in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Ct2Model, Ct2Error> {
    let mut cur = Cursor { bytes, pos: 0 };
    let fail = |offset: usize, problem: String| Ct2Error::Format {
        path: path.to_path_buf(),
        offset,
        problem,
    };
    macro_rules! read {
        ($e:expr) => {{
            let at = cur.pos;
            $e.map_err(|p| fail(at, p))?
        }};
    }
    let version = read!(cur.u32("binary version"));
    if version != 6 {
        return Err(fail(
            0,
            format!("binary version {version}, only 6 is supported"),
        ));
    }
    let spec = read!(cur.string("spec name"));
    let revision = read!(cur.u32("spec revision"));
    let count = read!(cur.u32("variable count")) as usize;
    if count > 100_000 {
        return Err(fail(
            cur.pos - 4,
            format!("implausible variable count {count}"),
        ));
    }
    let mut variables = BTreeMap::new();
    for _ in 0..count {
        let name = read!(cur.string("variable name"));
        let rank = read!(cur.u8("rank")) as usize;
        if rank > 8 {
            return Err(fail(
                cur.pos - 1,
                format!("{name}: implausible rank {rank}"),
            ));
        }
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(read!(cur.u32("dimension")) as usize);
        }
        let at = cur.pos;
        let code = read!(cur.u8("dtype"));
        let dtype = Ct2Dtype::from_code(code)
            .ok_or_else(|| fail(at, format!("{name}: unknown dtype code {code}")))?;
        let at = cur.pos;
        let nbytes = read!(cur.u32("byte count")) as usize;
        // Checked: a hostile header's dimensions would overflow the product.
        let expected = dims.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d));
        if expected != Some(nbytes) {
            let needs = expected.map_or("more than memory holds".to_owned(), |e| e.to_string());
            return Err(fail(
                at,
                format!(
                    "{name}: {nbytes} bytes stored but shape {dims:?} of {dtype:?} needs {needs}"
                ),
            ));
        }
        let data = read!(cur.take(nbytes, &name)).to_vec();
        variables.insert(name, Ct2Variable { dims, dtype, data });
    }
    let alias_count = read!(cur.u32("alias count")) as usize;
    let mut aliases = BTreeMap::new();
    for _ in 0..alias_count {
        let alias = read!(cur.string("alias name"));
        let target = read!(cur.string("alias target"));
        aliases.insert(alias, target);
    }
    if cur.pos != bytes.len() {
        return Err(fail(
            cur.pos,
            format!("{} unexpected trailing bytes", bytes.len() - cur.pos),
        ));
    }
    Ok(Ct2Model {
        spec,
        revision,
        variables,
        aliases,
    })
}

pub fn read(path: &Path) -> Result<Ct2Model, Ct2Error> {
    let bytes = std::fs::read(path).map_err(|source| Ct2Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// A tensor under its Hugging Face name, still in the stored dtype.
pub struct HfTensor {
    pub dims: Vec<usize>,
    pub dtype: Ct2Dtype,
    pub data: Vec<u8>,
}

/// Shape facts of a Whisper model, read from its tensors rather than trusted from a config.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WhisperShape {
    pub d_model: usize,
    pub num_mel_bins: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub vocab_size: usize,
    pub max_source_positions: usize,
    pub max_target_positions: usize,
}

impl Ct2Model {
    fn var(&self, name: &str) -> Result<&Ct2Variable, String> {
        let target = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.variables
            .get(target)
            .ok_or_else(|| format!("missing variable {name}"))
    }

    fn count_layers(&self, side: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.variables
                    .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }

    pub fn whisper_shape(&self) -> Result<WhisperShape, String> {
        if self.spec != "WhisperSpec" {
            return Err(format!("spec is {:?}, expected WhisperSpec", self.spec));
        }
        let conv1 = self.var("encoder/conv1/weight")?;
        let embed = self.var("decoder/embeddings/weight")?;
        let dec_pos = self.var("decoder/position_encodings/encodings")?;
        let heads = |side: &str| -> Result<usize, String> {
            let v = self.var(&format!("{side}/num_heads"))?;
            v.scalar_i64()
                .filter(|&h| h > 0)
                .map(|h| h as usize)
                .ok_or_else(|| format!("{side}/num_heads is not a positive integer"))
        };
        if conv1.dims.len() != 3 || embed.dims.len() != 2 || dec_pos.dims.len() != 2 {
            return Err("unexpected rank of conv1, embeddings or position encodings".into());
        }
        if conv1.dims.contains(&0) || embed.dims.contains(&0) || dec_pos.dims.contains(&0) {
            return Err("an empty dimension in conv1, embeddings or position encodings".into());
        }
        let max_source_positions = self
            .var("encoder/position_encodings/encodings")
            .ok()
            .and_then(|v| v.dims.first().copied())
            .unwrap_or(1500);
        Ok(WhisperShape {
            d_model: conv1.dims[0],
            num_mel_bins: conv1.dims[1],
            encoder_layers: self.count_layers("encoder"),
            decoder_layers: self.count_layers("decoder"),
            encoder_attention_heads: heads("encoder")?,
            decoder_attention_heads: heads("decoder")?,
            vocab_size: embed.dims[0],
            max_source_positions,
            max_target_positions: dec_pos.dims[0],
        })
    }

    /// Renames (and where CTranslate2 fused them, splits) every tensor to the Hugging Face
    /// Whisper layout.
    pub fn to_hf_tensors(&self) -> Result<BTreeMap<String, HfTensor>, String> {
        let shape = self.whisper_shape()?;
        let d = shape.d_model;
        let mut out = BTreeMap::new();
        let mut put = |hf: String, ct2: &str| -> Result<(), String> {
            let v = self.var(ct2)?;
            out.insert(
                hf,
                HfTensor {
                    dims: v.dims.clone(),
                    dtype: v.dtype,
                    data: v.data.clone(),
                },
            );
            Ok(())
        };
        for side in ["encoder", "decoder"] {
            put(
                format!("model.{side}.layer_norm.weight"),
                &format!("{side}/layer_norm/gamma"),
            )?;
            put(
                format!("model.{side}.layer_norm.bias"),
                &format!("{side}/layer_norm/beta"),
            )?;
        }
        for conv in ["conv1", "conv2"] {
            for p in ["weight", "bias"] {
                put(
                    format!("model.encoder.{conv}.{p}"),
                    &format!("encoder/{conv}/{p}"),
                )?;
            }
        }
        put(
            "model.decoder.embed_tokens.weight".into(),
            "decoder/embeddings/weight",
        )?;
        put(
            "model.decoder.embed_positions.weight".into(),
            "decoder/position_encodings/encodings",
        )?;
        let linear = |put: &mut dyn FnMut(String, &str) -> Result<(), String>,
                      hf: &str,
                      ct2: &str|
         -> Result<(), String> {
            put(format!("{hf}.weight"), &format!("{ct2}/weight"))?;
            put(format!("{hf}.bias"), &format!("{ct2}/bias"))
        };
        let norm = |put: &mut dyn FnMut(String, &str) -> Result<(), String>,
                    hf: &str,
                    ct2: &str|
         -> Result<(), String> {
            put(format!("{hf}.weight"), &format!("{ct2}/gamma"))?;
            put(format!("{hf}.bias"), &format!("{ct2}/beta"))
        };
        let layers = [
            ("encoder", shape.encoder_layers),
            ("decoder", shape.decoder_layers),
        ];
        for (side, n) in layers {
            for i in 0..n {
                let hf = format!("model.{side}.layers.{i}");
                let ct = format!("{side}/layer_{i}");
                linear(
                    &mut put,
                    &format!("{hf}.self_attn.out_proj"),
                    &format!("{ct}/self_attention/linear_1"),
                )?;
                norm(
                    &mut put,
                    &format!("{hf}.self_attn_layer_norm"),
                    &format!("{ct}/self_attention/layer_norm"),
                )?;
                linear(
                    &mut put,
                    &format!("{hf}.fc1"),
                    &format!("{ct}/ffn/linear_0"),
                )?;
                linear(
                    &mut put,
                    &format!("{hf}.fc2"),
                    &format!("{ct}/ffn/linear_1"),
                )?;
                norm(
                    &mut put,
                    &format!("{hf}.final_layer_norm"),
                    &format!("{ct}/ffn/layer_norm"),
                )?;
                if side == "decoder" {
                    linear(
                        &mut put,
                        &format!("{hf}.encoder_attn.q_proj"),
                        &format!("{ct}/attention/linear_0"),
                    )?;
                    linear(
                        &mut put,
                        &format!("{hf}.encoder_attn.out_proj"),
                        &format!("{ct}/attention/linear_2"),
                    )?;
                    norm(
                        &mut put,
                        &format!("{hf}.encoder_attn_layer_norm"),
                        &format!("{ct}/attention/layer_norm"),
                    )?;
                }
            }
        }
        // Fused projections: QKV of self-attention and KV of cross-attention are stacked by rows.
        for (side, n) in layers {
            for i in 0..n {
                let hf = format!("model.{side}.layers.{i}");
                let ct = format!("{side}/layer_{i}");
                let qkv_w = self.var(&format!("{ct}/self_attention/linear_0/weight"))?;
                let qkv_b = self.var(&format!("{ct}/self_attention/linear_0/bias"))?;
                let parts = split_rows(qkv_w, 3, d)?;
                let biases = split_rows(qkv_b, 3, d)?;
                for (j, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    out.insert(format!("{hf}.self_attn.{name}.weight"), parts[j].clone_t());
                    if *name != "k_proj" {
                        out.insert(format!("{hf}.self_attn.{name}.bias"), biases[j].clone_t());
                    }
                }
                if side == "decoder" {
                    let kv_w = self.var(&format!("{ct}/attention/linear_1/weight"))?;
                    let kv_b = self.var(&format!("{ct}/attention/linear_1/bias"))?;
                    let parts = split_rows(kv_w, 2, d)?;
                    let biases = split_rows(kv_b, 2, d)?;
                    out.insert(
                        format!("{hf}.encoder_attn.k_proj.weight"),
                        parts[0].clone_t(),
                    );
                    out.insert(
                        format!("{hf}.encoder_attn.v_proj.weight"),
                        parts[1].clone_t(),
                    );
                    out.insert(
                        format!("{hf}.encoder_attn.v_proj.bias"),
                        biases[1].clone_t(),
                    );
                }
            }
        }
        Ok(out)
    }
}

impl HfTensor {
    fn clone_t(&self) -> HfTensor {
        HfTensor {
            dims: self.dims.clone(),
            dtype: self.dtype,
            data: self.data.clone(),
        }
    }
}

/// Splits a row-major tensor whose first dimension is `parts * rows` into `parts` pieces.
fn split_rows(v: &Ct2Variable, parts: usize, rows: usize) -> Result<Vec<HfTensor>, String> {
    if rows == 0 || v.dims.first() != Some(&(parts * rows)) {
        return Err(format!(
            "fused tensor of shape {:?} cannot be split into {parts} x {rows} rows",
            v.dims
        ));
    }
    let chunk = v.data.len() / parts;
    let mut dims = v.dims.clone();
    dims[0] = rows;
    Ok(v.data
        .chunks(chunk)
        .map(|c| HfTensor {
            dims: dims.clone(),
            dtype: v.dtype,
            data: c.to_vec(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend(((s.len() + 1) as u16).to_le_bytes());
        out.extend(s.as_bytes());
        out.push(0);
    }

    fn var(out: &mut Vec<u8>, name: &str, dims: &[u32], dtype: u8, data: &[u8]) {
        string(out, name);
        out.push(dims.len() as u8);
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.push(dtype);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }

    /// A well-formed file with a fused QKV weight, a scalar and one alias.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend(3u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        let qkv: Vec<u8> = (0..6u16).flat_map(|v| half_bits(v as f32)).collect();
        var(
            &mut b,
            "decoder/layer_0/self_attention/linear_0/weight",
            &[3, 2],
            4,
            &qkv,
        );
        var(&mut b, "decoder/num_heads", &[], 2, &6i16.to_le_bytes());
        var(&mut b, "decoder/embeddings/weight", &[2, 1], 0, &[0; 8]);
        b.extend(1u32.to_le_bytes());
        string(&mut b, "decoder/projection/weight");
        string(&mut b, "decoder/embeddings/weight");
        b
    }

    fn half_bits(v: f32) -> [u8; 2] {
        // Small integers only: exact in f16.
        let bits: u16 = if v == 0.0 {
            0
        } else {
            let e = v.log2().floor() as i32;
            let m = ((v / 2f32.powi(e) - 1.0) * 1024.0) as u16;
            (((e + 15) as u16) << 10) | m
        };
        bits.to_le_bytes()
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let m = parse(Path::new("model.bin"), &sample()).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(m.variables.len(), 3);
        assert_eq!(m.variables["decoder/num_heads"].scalar_i64(), Some(6));
        let qkv = &m.variables["decoder/layer_0/self_attention/linear_0/weight"];
        assert_eq!(
            (qkv.dims.as_slice(), qkv.dtype),
            (&[3usize, 2][..], Ct2Dtype::F16)
        );
        assert_eq!(m.var("decoder/projection/weight").unwrap().dims, vec![2, 1]);
        let parts = split_rows(qkv, 3, 1).unwrap();
        assert_eq!(parts[2].dims, vec![1, 2]);
        assert_eq!(parts[2].data, [half_bits(4.0), half_bits(5.0)].concat());
    }

    #[test]
    fn truncation_anywhere_is_an_error_that_names_the_file() {
        let full = sample();
        for cut in [0, 3, 10, 40, full.len() - 1] {
            let err = parse(Path::new("/models/x/model.bin"), &full[..cut]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("/models/x/model.bin") && msg.contains("truncated"),
                "cut {cut}: {msg}"
            );
        }
    }

    #[test]
    fn corrupt_headers_and_sizes_are_named() {
        let mut bad_version = sample();
        bad_version[0] = 5;
        assert!(parse(Path::new("m"), &bad_version)
            .unwrap_err()
            .to_string()
            .contains("binary version 5"));

        let mut trailing = sample();
        trailing.push(0);
        assert!(parse(Path::new("m"), &trailing)
            .unwrap_err()
            .to_string()
            .contains("trailing"));

        let mut bad_dtype = sample();
        // The dtype byte of the first variable sits after its name and two dims.
        let pos = 4 + 2 + 12 + 4 + 4 + 2 + 47 + 1 + 8;
        assert_eq!(bad_dtype[pos], 4);
        bad_dtype[pos] = 9;
        let msg = parse(Path::new("m"), &bad_dtype).unwrap_err().to_string();
        assert!(msg.contains("unknown dtype code 9"), "{msg}");
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        // A Whisper spec whose encoder position encodings are a rank-0 tensor, and one whose
        // fused projection has no rows.
        let mut b = Vec::new();
        b.extend(6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend(3u32.to_le_bytes());
        b.extend(6u32.to_le_bytes());
        var(&mut b, "encoder/conv1/weight", &[1, 1, 1], 0, &[0; 4]);
        var(&mut b, "decoder/embeddings/weight", &[1, 1], 0, &[0; 4]);
        var(
            &mut b,
            "decoder/position_encodings/encodings",
            &[1, 1],
            0,
            &[0; 4],
        );
        var(
            &mut b,
            "encoder/position_encodings/encodings",
            &[],
            0,
            &[0; 4],
        );
        var(&mut b, "encoder/num_heads", &[], 2, &1i16.to_le_bytes());
        var(&mut b, "decoder/num_heads", &[], 2, &1i16.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        let m = parse(Path::new("m"), &b).unwrap();
        let shape = m.whisper_shape().unwrap();
        assert_eq!(shape.max_source_positions, 1500);
        assert!(m.to_hf_tensors().is_err());
        // Dimensions whose product overflows.
        let mut b = Vec::new();
        b.extend(6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend(3u32.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        string(&mut b, "x");
        b.push(8);
        for _ in 0..8 {
            b.extend(u32::MAX.to_le_bytes());
        }
        b.push(0);
        b.extend(4u32.to_le_bytes());
        let msg = parse(Path::new("m"), &b).unwrap_err().to_string();
        assert!(msg.contains("more than memory holds"), "{msg}");
        let split = Ct2Variable {
            dims: vec![0, 4],
            dtype: Ct2Dtype::F32,
            data: Vec::new(),
        };
        assert!(split_rows(&split, 3, 0).is_err());
    }

    #[test]
    fn a_non_whisper_spec_is_refused_for_conversion() {
        let m = parse(Path::new("m"), &sample()).unwrap();
        assert!(m.whisper_shape().is_err());
        let other = Ct2Model {
            spec: "TransformerSpec".into(),
            ..m
        };
        assert!(other
            .whisper_shape()
            .unwrap_err()
            .contains("TransformerSpec"));
    }
}
