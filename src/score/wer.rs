//! Word error rate, after the normalisation speech-recognition papers use (case, punctuation,
//! spelled-out hesitations removed), so that formatting does not count as an error. Chinese
//! is compared in simplified characters and half-width forms, as Mandarin benchmarks convert
//! both sides before scoring (AISHELL and WenetSpeech references are simplified; Whisper
//! writes traditional characters for much Mandarin speech): 銀行卡號 for 银行卡号 is the same
//! four words, not four errors. Numbers are compared as written (三七二九 against 3729 counts).

use crate::asr::simplified;
use crate::detect::normalize::half_width;

/// Chinese is written without spaces: each ideograph counts as a word, so the same measure
/// is a character error rate there (as Mandarin ASR papers report) and a word error rate in
/// English.
fn is_ideograph(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}')
}

/// Lower-cases, drops punctuation except in-word apostrophes, and splits into words
/// (ideographs one by one, in their simplified form; full-width letters and digits as ASCII).
pub fn normalize_words(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars().map(half_width) {
        if is_ideograph(c) {
            for s in simplified(c).chars() {
                cleaned.extend([' ', s, ' ']);
            }
        } else if c.is_alphanumeric() || c == '\'' {
            cleaned.extend(c.to_lowercase());
        } else {
            cleaned.push(' ');
        }
    }
    const FILLERS: &[&str] = &["um", "uh", "hmm", "mm", "ah", "er", "erm"];
    cleaned
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_owned())
        .filter(|w| !w.is_empty() && !FILLERS.contains(&w.as_str()))
        .collect()
}

/// Edit distance between word sequences (substitutions, insertions, deletions).
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Word error rate of `hypothesis` against `reference`; 0 when both are empty.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalize_words(reference);
    let h = normalize_words(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    edit_distance(&r, &h) as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_counts_substitutions_insertions_and_deletions() {
        assert_eq!(wer("the cat sat", "the cat sat"), 0.0);
        assert!((wer("the cat sat", "the bat sat") - 1.0 / 3.0).abs() < 1e-9);
        assert!((wer("the cat sat", "the cat sat down") - 1.0 / 3.0).abs() < 1e-9);
        assert!((wer("the cat sat", "cat") - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "noise"), 1.0);
        // Mandarin counts characters: one wrong character of four.
        assert!((wer("安全账户", "安全账护") - 0.25).abs() < 1e-9);
        assert!((wer("转到安全账户。", "转到 安全账户") - 0.0).abs() < 1e-9);
        // The script a character is written in is not an error; a number's digits are words.
        assert_eq!(wer("请把银行卡号念给我", "請把銀行卡號念給我"), 0.0);
        assert_eq!(wer("工号3729", "工号３７２９"), 0.0);
        assert!((wer("工号三七二九", "工号3729") - 4.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn formatting_and_fillers_are_not_errors() {
        assert_eq!(
            wer(
                "Hello, Sheila. Um, I didn't know!",
                "hello sheila i didn't know"
            ),
            0.0
        );
    }
}
