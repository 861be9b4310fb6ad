//! Where the model runs and in which precision: `--device auto|cpu|cuda[:N]|metal` and
//! `--compute-type auto|f32|int8|f16|bf16`.
//!
//! A GPU build started where no GPU answers says so in one line (and `auto` falls back to the
//! CPU); a build without the `cuda`/`metal` feature says which feature it lacks.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Quant;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU this build can use, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    Metal,
}

impl DeviceChoice {
    /// The names it is written as (in configs and on the command line); `cuda:N` also works.
    pub const NAMES: [&'static str; 4] = ["auto", "cpu", "cuda", "metal"];

    /// Opens the device. `Auto` never fails: without a usable GPU it is the CPU.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => {
                if cfg!(feature = "cuda") {
                    match open_cuda(0) {
                        Ok(d) => return Ok(d),
                        Err(e) => tracing::info!("no CUDA device ({e:#}); using the CPU"),
                    }
                }
                if cfg!(feature = "metal") {
                    match open_metal() {
                        Ok(d) => return Ok(d),
                        Err(e) => tracing::info!("no Metal device ({e:#}); using the CPU"),
                    }
                }
                Ok(Device::Cpu)
            }
            Self::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    bail!("--device cuda: this vishguard was built without CUDA (build it with `cargo build --release --features cuda`)");
                }
                open_cuda(n)
            }
            Self::Metal => {
                if !cfg!(feature = "metal") {
                    bail!("--device metal: this vishguard was built without Metal (build it on a Mac with `cargo build --release --features metal`)");
                }
                open_metal()
            }
        }
    }
}

/// CUDA errors (no driver, no device, a driver too old for the build) can surface as panics
/// inside the driver bindings: they become one clear error here.
fn open_cuda(ordinal: usize) -> Result<Device> {
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => bail!("cannot open CUDA device {ordinal}: {e}"),
        Err(_) => bail!("cannot open CUDA device {ordinal}: the CUDA driver library failed to load (is an NVIDIA driver installed?)"),
    }
}

fn open_metal() -> Result<Device> {
    match std::panic::catch_unwind(|| Device::new_metal(0)) {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => bail!("cannot open the Metal device: {e}"),
        Err(_) => bail!("cannot open the Metal device"),
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(0) => f.write_str("cuda"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "metal" => Ok(Self::Metal),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!(
                    "unknown device {s:?}: expected auto, cpu, cuda, cuda:N or metal"
                )),
            },
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The precision of the weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeType {
    /// On the CPU, `bf16` where it has AMX tiles ([`super::amx_bf16::available`]), else
    /// `f32`; F16 on a GPU. `int8` keeps the error rates within 0.01 but was not measurably
    /// faster live or in throughput on this 2-core host (docs/measured.md), so it is not
    /// picked.
    #[default]
    Auto,
    F32,
    /// CPU only: as `auto` there (the encoder on AMX tiles where the CPU has them, else f32),
    /// and the decoder's vocabulary projection (about half of each decoder step's bytes) reads
    /// an int8 copy of its weights, a scale per 16 ([`super::step_weights::I8Weights`]), with
    /// f32 inputs and sums; see `asr::model::Decoder::logits`.
    Int8,
    F16,
    /// On a GPU, bf16 tensors. On the CPU (AMX only), f32 tensors with the encoder's linear
    /// layers and attention and the decoder's cross-attention keys and values on AMX tiles in
    /// bf16 ([`super::model::Quant::tiles`]): the encoder 2x faster (tiny.en 15-s window
    /// 138-140 -> 66-72 ms) at the f32 error rates (`benches/compare_faster_whisper.py`:
    /// tiny.en telephone clips 0.507 -> 0.506, real call 0.160 both; base unchanged).
    Bf16,
}

impl ComputeType {
    pub const NAMES: [&'static str; 5] = ["auto", "f32", "int8", "f16", "bf16"];

    /// What `auto` means on `device` (other types stay as they are).
    pub fn resolve_on(self, device: &Device) -> Self {
        match (self, device.is_cpu()) {
            (Self::Auto, true) if super::amx_bf16::available() => Self::Bf16,
            (Self::Auto, true) => Self::F32,
            (Self::Auto, false) => Self::F16,
            (other, _) => other,
        }
    }

    /// Which weights get copies in another format on `device` (only the CPU has them).
    pub fn quant_on(self, device: &Device) -> Quant {
        match (self.resolve_on(device), device.is_cpu()) {
            (Self::Int8, true) => Quant {
                tiles: super::amx_bf16::available(),
                int8_vocabulary: true,
            },
            (Self::Bf16, true) => Quant {
                tiles: true,
                int8_vocabulary: false,
            },
            _ => Quant::default(),
        }
    }

    /// The dtype on `device`; half precision on the CPU is refused (candle's CPU kernels for
    /// it are 2.5-3.5x slower than F32 here and less accurate).
    pub fn dtype_on(self, device: &Device) -> Result<DType> {
        Ok(match (self.resolve_on(device), device.is_cpu()) {
            (Self::Auto, true) | (Self::F32, _) | (Self::Int8, true) => DType::F32,
            (Self::Bf16, true) if super::amx_bf16::available() => DType::F32,
            (Self::Bf16, true) => bail!(
                "--compute-type bf16 on the CPU needs AMX tiles (Intel Xeon 4th generation or \
                 later, Linux); this CPU or kernel has none: use f32 or int8"
            ),
            (Self::Int8, false) => {
                bail!("--compute-type int8 is for the CPU; a GPU runs f16 (or bf16, f32)")
            }
            (Self::Auto, false) | (Self::F16, false) => DType::F16,
            (Self::Bf16, false) => DType::BF16,
            (Self::F16, true) => {
                bail!("--compute-type f16 needs a GPU; the CPU runs f32 (or bf16 with AMX)")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_print_and_round_trip() {
        for (text, want) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            ("metal", DeviceChoice::Metal),
        ] {
            let d: DeviceChoice = text.parse().unwrap();
            assert_eq!(d, want);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<DeviceChoice>(&json).unwrap(), d);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("expected auto, cpu"), "{e}");
        }
    }

    #[test]
    fn auto_is_the_cpu_without_a_gpu_build_and_a_missing_backend_is_named() {
        if cfg!(any(feature = "cuda", feature = "metal")) {
            return;
        }
        assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
        let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("built without CUDA"), "{e}");
        assert_eq!(
            ComputeType::Auto.dtype_on(&Device::Cpu).unwrap(),
            DType::F32
        );
        assert!(ComputeType::F16.dtype_on(&Device::Cpu).is_err());
        let amx = crate::asr::amx_bf16::available();
        let auto = Quant {
            tiles: amx,
            int8_vocabulary: false,
        };
        assert_eq!(ComputeType::Auto.quant_on(&Device::Cpu), auto);
        let int8 = Quant {
            tiles: amx,
            int8_vocabulary: true,
        };
        assert_eq!(ComputeType::Int8.quant_on(&Device::Cpu), int8);
        assert_eq!(ComputeType::F32.quant_on(&Device::Cpu), Quant::default());
        assert_eq!(
            ComputeType::Int8.dtype_on(&Device::Cpu).unwrap(),
            DType::F32
        );
    }
}
