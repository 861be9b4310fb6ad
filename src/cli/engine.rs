//! What `listen` and `serve` share: an engine started from a config (models loaded, sinks
//! opened), and its configured sources run on threads of their own.

use std::sync::Arc;

use anyhow::Result;

use crate::config::{Config, SourceConfig};
use crate::engine::{Engine, SinkSpec, WhisperRecogniser};
use crate::sources::{Ingest, Source, Stop};

/// Builds the config's sources and opens its sinks (a bad path or device fails here, before
/// the models load), then loads the models and starts the engine with `extra` sinks first.
pub fn start(config: &Config, extra: Vec<SinkSpec>) -> Result<(Engine, Vec<Box<dyn Source>>)> {
    let sources = config
        .sources
        .iter()
        .map(SourceConfig::build)
        .collect::<Result<Vec<_>>>()?;
    let mut sinks = extra;
    for s in &config.sinks {
        sinks.push(s.build()?);
    }
    let classifier = Arc::new(config.detect.load()?);
    let transcriber = Arc::new(config.asr.load()?);
    let options = config
        .asr
        .options(transcriber.is_multilingual(), &classifier.languages());
    prepare_encoders(&classifier, transcriber.is_multilingual(), &options);
    let recogniser = Arc::new(WhisperRecogniser::new(transcriber, options));
    let engine = Engine::start(recogniser, classifier, config.engine.clone(), sinks)?;
    Ok((engine, sources))
}

/// Loads, before the first call, the sentence encoders of the packs this recogniser can hear
/// (an English-only model, a forced `--language` or `--languages` rule the others out), so that
/// no live call waits for one (EmbeddingGemma: 3-10 s to load on 2 cores, or its fetch).
/// One that cannot load is named in a warning and the engine starts without it, as it would
/// have gone on when a call first needed it.
fn prepare_encoders(
    classifier: &crate::detect::Classifier,
    multilingual: bool,
    options: &crate::asr::TranscribeOptions,
) {
    let mut languages: Vec<&str> = if !multilingual {
        vec!["en"]
    } else if let Some(l) = &options.language {
        vec![l.as_str()]
    } else {
        options
            .candidate_languages
            .iter()
            .map(String::as_str)
            .collect()
    };
    // A language with no pack of its own is scored with another (the pack its words are
    // written in, else English): then any pack may read its calls.
    if languages.is_empty() || languages.iter().any(|l| classifier.pack(l).is_none()) {
        languages = classifier.languages();
    }
    let prepared = classifier.prepare(&languages);
    for (name, s) in &prepared.loaded {
        tracing::info!("sentence encoder {name} ready ({s:.1} s)");
    }
    for (name, why) in &prepared.failed {
        tracing::warn!(
            "sentence encoder {name} could not be loaded (the context check of its packs is \
             off; a call model that reads it falls back to its fallback_weights): {why}"
        );
    }
}

/// Runs every source on a thread of its own until each is done (or `stop` is requested);
/// returns what failed, as "source: error".
pub fn run_sources(
    ingest: &Arc<dyn Ingest>,
    sources: Vec<Box<dyn Source>>,
    stop: &Stop,
) -> Vec<String> {
    std::thread::scope(|scope| {
        let running: Vec<_> = sources
            .into_iter()
            .map(|source| {
                let (ingest, stop) = (ingest.clone(), stop.clone());
                let name = source.describe();
                (name, scope.spawn(move || source.run(ingest, stop)))
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(name, handle)| match handle.join() {
                Ok(Ok(())) => None,
                // Most errors name their file or device already; say which source otherwise.
                Ok(Err(e)) => {
                    let e = format!("{e:#}");
                    let named = name
                        .split_once(' ')
                        .is_some_and(|(_, what)| e.contains(what));
                    Some(if named { e } else { format!("{name}: {e}") })
                }
                Err(_) => Some(format!("{name}: the source crashed")),
            })
            .collect()
    })
}
