//! Where live audio comes from: files played at real speed, and sound devices (cpal, with the
//! `capture` feature).

#[cfg(feature = "capture")]
pub mod capture;
pub mod file;
