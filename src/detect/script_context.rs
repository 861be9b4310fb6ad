//! The context check: how much the words around a keyword match sound like a line of a scam
//! script, by sentence embeddings. Packs name the canonical lines (`[context]`), scam lines and
//! optionally honest ones, and the encoder they were tuned with (MiniLM for English,
//! multilingual-e5-small for Mandarin); this holds the encoders, the lines' vectors, and a
//! cache, because a live call's growing transcript is classified again after every utterance
//! and would otherwise embed the same windows again and again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::pack::{PhrasePack, ScriptContext};
use super::sentence_encoder::{cosine, SentenceEncoder};

/// Windows remembered per pack before its cache starts over: a few hours of live calls
/// (MiniLM and e5-small vectors are 1.5 kB each, so at most 30 MB per pack).
const CACHE_LIMIT: usize = 20_000;

/// A window's text to its sentence vector.
type WindowVectors = HashMap<String, Arc<[f32]>>;

/// How a window reads against a pack's canonical lines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReading {
    /// Cosine similarity of the closest canonical scam line ...
    pub scam: f32,
    /// ... and its index in the pack's `sentences`.
    pub nearest: usize,
    /// Of the closest honest line; `None` when the pack names none.
    pub honest: Option<f32>,
}

/// The canonical lines of one pack, embedded.
struct Canon {
    scam: Vec<Vec<f32>>,
    honest: Vec<Vec<f32>>,
}

pub struct ContextCheck {
    /// The encoder of packs that name none (`--encoder`).
    default_name: String,
    /// Encoders by the name packs (or `--encoder`) give them, loaded on first use.
    encoders: Mutex<HashMap<String, Option<Arc<SentenceEncoder>>>>,
    /// Why each encoder that failed to load failed (its first error, with its cause).
    why_failed: Mutex<HashMap<String, String>>,
    /// Canonical sentence vectors per pack (keyed by the pack's source).
    canon: Mutex<HashMap<String, Arc<Canon>>>,
    /// Per pack (keyed by its source), the vector of each window seen.
    seen_by_window: Mutex<HashMap<String, WindowVectors>>,
}

impl ContextCheck {
    /// A check whose default encoder is `encoder`, known as `name`.
    pub fn new(name: &str, encoder: SentenceEncoder) -> Self {
        Self {
            default_name: name.to_owned(),
            encoders: Mutex::new(HashMap::from([(name.to_owned(), Some(Arc::new(encoder)))])),
            why_failed: Mutex::new(HashMap::new()),
            canon: Mutex::new(HashMap::new()),
            seen_by_window: Mutex::new(HashMap::new()),
        }
    }

    /// Loads the default sentence encoder from the model store: a catalog name (fetched on
    /// first use), a model folder, or `None` for the catalog's default encoder (MiniLM).
    pub fn load(spec: Option<&str>) -> Result<Self> {
        let name = spec.unwrap_or("minilm");
        Ok(Self::new(name, load_encoder(name)?))
    }

    /// Loads now the encoders these packs name (otherwise each is loaded when its pack first
    /// needs it: multilingual-e5-small takes about 3 s and 800 MB, which an English-only run
    /// need not pay).
    ///
    /// Errors: an encoder cannot be fetched or loaded.
    pub fn prepare<'a>(&self, packs: impl IntoIterator<Item = &'a PhrasePack>) -> Result<()> {
        for pack in packs {
            if pack.context.is_some() {
                self.encoder_for(pack)?
                    .context("the sentence encoder failed to load before")?;
            }
        }
        Ok(())
    }

    /// Loads the encoder `name` now unless it is loaded already (or failed before); `user`
    /// names what needs it, for the error.
    ///
    /// Errors: it cannot be fetched or loaded, now or when first tried (the first error, with
    /// its cause); its readers are then off, or fall back, as on a first use that fails.
    pub fn load_named(&self, name: &str, user: &str) -> std::result::Result<(), String> {
        match self.encoder_named(name, user) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(lock(&self.why_failed)
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("the sentence encoder {name} failed to load"))),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// The names of the encoders loaded so far, sorted.
    pub fn loaded(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.encoders)
            .iter()
            .filter(|(_, e)| e.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// The name of the encoder that reads the pack's windows: the pack's own, else the
    /// default (`--encoder`).
    pub fn encoder_name<'a>(&'a self, pack: &'a PhrasePack) -> &'a str {
        pack.context
            .as_ref()
            .and_then(|c| c.encoder.as_deref())
            .unwrap_or(&self.default_name)
    }

    /// The pack's encoder, loaded on first use; `None` once it has failed to load (the first
    /// attempt's error was returned, and the check is off for its packs from then on, so a
    /// missing model is neither fetched nor warned about on every call).
    fn encoder_for(&self, pack: &PhrasePack) -> Result<Option<Arc<SentenceEncoder>>> {
        self.encoder_named(self.encoder_name(pack), &pack.source)
    }

    /// The encoder `name`, loaded on first use (as [`Self::encoder_for`]); `user` names what
    /// needs it, for the error.
    fn encoder_named(&self, name: &str, user: &str) -> Result<Option<Arc<SentenceEncoder>>> {
        if let Some(e) = lock(&self.encoders).get(name) {
            return Ok(e.clone());
        }
        // Loaded outside the lock: a first Mandarin call must not stall English ones. Two
        // threads may both load it once; the second copy is dropped.
        match load_encoder(name) {
            Ok(e) => Ok(lock(&self.encoders)
                .entry(name.to_owned())
                .or_insert(Some(Arc::new(e)))
                .clone()),
            Err(e) => {
                let e = e.context(format!("the sentence encoder {name} of {user}"));
                lock(&self.encoders).insert(name.to_owned(), None);
                lock(&self.why_failed).insert(name.to_owned(), format!("{e:#}"));
                Err(e)
            }
        }
    }

    fn canonical(
        &self,
        pack: &PhrasePack,
        ctx: &ScriptContext,
        encoder: &SentenceEncoder,
    ) -> Result<Arc<Canon>> {
        if let Some(v) = lock(&self.canon).get(&pack.source) {
            return Ok(v.clone());
        }
        let canon = Arc::new(Canon {
            scam: embed(encoder, &ctx.prefix, &ctx.sentences)?,
            honest: embed(encoder, &ctx.prefix, &ctx.honest_sentences)?,
        });
        lock(&self.canon).insert(pack.source.clone(), canon.clone());
        Ok(canon)
    }

    /// Forgets the windows seen so far (a benchmark measures the cost of new ones).
    pub fn clear_cache(&self) {
        lock(&self.seen_by_window).clear();
    }

    /// The sentence vectors of `windows` by the pack's encoder (with its prefix), unit
    /// length, remembered: a live call's growing transcript is classified again after every
    /// utterance, with all but its last windows the same. `None` when the pack has no
    /// `[context]` or its encoder failed to load before.
    ///
    /// Errors: the encoder cannot be loaded (fetched), or embedding fails.
    pub fn window_vectors(
        &self,
        pack: &PhrasePack,
        windows: &[String],
    ) -> Result<Option<Vec<Arc<[f32]>>>> {
        let Some(ctx) = &pack.context else {
            return Ok(None);
        };
        let Some(encoder) = self.encoder_for(pack)? else {
            return Ok(None);
        };
        self.remembered(&pack.source, &encoder, &ctx.prefix, windows)
            .map(Some)
    }

    /// The vectors of `texts` by the encoder `name` (no prefix: EmbeddingGemma puts its own
    /// prompt), remembered as [`Self::window_vectors`] are; `None` when that encoder failed to
    /// load before. `user` names what reads them, for the error.
    ///
    /// Errors: the encoder cannot be loaded (fetched), or embedding fails.
    pub fn vectors_by(
        &self,
        name: &str,
        user: &str,
        texts: &[String],
    ) -> Result<Option<Vec<Arc<[f32]>>>> {
        let Some(encoder) = self.encoder_named(name, user)? else {
            return Ok(None);
        };
        // Kept apart from the packs' windows: a key no pack source can be.
        self.remembered(&format!("\0encoder {name}"), &encoder, "", texts)
            .map(Some)
    }

    /// The vectors of `texts` (with `prefix`) by `encoder`, from the cache under `key` where
    /// seen before; the new ones are embedded and remembered.
    fn remembered(
        &self,
        key: &str,
        encoder: &SentenceEncoder,
        prefix: &str,
        texts: &[String],
    ) -> Result<Vec<Arc<[f32]>>> {
        let mut known: Vec<Option<Arc<[f32]>>> = {
            let cache = lock(&self.seen_by_window);
            let seen = cache.get(key);
            texts
                .iter()
                .map(|w| seen.and_then(|m| m.get(w)).cloned())
                .collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| known[i].is_none()).collect();
        if !missing.is_empty() {
            let new: Vec<&String> = missing.iter().map(|&i| &texts[i]).collect();
            let vectors = embed(encoder, prefix, new)?;
            let mut cache = lock(&self.seen_by_window);
            let seen = cache.entry(key.to_owned()).or_default();
            if seen.len() + missing.len() > CACHE_LIMIT {
                seen.clear();
            }
            for (&i, v) in missing.iter().zip(vectors) {
                let v: Arc<[f32]> = v.into();
                seen.insert(texts[i].clone(), v.clone());
                known[i] = Some(v);
            }
        }
        Ok(known.into_iter().flatten().collect())
    }

    /// For each window, how close its nearest canonical scam line (and honest line) is, by
    /// cosine similarity of sentence embeddings; `None` when the pack has no `[context]`.
    ///
    /// Errors: the pack's encoder cannot be loaded (fetched), or embedding fails.
    pub fn read_windows(
        &self,
        pack: &PhrasePack,
        windows: &[String],
    ) -> Result<Option<Vec<WindowReading>>> {
        let Some(ctx) = &pack.context else {
            return Ok(None);
        };
        let Some(vectors) = self.window_vectors(pack, windows)? else {
            return Ok(None);
        };
        let Some(encoder) = self.encoder_for(pack)? else {
            return Ok(None);
        };
        let canon = self.canonical(pack, ctx, &encoder)?;
        let nearest = |v: &[f32], lines: &[Vec<f32>]| {
            lines.iter().map(|c| cosine(v, c)).enumerate().fold(
                (0, f32::NEG_INFINITY),
                |best, (i, s)| {
                    if s > best.1 {
                        (i, s)
                    } else {
                        best
                    }
                },
            )
        };
        Ok(Some(
            vectors
                .iter()
                .map(|v| {
                    let (line, scam) = nearest(v, &canon.scam);
                    WindowReading {
                        scam,
                        nearest: line,
                        honest: (!canon.honest.is_empty()).then(|| nearest(v, &canon.honest).1),
                    }
                })
                .collect(),
        ))
    }
}

/// Embeds texts with the pack's prefix before each (`"query: "` for e5).
fn embed<S: AsRef<str>>(
    encoder: &SentenceEncoder,
    prefix: &str,
    texts: impl IntoIterator<Item = S>,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<String> = texts
        .into_iter()
        .map(|t| format!("{prefix}{}", t.as_ref()))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    encoder.embed(&refs)
}

fn load_encoder(spec: &str) -> Result<SentenceEncoder> {
    let files = crate::model_store::ModelStore::open()?.resolve_encoder(Some(spec))?;
    SentenceEncoder::load(&files, &candle_core::Device::Cpu)
        .with_context(|| format!("loading sentence encoder {}", files.dir.display()))
}

/// A poisoned lock only means another thread panicked mid-insert; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
