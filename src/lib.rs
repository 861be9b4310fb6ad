//! vishguard: listens to phone-call audio and raises an alert, with evidence, when a caller
//! follows a scam script.
//!
//! Audio flows one way: sources -> [`audio`] stages -> [`asr`] -> detector -> [`sinks`].
//! [`model_store`] provides the models; [`score`] measures quality.

pub mod asr;
pub mod audio;
pub mod cli;
pub mod detect;
pub mod live;
pub mod model_store;
pub mod score;
pub mod sinks;
pub mod sources;
