//! vishguard: listens to phone-call audio and raises an alert, with evidence, when a caller
//! follows a scam script.
//!
//! Audio flows one way: [`sources`] -> [`engine`] (per-call front end over [`audio`] stages,
//! a scheduler, the recogniser over [`asr`], the detector in [`detect`], a fan-out) ->
//! [`sinks`]. The records that cross these rooms, and leave the process, are in [`call`];
//! [`config`] describes a whole run. [`model_store`] provides the models; [`score`] measures
//! quality; [`render`] writes transcripts; [`cli`] is the command line. [`phonetics`] is how
//! Mandarin sounds through a telephone band (the matcher's, the recogniser's rescoring's and the
//! call model's).
//!
//! [`server`] is `serve`'s HTTP side (API, events, metrics, WebSocket media).
//!
//! Each room imports only rooms below it: cli > config, score > server > engine > sources,
//! sinks, render > detect > asr > audio, model_store > call, private_files, phonetics (`tests/layers.rs`
//! checks it). [`private_files`] creates the files that hold what was said, owner-only.

pub mod asr;
pub mod audio;
pub mod call;
pub mod cli;
pub mod config;
pub mod detect;
pub mod engine;
pub mod model_store;
pub mod phonetics;
pub mod private_files;
pub mod relay;
pub mod render;
pub mod score;
pub mod server;
pub mod sinks;
pub mod sources;
