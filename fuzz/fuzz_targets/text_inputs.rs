//! Text a stranger hands over: phrase packs (TOML), research manifests (CSV and JSON lines)
//! and `classify`'s transcript lines, read as the commands read them. The first byte picks
//! the reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use vishguard::detect::{Classifier, PhrasePack};

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(Classifier::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(pack) = PhrasePack::parse("fuzz.toml", text) {
                    // A pack that validates must also match in bounded time.
                    let c = Classifier::with_packs(vec![pack]);
                    let _ = c.classify("press one now to speak with an officer", None);
                }
            }
        }
        1 | 2 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = vishguard::score::manifest::parse_manifest(
                    text,
                    Path::new("/m/manifest"),
                    which % 4 == 1,
                );
            }
        }
        _ => {
            let _ = vishguard::cli::classify::classify_line(classifier(), rest);
        }
    }
});
