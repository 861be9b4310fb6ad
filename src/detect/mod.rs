//! The scam detector: phrase packs, normalisation, fuzzy matching, call-level scoring, the
//! timeline of a call as it unfolds, and the per-call summary.

pub mod call_model;
pub mod classifier;
pub mod gemma_encoder;
pub mod matcher;
pub mod normalize;
pub mod pack;
pub mod script_context;
pub mod sentence_encoder;
pub mod summary;
pub mod timeline;

pub use classifier::{Classifier, Evidence, Risk, Verdict};
pub use pack::PhrasePack;
pub use summary::{summarise, summarise_text, PartyOutcome};
pub use timeline::Timeline;
