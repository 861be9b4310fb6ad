//! Measures of quality: word error rate now; detector metrics later.

pub mod wer;
