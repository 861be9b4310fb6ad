//! Which language a transcript is written in, judged by its script.
//!
//! On a few seconds of audio Whisper's language guess can contradict the script it then writes
//! (English detected, Han characters out); the script is the better witness.

/// `"zh"` when a good share (over a fifth) of the letters are Han characters, else `"en"`.
pub fn written_language(text: &str) -> &'static str {
    let (mut han, mut letters) = (0usize, 0usize);
    for c in text.chars() {
        if c.is_alphabetic() {
            letters += 1;
            if (c as u32) >= 0x3400 {
                han += 1;
            }
        }
    }
    if han * 5 > letters {
        "zh"
    } else {
        "en"
    }
}

/// The simplified form of a Han character (fast2s), with the variants simplification keeps
/// apart but mainland usage treats as one folded in: 帐 is written 账 (帳戶 and 账户 are one
/// word). The detector's normaliser and the hotword spellings (`asr::bias`) both read
/// characters through this, so they agree on what a character is.
pub fn simplified(c: char) -> String {
    let s = fast2s::convert(&c.to_string());
    if s == "帐" {
        "账".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn han_text_is_mandarin_and_latin_text_english() {
        assert_eq!(super::written_language("您的账户被冻结了 ok"), "zh");
        assert_eq!(super::written_language("your account, 好"), "en");
        assert_eq!(super::written_language(""), "en");
    }
}
