//! Turns transcript text into comparable tokens, remembering where each came from so evidence
//! can quote the original words.
//!
//! English: lower case, contractions expanded, small number words as digits, dotted acronyms
//! ("I.R.S.") joined. Chinese: traditional characters to simplified, full-width forms to
//! ASCII, one token per character, Latin and digit runs kept whole ("AnyDesk", "110").

use std::ops::Range;

use crate::asr::simplified;
use crate::phonetics::is_han;

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub text: String,
    /// Byte range in the original text.
    pub span: Range<usize>,
    /// One Han character (matched by character and pinyin) rather than a word.
    pub han: bool,
    /// Which sentence of the text it is in (0, 1, ...): a sentence ends at `.`, `!`, `?`,
    /// `;` or their full-width forms (`。！？；`), but not at the dot of an abbreviated letter
    /// ("I.R.S.") or one inside a number or name ("3.5", "paypal.com"). Patterns never span
    /// two sentences.
    pub sentence: usize,
    /// Which clause it is in: the count of commas (`,` `，`) before it in the whole text. A
    /// pack may keep the words a pattern skips within one clause (`gaps_cross_commas`).
    pub clause: usize,
}

/// Full-width ASCII forms (Ａ, １, ，) and the ideographic space to their plain forms.
/// The ASCII form of a full-width letter, digit or sign (U+FF01..U+FF5E); the ideographic
/// space is a space. Other characters are returned as they are.
pub fn half_width(c: char) -> char {
    match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    }
}

fn expand_contraction(word: &str) -> Option<&'static [&'static str]> {
    Some(match word {
        "don't" => &["do", "not"],
        "doesn't" => &["does", "not"],
        "didn't" => &["did", "not"],
        "won't" => &["will", "not"],
        "can't" | "cannot" => &["can", "not"],
        "isn't" => &["is", "not"],
        "aren't" => &["are", "not"],
        "wasn't" => &["was", "not"],
        "haven't" => &["have", "not"],
        "hasn't" => &["has", "not"],
        "shouldn't" => &["should", "not"],
        "wouldn't" => &["would", "not"],
        "i'm" => &["i", "am"],
        "you're" => &["you", "are"],
        "we're" => &["we", "are"],
        "they're" => &["they", "are"],
        "it's" => &["it", "is"],
        "that's" => &["that", "is"],
        "there's" => &["there", "is"],
        "what's" => &["what", "is"],
        "you'll" => &["you", "will"],
        "we'll" => &["we", "will"],
        "i'll" => &["i", "will"],
        "it'll" => &["it", "will"],
        "you've" => &["you", "have"],
        "we've" => &["we", "have"],
        "i've" => &["i", "have"],
        "i'd" => &["i", "would"],
        "you'd" => &["you", "would"],
        "let's" => &["let", "us"],
        _ => return None,
    })
}

fn number_word(word: &str) -> Option<&'static str> {
    Some(match word {
        "zero" => "0",
        "one" => "1",
        "two" => "2",
        "three" => "3",
        "four" => "4",
        "five" => "5",
        "six" => "6",
        "seven" => "7",
        "eight" => "8",
        "nine" => "9",
        "ten" => "10",
        _ => return None,
    })
}

/// Tokenizes any mix of English and Chinese.
pub fn tokenize(text: &str) -> Vec<Token> {
    // text, span, han, dotted, sentence
    let mut raw: Vec<(String, Range<usize>, bool, bool, usize)> = Vec::new();
    let mut word = String::new();
    let mut start = 0;
    let mut sentence = 0;
    let mut ended = false;
    let flush = |word: &mut String,
                 start: usize,
                 end: usize,
                 dotted: bool,
                 sentence: usize,
                 raw: &mut Vec<_>| {
        if !word.is_empty() {
            raw.push((std::mem::take(word), start..end, false, dotted, sentence));
        }
    };
    let mut chars = text.char_indices().peekable();
    while let Some((i, c0)) = chars.next() {
        let c = half_width(c0);
        let next = chars.peek().map(|&(_, n)| half_width(n));
        if ended && (is_han(c) || c.is_alphanumeric()) {
            sentence += 1;
            ended = false;
        }
        if is_han(c) {
            flush(&mut word, start, i, false, sentence, &mut raw);
            raw.push((simplified(c), i..i + c0.len_utf8(), true, false, sentence));
        } else if c.is_alphanumeric() || (c == '\'' && !word.is_empty()) {
            if word.is_empty() {
                start = i;
            }
            word.extend(c.to_lowercase());
        } else {
            let dotted = c == '.' && word.chars().count() == 1;
            let ends = match c {
                '!' | '?' | ';' | '。' | '！' | '？' | '；' => true,
                // A dot followed by a letter or digit is inside a number or a name.
                '.' => !dotted && next.is_none_or(|n| !n.is_alphanumeric()),
                _ => false,
            };
            flush(&mut word, start, i, dotted, sentence, &mut raw);
            ended |= ends;
        }
    }
    flush(&mut word, start, text.len(), false, sentence, &mut raw);

    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        // Dotted single letters in a row form one acronym: "i.r.s." -> "irs".
        if raw[i].3 {
            let mut j = i;
            let mut acronym = String::new();
            while j < raw.len() && raw[j].3 {
                acronym.push_str(&raw[j].0);
                j += 1;
            }
            if j - i >= 2 {
                out.push(Token {
                    text: acronym,
                    span: raw[i].1.start..raw[j - 1].1.end,
                    han: false,
                    sentence: raw[i].4,
                    clause: 0,
                });
                i = j;
                continue;
            }
        }
        let (w, span, han, _, sentence) = &raw[i];
        let w = w.trim_end_matches('\'');
        if let Some(parts) = expand_contraction(w) {
            for p in parts {
                out.push(Token {
                    text: (*p).to_owned(),
                    span: span.clone(),
                    han: false,
                    sentence: *sentence,
                    clause: 0,
                });
            }
        } else {
            let w = w.strip_suffix("'s").unwrap_or(w);
            let text = number_word(w)
                .map(str::to_owned)
                .unwrap_or_else(|| w.to_owned());
            out.push(Token {
                text,
                span: span.clone(),
                han: *han,
                sentence: *sentence,
                clause: 0,
            });
        }
        i += 1;
    }
    let commas: Vec<usize> = text
        .char_indices()
        .filter(|&(_, c)| c == ',' || c == '，')
        .map(|(i, _)| i)
        .collect();
    for t in &mut out {
        t.clause = commas.partition_point(|&at| at < t.span.start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn english_is_lowercased_expanded_and_acronyms_joined() {
        assert_eq!(
            words("Don't tell anyone, it's the I.R.S. Buy THREE gift-cards!"),
            [
                "do", "not", "tell", "anyone", "it", "is", "the", "irs", "buy", "3", "gift",
                "cards"
            ]
        );
        assert_eq!(words("the R.S. called"), ["the", "rs", "called"]);
    }

    #[test]
    fn chinese_is_simplified_half_width_and_per_character() {
        assert_eq!(
            words("安全帳戶ＡｎｙＤｅｓｋ１２３"),
            ["安", "全", "账", "户", "anydesk123"]
        );
        let t = tokenize("请下载AnyDesk");
        assert!(t[0].han && !t[3].han);
        assert_eq!(&"请下载AnyDesk"[t[3].span.clone()], "AnyDesk");
    }

    #[test]
    fn spans_point_at_the_original_text() {
        let text = "Officer Brooks: you're under arrest.";
        for t in tokenize(text) {
            assert!(!text[t.span.clone()].is_empty());
        }
        let toks = tokenize(text);
        assert_eq!(&text[toks.last().unwrap().span.clone()], "arrest");
    }
}
