//! Model weights read one tensor at a time from a `.safetensors` file.
//!
//! candle's memory-mapped loader keeps the whole file mapped while the model is built, so the
//! mapped f16 bytes (143 MB for Whisper base) and their f32 copies are resident together:
//! loading was the peak of a whole `scan --model base` run (610 MB). Reading each tensor with
//! a positioned read instead holds one tensor's bytes at a time; the page cache still serves
//! repeated loads.
//!
//! Format followed: the safetensors layout (an 8-byte little-endian header length, a JSON
//! header of `name -> {dtype, shape, data_offsets}` with offsets relative to the end of the
//! header, then the data), as written by the `safetensors` crate.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::Deserialize;

/// A header larger than this is refused before it is read: the biggest Whisper header is
/// under 100 kB.
const MAX_HEADER_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

struct Info {
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range in the file.
    start: u64,
    len: usize,
}

/// An open `.safetensors` file whose tensors are read on request.
pub struct WeightFile {
    path: PathBuf,
    file: Mutex<File>,
    tensors: HashMap<String, Info>,
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        _ => return None,
    })
}

impl WeightFile {
    /// Opens `path` and checks its header: every tensor's dtype is known, its byte range lies
    /// inside the file and matches its shape.
    ///
    /// # Errors
    /// The file cannot be read, or its header is not a safetensors header (each error names
    /// the file and, where there is one, the tensor).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .with_context(|| format!("{}: too short for a safetensors header", path.display()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
            bail!(
                "{}: safetensors header of {header_len} bytes does not fit the {file_len}-byte file",
                path.display()
            );
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("{}: truncated safetensors header", path.display()))?;
        let raw: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .with_context(|| {
                format!(
                    "{}: safetensors header is not a JSON object",
                    path.display()
                )
            })?;
        let data_start = 8 + header_len;
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let entry: Entry = serde_json::from_value(value)
                .with_context(|| format!("{}: tensor {name}: malformed entry", path.display()))?;
            let dtype = dtype_of(&entry.dtype).with_context(|| {
                format!(
                    "{}: tensor {name}: unsupported dtype {}",
                    path.display(),
                    entry.dtype
                )
            })?;
            let [begin, end] = entry.data_offsets;
            let expected = entry
                .shape
                .iter()
                .try_fold(dtype.size_in_bytes() as u64, |n, &d| {
                    n.checked_mul(d as u64)
                });
            let fits = end
                .checked_add(data_start)
                .is_some_and(|last| begin <= end && last <= file_len);
            if !fits || expected != Some(end - begin) {
                bail!(
                    "{}: tensor {name}: bytes {begin}..{end} do not hold a {} {:?} inside the file",
                    path.display(),
                    entry.dtype,
                    entry.shape
                );
            }
            tensors.insert(
                name,
                Info {
                    dtype,
                    shape: entry.shape,
                    start: data_start + begin,
                    len: (end - begin) as usize,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            tensors,
        })
    }

    /// A [`VarBuilder`] over this file producing `dtype` tensors on `device`.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn info(&self, name: &str) -> candle_core::Result<&Info> {
        self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })
    }

    /// Fills `bytes` with the stored bytes of `name`.
    fn read_into(&self, name: &str, info: &Info, bytes: &mut [u8]) -> candle_core::Result<()> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| candle_core::Error::Msg("weight file lock poisoned".into()))?;
        file.seek(SeekFrom::Start(info.start))
            .and_then(|_| file.read_exact(bytes))
            .map_err(|e| {
                candle_core::Error::Msg(format!("{}: tensor {name}: {e}", self.path.display()))
            })
    }

    fn read(&self, name: &str) -> candle_core::Result<Tensor> {
        let info = self.info(name)?;
        let mut bytes = vec![0u8; info.len];
        self.read_into(name, info, &mut bytes)?;
        Tensor::from_raw_buffer(&bytes, info.dtype, &info.shape, &Device::Cpu)
    }

    /// An f16 tensor widened to f32 on the CPU: read straight into f16 values and widened in
    /// parallel chunks with F16C where the CPU has it (`half`'s slice conversion). candle's
    /// `to_dtype` widens value by value: 14% of a `transcribe --model base` process that hears
    /// one second (0.9 s), and it held the f16 copy and the f32 one of each tensor at once.
    /// `None` where this path does not apply (another dtype, a big-endian CPU).
    fn read_f16_as_f32(&self, name: &str) -> candle_core::Result<Option<Tensor>> {
        let info = self.info(name)?;
        if info.dtype != DType::F16 || cfg!(target_endian = "big") {
            return Ok(None);
        }
        // `open` checked that the byte range holds exactly the shape's f16 values.
        let n = info.len / 2;
        let mut halves = vec![half::f16::ZERO; n];
        // SAFETY: f16 is a plain 16-bit value (every bit pattern valid), the slice covers
        // exactly `halves`, and the file is little-endian, as this CPU is (checked above).
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(halves.as_mut_ptr().cast::<u8>(), 2 * n) };
        self.read_into(name, info, bytes)?;
        let mut wide = vec![0f32; n];
        {
            use half::slice::HalfFloatSliceExt;
            use rayon::prelude::*;
            wide.par_chunks_mut(1 << 16)
                .zip(halves.par_chunks(1 << 16))
                .for_each(|(w, h)| h.convert_to_f32_slice(w));
        }
        Tensor::from_vec(wide, info.shape.as_slice(), &Device::Cpu).map(Some)
    }
}

impl SimpleBackend for WeightFile {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if dtype == DType::F32 && dev.is_cpu() {
            if let Some(t) = self.read_f16_as_f32(name)? {
                return Ok(t);
            }
        }
        self.read(name)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(tensors: &[(&str, Tensor)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, file.path()).unwrap();
        file
    }

    #[test]
    fn tensors_read_one_at_a_time_equal_candles_own_loader() {
        let a = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let b = Tensor::new(&[7u32, 8, 9], &Device::Cpu).unwrap();
        let file = write(&[("a", a.clone()), ("b", b)]);
        let weights = WeightFile::open(file.path()).unwrap();
        assert!(weights.contains_tensor("a") && !weights.contains_tensor("c"));
        let vb = weights.into_var_builder(DType::F32, &Device::Cpu);
        let got = vb.get((2, 3, 4), "a").unwrap();
        let want = a.to_dtype(DType::F32).unwrap();
        assert_eq!(
            got.to_vec3::<f32>().unwrap(),
            want.to_vec3::<f32>().unwrap()
        );
        let err = vb.get((4, 3, 2), "a").unwrap_err().to_string();
        assert!(err.contains("shape mismatch"), "{err}");
        assert!(vb.get(3, "c").is_err());
    }

    #[test]
    fn a_header_that_points_outside_the_file_is_refused_by_name() {
        let a = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        let file = write(&[("enc.w", a)]);
        let bytes = std::fs::read(file.path()).unwrap();
        // Cut the data short: the header still promises 64 bytes.
        std::fs::write(file.path(), &bytes[..bytes.len() - 10]).unwrap();
        let err = WeightFile::open(file.path()).err().unwrap().to_string();
        assert!(
            err.contains("enc.w") && err.contains("inside the file"),
            "{err}"
        );
        // A header length far past the end.
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(file.path(), &bad).unwrap();
        let err = WeightFile::open(file.path()).err().unwrap().to_string();
        assert!(err.contains("does not fit"), "{err}");
        // An unknown dtype.
        let text = String::from_utf8_lossy(&bytes).replace("\"F32\"", "\"Q32\"");
        std::fs::write(file.path(), text.as_bytes()).unwrap();
        let err = WeightFile::open(file.path()).err().unwrap().to_string();
        assert!(err.contains("unsupported dtype Q32"), "{err}");
    }
}
