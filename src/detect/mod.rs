//! The scam detector: phrase packs, normalisation, fuzzy matching, call-level scoring.

pub mod classifier;
pub mod matcher;
pub mod normalize;
pub mod pack;
pub mod script_context;
pub mod sentence_encoder;
pub mod timeline;

pub use classifier::{Classifier, Evidence, Risk, Verdict};
pub use pack::PhrasePack;
