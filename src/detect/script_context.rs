//! The context check: how much the words around a keyword match sound like a line of a scam
//! script, by sentence embeddings. Packs name the canonical lines (`[context]`); this holds the
//! encoder, their vectors, and a cache, because a live call's growing transcript is classified
//! again after every utterance and would otherwise embed the same windows again and again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::pack::PhrasePack;
use super::sentence_encoder::{cosine, SentenceEncoder};

/// Windows remembered per pack before its cache starts over: a few hours of live calls.
const CACHE_LIMIT: usize = 50_000;

pub struct ContextCheck {
    encoder: SentenceEncoder,
    /// Canonical sentence vectors per pack (keyed by the pack's source).
    canon: Mutex<HashMap<String, Arc<Vec<Vec<f32>>>>>,
    /// Per pack (keyed by its source), the best similarity of each window seen.
    best_by_window: Mutex<HashMap<String, HashMap<String, f32>>>,
}

impl ContextCheck {
    pub fn new(encoder: SentenceEncoder) -> Self {
        Self {
            encoder,
            canon: Mutex::new(HashMap::new()),
            best_by_window: Mutex::new(HashMap::new()),
        }
    }

    /// Loads a sentence encoder from the model store: a catalog name (fetched on first use), a
    /// model folder, or `None` for the catalog's default encoder.
    pub fn load(spec: Option<&str>) -> Result<Self> {
        let files = crate::model_store::ModelStore::open()?.resolve_encoder(spec)?;
        let encoder = SentenceEncoder::load(&files, &candle_core::Device::Cpu)
            .with_context(|| format!("loading sentence encoder {}", files.dir.display()))?;
        Ok(Self::new(encoder))
    }

    fn canonical(&self, pack: &PhrasePack) -> Result<Option<Arc<Vec<Vec<f32>>>>> {
        let Some(ctx) = &pack.context else {
            return Ok(None);
        };
        if let Some(v) = lock(&self.canon).get(&pack.source) {
            return Ok(Some(v.clone()));
        }
        let sentences: Vec<&str> = ctx
            .sentences
            .iter()
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
            .collect();
        let vectors = Arc::new(self.encoder.embed(&sentences)?);
        lock(&self.canon).insert(pack.source.clone(), vectors.clone());
        Ok(Some(vectors))
    }

    /// Forgets the windows seen so far (a benchmark measures the cost of new ones).
    pub fn clear_cache(&self) {
        lock(&self.best_by_window).clear();
    }

    /// For each window, the cosine similarity of its closest canonical sentence; `None` when
    /// the pack has no canonical sentences.
    pub fn best_similarities(
        &self,
        pack: &PhrasePack,
        windows: &[String],
    ) -> Result<Option<Vec<f32>>> {
        let Some(canon) = self.canonical(pack)? else {
            return Ok(None);
        };
        let mut known: Vec<Option<f32>> = {
            let cache = lock(&self.best_by_window);
            let seen = cache.get(&pack.source);
            windows
                .iter()
                .map(|w| seen.and_then(|m| m.get(w)).copied())
                .collect()
        };
        let missing: Vec<usize> = (0..windows.len()).filter(|&i| known[i].is_none()).collect();
        if !missing.is_empty() {
            let texts: Vec<&str> = missing.iter().map(|&i| windows[i].as_str()).collect();
            let vectors = self.encoder.embed(&texts)?;
            let mut cache = lock(&self.best_by_window);
            let seen = cache.entry(pack.source.clone()).or_default();
            if seen.len() + missing.len() > CACHE_LIMIT {
                seen.clear();
            }
            for (&i, v) in missing.iter().zip(&vectors) {
                let best = canon
                    .iter()
                    .map(|c| cosine(v, c))
                    .fold(f32::NEG_INFINITY, f32::max);
                known[i] = Some(best);
                seen.insert(windows[i].clone(), best);
            }
        }
        Ok(Some(
            known.into_iter().map(Option::unwrap_or_default).collect(),
        ))
    }
}

/// A poisoned lock only means another thread panicked mid-insert; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
