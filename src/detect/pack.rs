//! Phrase packs: the detector's knowledge, as data (`models/phrases/*.toml`), loaded and
//! validated at start. A mistake in a pack is an error naming the file and line.

use std::path::Path;

use serde::Deserialize;

use super::matcher::{compile_pattern, Pattern};
use super::normalize::tokenize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    language: String,
    /// Tokens that may be skipped between two words of a pattern.
    max_gap: usize,
    /// Whether those skipped tokens may run across a comma (default yes; see `matcher::Gaps`).
    #[serde(default = "yes")]
    gaps_cross_commas: bool,
    levels: Levels,
    /// Score ceiling when all evidence is from one category not marked `standalone`: one
    /// kind of cue alone ("your account") is what honest calls say too.
    single_category_cap: f32,
    #[serde(default)]
    addressee: Option<Addressee>,
    #[serde(default)]
    negation: Option<Negation>,
    #[serde(default)]
    reported: Option<Reported>,
    #[serde(default)]
    context: Option<ScriptContext>,
    #[serde(rename = "category")]
    categories: Vec<CategoryFile>,
}

/// Honest callers name the things scammers ask for in order to warn or reassure: "we will
/// never ask for your PIN", "不要把验证码告诉任何人", "也不用提供什么验证码". In a `negatable`
/// category, a match with a negation word shortly before it, in the same clause, is such a
/// warning, not evidence. A clause ends at a sentence end and at the pack's `clause_marks`
/// (Mandarin: the comma, which lists do not use, 、 being theirs): in "不用担心，您把钱转到
/// 安全账户" the negation is over before the request, while in "不会问您卡号、密码和验证码" it
/// reaches the whole list. A negation word inside the gap of a match ("验证码不要发给任何人"
/// read by "验证码 发给") negates it too, and so does one of `after` just after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Negation {
    /// Normalised tokens (Chinese: single characters or words of them) that negate.
    pub words: Vec<String>,
    /// How many tokens before a match are searched (Chinese: characters).
    pub window: usize,
    /// Words that, right after a negation word, show it negates a feeling and not the request
    /// that follows: "不用担心您把钱转到安全账户" (transcripts often lack the comma).
    #[serde(default)]
    pub except_before: Vec<String>,
    /// Negations said after their object, as Mandarin puts a topic first: "验证码您千万别告诉
    /// 任何人", "密码这些我们是不会问的". Only adverb-led forms (都不, 千万别, 是不会...): a bare
    /// 不要 after a request is usually the secrecy that follows it ("验证码发给我不要告诉别人").
    #[serde(default)]
    pub after: Vec<String>,
    /// How many tokens after a match are searched for `after` (Chinese: characters).
    #[serde(default)]
    pub after_window: usize,
    /// Punctuation that ends a clause, and so a negation's reach (none by default: English
    /// commas also separate the items of a list, "never your PIN, password or code").
    #[serde(default)]
    pub clause_marks: String,
    /// Words that end a negation's reach as a clause mark does: "您不需要去银行只要下载这个软件"
    /// (只, 但是, "but", "instead"): what follows them is asked for.
    #[serde(default)]
    pub ends_at: Vec<String>,
    /// `words` normalised as transcripts are, once at load.
    #[serde(skip)]
    pub tokens: Vec<Vec<String>>,
    /// `except_before` normalised, once at load.
    #[serde(skip)]
    pub except_tokens: Vec<Vec<String>>,
    /// `ends_at` normalised, once at load.
    #[serde(skip)]
    pub ends_at_tokens: Vec<Vec<String>>,
    /// `after` normalised, once at load.
    #[serde(skip)]
    pub after_tokens: Vec<Vec<String>>,
}

/// Anti-fraud warnings retell the script in order to warn against it: "对方如果说您涉嫌洗钱，
/// 让您转到安全账户，那都是骗子", "if anyone calls saying your grandson is in jail and needs bail,
/// it's a scam", "scammers will tell you to buy gift cards". The cues in such a retelling are
/// quoted, not said to the listener, and count for nothing. A retelling runs from an `opener`
/// to a `verdict` within `window` tokens and at most one sentence later (one not denied: "我怎么
/// 知道不是诈骗"), or from a `narrator` to the end of its sentence (at most `window` tokens).
/// Cues outside it count as ever, so a scammer who warns about scams first and then asks for
/// the transfer is still heard asking.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reported {
    /// Words that open a hypothetical or reported clause: 如果, 要是, "if", "anyone who".
    pub openers: Vec<String>,
    /// Words that close it with a verdict on what was retold: 都是骗子, "it's a scam".
    pub verdicts: Vec<String>,
    /// Words that, just before a verdict, deny it: "不是诈骗", "how do I know it's not a scam".
    #[serde(default)]
    pub denials: Vec<String>,
    /// Words after which the rest of the sentence is a retelling: 骗子会说, "scammers will".
    #[serde(default)]
    pub narrators: Vec<String>,
    /// Words after which the rest of the sentence reads a message aloud: "it says", 短信上写着.
    /// An honest caller's reassurance found there ("it says don't share this code") is the
    /// message's words, read out by someone who is being asked for the code, not a caller's:
    /// it does not lower the score. Scam cues there still count.
    #[serde(default)]
    pub quoters: Vec<String>,
    /// Most tokens from an opener to the end of its verdict, or after a narrator
    /// (Chinese: characters).
    pub window: usize,
    /// How many sentences an opener may come before its verdict's sentence (default 1): in a
    /// call, a caller's "he said my account was compromised." is often answered a sentence
    /// later ("I understand. That's a very common scam.").
    #[serde(default = "one_sentence")]
    pub sentences: usize,
    /// `openers` normalised as transcripts are, once at load.
    #[serde(skip)]
    pub opener_tokens: Vec<Vec<String>>,
    /// `verdicts` normalised, once at load.
    #[serde(skip)]
    pub verdict_tokens: Vec<Vec<String>>,
    /// `denials` normalised, once at load.
    #[serde(skip)]
    pub denial_tokens: Vec<Vec<String>>,
    /// `narrators` normalised, once at load.
    #[serde(skip)]
    pub narrator_tokens: Vec<Vec<String>>,
    /// `quoters` normalised, once at load.
    #[serde(skip)]
    pub quoter_tokens: Vec<Vec<String>>,
}

fn one_sentence() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// Scam scripts speak to the listener ("your account will be suspended"); people chatting
/// about crime or taxes talk about others ("there should be penalties"). Evidence of a
/// category that is not `standalone` with no word for "you" near it counts for less.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addressee {
    /// Normalised tokens that address the listener.
    pub words: Vec<String>,
    /// How many tokens either side of a match are searched for one.
    pub window: usize,
    /// Weight factor for evidence with none (0..1).
    pub discount: f32,
}

/// Keywords are shared by scams and honest talk; the sentence around them is not. "Penalties"
/// in "there should be stiffer penalties for criminals" reads nothing like any scam script
/// line. With a sentence encoder loaded, the words around each match are compared with these
/// canonical scam sentences, and evidence whose surroundings resemble none of them counts less.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptContext {
    /// Canonical lines of scam scripts, written as a scammer would say them.
    pub sentences: Vec<String>,
    /// Words taken either side of a match to form its context.
    pub window: usize,
    /// Cosine similarity to the closest canonical sentence below which evidence is discounted.
    pub min_similarity: f32,
    /// Weight factor for such evidence (0..1).
    pub discount: f32,
    /// The sentence encoder these sentences and thresholds are for: a catalog name or model
    /// folder; absent, the one `--encoder` names (MiniLM, English only).
    #[serde(default)]
    pub encoder: Option<String>,
    /// Put before every text embedded: multilingual-e5 was trained to see `"query: "` before
    /// texts compared with each other.
    #[serde(default)]
    pub prefix: String,
    /// Canonical lines of honest calls that share the scam's words (a bank's warning never to
    /// tell anyone the code, a court asking you to come in person). Evidence whose words are
    /// at least `honest_margin` closer to one of these than to every scam line is discounted
    /// too: sentence embeddings place "请把验证码告诉我" and "请不要把验证码告诉任何人" close
    /// together (0.955 with e5-small), so only a margin against both tells them apart.
    #[serde(default)]
    pub honest_sentences: Vec<String>,
    #[serde(default)]
    pub honest_margin: f32,
    /// Scam lines said in words no pattern names: see [`LineCheck`].
    #[serde(default)]
    pub lines: Option<LineCheck>,
    /// A model of the whole call over the line check's windows: see [`CallModelSettings`].
    #[serde(default)]
    pub call_model: Option<CallModelSettings>,
}

/// How the call model ([`crate::detect::call_model`]) moves the keyword verdict. The keywords
/// stay the evidence; the model's probability `p` vetoes or corroborates: a call the keywords
/// flag is not flagged when `p < gate` (its score becomes `p`), and, where the pack sets a
/// `lift`, one they do not flag is suspected when its keyword score is at least
/// `lift_min_score` and `p >= lift`, or, where the pack sets `alone_min_windows`, at any
/// score when the transcript has that many windows and `p >= lift`. So an alert needs both
/// readings, except where the model is sure and a strong cue was heard, or the call is long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallModelSettings {
    /// The weights file: beside the pack's file, else one shipped with the binary by that name.
    pub weights: String,
    pub gate: f32,
    #[serde(default)]
    pub lift: Option<f32>,
    #[serde(default)]
    pub lift_min_score: Option<f32>,
    /// Transcripts of fewer windows keep the keywords' verdict: the model was trained on
    /// whole calls, and on one sentence ("请把手机收到的验证码告诉我", one window) it vetoed
    /// the request the keywords rightly flagged.
    #[serde(default = "default_min_windows")]
    pub min_windows: usize,
    /// Transcripts of fewer windows are not vetoed (the model may still lift them): heard
    /// scams are often short (the bundled samples' transcripts are 3-5 windows), and the
    /// model vetoed some of them, while the honest calls it rightly vetoes are mostly long.
    /// From 3 windows, the English model vetoed two of the four bundled English scams as
    /// base hears them, and two as tiny.en does; from 7, none. On written calls it costs: each training set left
    /// out in turn (`benches/train_call_model.py en --logo --veto-min-windows 3|7`), 360 of
    /// 428 scams flagged from 7 against 354 from 3, and 57 of 595 honest calls against 42
    /// (short written calls the keywords flag too); Mandarin's are the same either way.
    /// Defaults to `min_windows`.
    #[serde(default)]
    pub veto_min_windows: Option<usize>,
    /// With a `lift`: transcripts of this many windows or more are lifted at `p >= lift`
    /// whatever their keyword score (the model alone). For the telephone: base may hear no
    /// cue at all of a Mandarin scam (keyword score 0) and still enough for the model to read
    /// the call as one. Short calls are left out because the honest calls the model alone
    /// lifted were short (benches/train_call_model.py zh, each set left out in turn: from 3
    /// windows 10 more scams and 2 honest calls lifted, from 10 windows 4 and none). Every
    /// transcript of this length is then read by the encoder, cue or not (about 1 s of CPU
    /// per 400 Mandarin characters with e5-small).
    #[serde(default)]
    pub alone_min_windows: Option<usize>,
    /// Live calls: a flag the keywords raise on a call heard so far, below the pack's `high`
    /// level, while the model reads the call below this, is alerted only when the next
    /// finished reading of later audio is flagged too (`engine/worker.rs`, `held`); the
    /// end-of-call verdict is unchanged. An honest caller's words can match a pattern for one
    /// utterance before the call makes their sense plain (an anti-fraud warning that names a
    /// "safe account"): on Mandarin heard copies and near-domain sets read 40 characters at a
    /// time (`benches/train_call_model.py --live 40`), 0.8 took calls alerted at some reading
    /// from 132 scams / 30 honest calls of 140 / 160 to 132 / 23, four scams alerted one
    /// reading later. None: alerted at once.
    #[serde(default)]
    pub live_confirm_below: Option<f32>,
    /// Live calls: the model alone (a keyword score below `lift_min_score`) lifts a call heard
    /// so far only from this many windows, where the summary keeps `alone_min_windows`; the
    /// engine's close alerts what the summary flags (`engine/worker.rs`, `live_withheld`). On
    /// the first minute of a call the model reads honest openings as sure scams (a tax office's
    /// reminder, a bank's wealth manager, a school's fever call: 0.96-1.0 on 10-30 windows,
    /// whole calls 0.01-0.35). On five fresh Mandarin sets heard live with base (unseen_ai..am,
    /// 8 kHz, `benches/train_call_model.py --eval-live RUN --live-alone-min-windows 40`, all
    /// read), 40 took calls alerted live from 94 scams / 18 honest calls of 100 / 99 to 93 /
    /// 11, one scam alerted first at the close. None: `alone_min_windows`.
    #[serde(default)]
    pub live_alone_min_windows: Option<usize>,
    /// Weights read instead when those of `weights` need a second encoder (their `pieces`)
    /// that cannot be loaded: a machine without EmbeddingGemma (1.2 GB) keeps the model it
    /// had before, on the first encoder's windows alone. Found as `weights` is.
    #[serde(default)]
    pub fallback_weights: Option<String>,
    /// The weights, loaded with the pack.
    #[serde(skip)]
    pub model: Option<std::sync::Arc<super::call_model::CallModel>>,
    /// The fallback weights, loaded with the pack.
    #[serde(skip)]
    pub fallback: Option<std::sync::Arc<super::call_model::CallModel>>,
}

impl CallModelSettings {
    /// The fewest windows a transcript needs for the model to veto it.
    pub fn veto_from(&self) -> usize {
        self.veto_min_windows.unwrap_or(self.min_windows)
    }

    /// Whether a transcript of this keyword score and this many windows may be lifted (when
    /// the model reads `lift` or more): from `lift_min_score`, or at any score from
    /// `alone_min_windows`. `usize::MAX` windows asks whether any length may be.
    pub fn may_lift(&self, score: f32, windows: usize) -> bool {
        self.may_lift_from(score, windows, self.alone_min_windows)
    }

    /// Whether a lift that stood on `lift` (a transcript the model lifted) stands for a live
    /// call heard so far: as [`Self::may_lift`], with `live_alone_min_windows` for
    /// `alone_min_windows` where the pack sets it.
    pub fn lifts_live(&self, lift: &super::classifier::Lift) -> bool {
        let alone = self.live_alone_min_windows.or(self.alone_min_windows);
        self.may_lift_from(lift.keyword_score, lift.windows, alone)
    }

    /// [`Self::may_lift`] with the model alone lifting from `alone_min_windows` windows.
    fn may_lift_from(&self, score: f32, windows: usize, alone_min_windows: Option<usize>) -> bool {
        self.lift.is_some()
            && (self.lift_min_score.is_some_and(|s| score >= s)
                || alone_min_windows.is_some_and(|a| windows >= a))
    }
}

/// The whole transcript, window by window, against the canonical lines: a window close to a
/// scam line (and clearly closer to it than to any honest line) is evidence of its own kind,
/// `scam_line`, quoting the line it resembles. Like any one category it cannot alert alone
/// (the pack's `single_category_cap`); it corroborates keywords the channel garbled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineCheck {
    /// Window length and step, in tokens (a Han character or a word).
    pub window: usize,
    pub stride: usize,
    /// Cosine similarity to the closest scam line a window needs ...
    pub min_similarity: f32,
    /// ... and how much closer to it than to the closest honest line.
    pub margin: f32,
    /// The category's strength when a window qualifies (0..1).
    pub weight: f32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub suspected: f32,
    pub high: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    name: String,
    description: String,
    /// Strength of one matched pattern, 0..1; negative for cues of an honest call.
    weight: f32,
    #[serde(default)]
    standalone: bool,
    #[serde(default)]
    negatable: bool,
    #[serde(default)]
    max_strength: Option<f32>,
    patterns: Vec<PatternEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PatternEntry {
    Plain(String),
    Weighted { pattern: String, weight: f32 },
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub description: String,
    pub weight: f32,
    pub standalone: bool,
    /// A match right after a negation ("never ... your PIN") is a warning, not evidence.
    pub negatable: bool,
    /// However many of its patterns match, the category counts for at most this much:
    /// for words that pile up in honest talk ("penalties", "jail", "judge").
    pub max_strength: f32,
    pub patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
pub struct PhrasePack {
    pub language: String,
    pub max_gap: usize,
    pub gaps_cross_commas: bool,
    pub levels: Levels,
    pub single_category_cap: f32,
    pub addressee: Option<Addressee>,
    pub negation: Option<Negation>,
    pub reported: Option<Reported>,
    pub context: Option<ScriptContext>,
    pub categories: Vec<Category>,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct PackError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// The packs shipped with the binary.
pub const BUILTIN_EN: &str = include_str!("../../models/phrases/en.toml");
pub const BUILTIN_ZH: &str = include_str!("../../models/phrases/zh.toml");
/// The call models shipped with the binary, by file name.
const BUILTIN_CALL_MODELS: [(&str, &str); 3] = [
    (
        "en_call_model.json",
        include_str!("../../models/phrases/en_call_model.json"),
    ),
    (
        "zh_call_model.json",
        include_str!("../../models/phrases/zh_call_model.json"),
    ),
    (
        "zh_call_model_e5.json",
        include_str!("../../models/phrases/zh_call_model_e5.json"),
    ),
];

fn default_min_windows() -> usize {
    3
}

/// A call model's weights: `name` in `folder` (a pack file's) when it is there, else the one
/// shipped with the binary by that name.
fn load_call_model(
    folder: Option<&Path>,
    name: &str,
) -> anyhow::Result<super::call_model::CallModel> {
    use anyhow::Context;
    let beside = folder.map(|d| d.join(name)).filter(|p| p.is_file());
    let text = match beside {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => BUILTIN_CALL_MODELS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
            .with_context(|| {
                format!("call model {name:?}: no such file beside the pack, nor shipped")
            })?,
    };
    super::call_model::CallModel::parse(&text).with_context(|| format!("call model {name:?}"))
}

impl PhrasePack {
    pub fn load(path: &Path) -> Result<Self, PackError> {
        let text = std::fs::read_to_string(path).map_err(|e| PackError {
            file: path.display().to_string(),
            line: 0,
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse_in(&path.display().to_string(), &text, path.parent())
    }

    /// A pack from its text; files it names (a call model's weights) are those shipped with
    /// the binary.
    pub fn parse(file: &str, text: &str) -> Result<Self, PackError> {
        Self::parse_in(file, text, None)
    }

    /// A pack from its text, with the files it names looked for in `folder` first.
    fn parse_in(file: &str, text: &str, folder: Option<&Path>) -> Result<Self, PackError> {
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map_or(0, |i| i + 1)
        };
        let fail = |line: usize, problem: String| PackError {
            file: file.to_owned(),
            line,
            problem,
        };
        let mut raw: PackFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            fail(line, e.message().to_owned())
        })?;
        if !["en", "zh"].contains(&raw.language.as_str()) {
            return Err(fail(
                line_of("language"),
                format!("unsupported language {:?}", raw.language),
            ));
        }
        let l = raw.levels;
        if !(0.0 < l.suspected && l.suspected < l.high && l.high <= 1.0) {
            return Err(fail(
                line_of("suspected"),
                "levels need 0 < suspected < high <= 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&raw.single_category_cap) || raw.max_gap > 20 {
            return Err(fail(
                line_of("single_category_cap"),
                "single_category_cap must be in 0..1 and max_gap at most 20".into(),
            ));
        }
        if let Some(a) = &raw.addressee {
            if !(0.0..=1.0).contains(&a.discount) || a.words.is_empty() || a.window > 50 {
                return Err(fail(
                    line_of("[addressee]"),
                    "addressee needs words, a window of at most 50 and a discount in 0..1".into(),
                ));
            }
        }
        let normalise = |words: &[String]| -> Vec<Vec<String>> {
            words
                .iter()
                .map(|w| tokenize(w).into_iter().map(|t| t.text).collect())
                .collect()
        };
        if let Some(r) = &mut raw.reported {
            r.opener_tokens = normalise(&r.openers);
            r.verdict_tokens = normalise(&r.verdicts);
            r.narrator_tokens = normalise(&r.narrators);
            r.quoter_tokens = normalise(&r.quoters);
            r.denial_tokens = normalise(&r.denials);
            let no_verdict = r.openers.is_empty() != r.verdicts.is_empty();
            let nothing = r.openers.is_empty() && r.narrators.is_empty();
            if no_verdict
                || nothing
                || !(1..=200).contains(&r.window)
                || !(1..=5).contains(&r.sentences)
                || [
                    &r.opener_tokens,
                    &r.verdict_tokens,
                    &r.narrator_tokens,
                    &r.denial_tokens,
                    &r.quoter_tokens,
                ]
                .into_iter()
                .flatten()
                .any(Vec::is_empty)
            {
                return Err(fail(
                    line_of("[reported]"),
                    "reported needs openers with verdicts, or narrators, a window of 1..200 tokens and sentences in 1..5; each word needs a letter or character".into(),
                ));
            }
        }
        if let Some(n) = &mut raw.negation {
            n.tokens = normalise(&n.words);
            n.except_tokens = normalise(&n.except_before);
            n.ends_at_tokens = normalise(&n.ends_at);
            n.after_tokens = normalise(&n.after);
            if n.words.is_empty()
                || n.window > 50
                || n.after_window > 50
                || [
                    &n.tokens,
                    &n.except_tokens,
                    &n.ends_at_tokens,
                    &n.after_tokens,
                ]
                .into_iter()
                .flatten()
                .any(Vec::is_empty)
            {
                return Err(fail(
                    line_of("[negation]"),
                    "negation needs words, and windows of at most 50; each of words, except_before, ends_at and after needs a letter or character".into(),
                ));
            }
        }
        if let Some(c) = &raw.context {
            let bad_lines = c.lines.as_ref().is_some_and(|l| {
                !(2..=200).contains(&l.window)
                    || !(1..=l.window).contains(&l.stride)
                    || !(-1.0..=1.0).contains(&l.min_similarity)
                    || !(0.0..=2.0).contains(&l.margin)
                    || !(0.0..1.0).contains(&l.weight)
            });
            if bad_lines {
                return Err(fail(
                    line_of("[context.lines]"),
                    "context.lines needs a window of 2..200 tokens, a stride of 1..window, min_similarity in -1..1, a margin in 0..2 and a weight in 0..1".into(),
                ));
            }
            if let Some(m) = &c.call_model {
                let in_range = |x: f32| (0.0..=1.0).contains(&x);
                if c.lines.is_none()
                    || !in_range(m.gate)
                    || m.lift.is_some() != m.lift_min_score.is_some()
                    || !(1..=1000).contains(&m.min_windows)
                    || !m
                        .veto_min_windows
                        .is_none_or(|v| (m.min_windows..=1000).contains(&v))
                    || !m
                        .lift
                        .into_iter()
                        .chain(m.lift_min_score)
                        .chain(m.live_confirm_below)
                        .all(in_range)
                    || !m
                        .alone_min_windows
                        .into_iter()
                        .chain(m.live_alone_min_windows)
                        .all(|a| m.lift.is_some() && (m.min_windows..=1000).contains(&a))
                {
                    return Err(fail(
                        line_of("[context.call_model]"),
                        "context.call_model needs [context.lines] (it reads its windows), a gate in 0..1, lift and lift_min_score in 0..1 (both or neither), live_confirm_below in 0..1, min_windows in 1..1000, veto_min_windows in min_windows..1000 and alone_min_windows and live_alone_min_windows (with a lift) in min_windows..1000".into(),
                    ));
                }
            }
            if c.sentences.is_empty()
                || c.sentences
                    .iter()
                    .chain(&c.honest_sentences)
                    .any(|s| s.trim().is_empty())
                || !(1..=50).contains(&c.window)
                || !(-1.0..=1.0).contains(&c.min_similarity)
                || !(0.0..=1.0).contains(&c.discount)
                || !(0.0..=2.0).contains(&c.honest_margin)
                || c.encoder.as_deref().is_some_and(|e| e.trim().is_empty())
            {
                return Err(fail(
                    line_of("[context]"),
                    "context needs sentences (none empty), a window of 1..50 words, min_similarity in -1..1, a discount in 0..1, an honest_margin in 0..2 and a non-empty encoder name if one is named".into(),
                ));
            }
        }
        if let Some(m) = raw.context.as_mut().and_then(|c| c.call_model.as_mut()) {
            let model = load_call_model(folder, &m.weights).map_err(|e| {
                fail(
                    line_of("[context.call_model]"),
                    format!("context.call_model: {e:#}"),
                )
            })?;
            m.model = Some(std::sync::Arc::new(model));
            if let Some(name) = m.fallback_weights.clone() {
                let fallback = load_call_model(folder, &name)
                    .and_then(|f| {
                        if f.pieces.is_some() {
                            anyhow::bail!("fallback {name:?} reads pieces of a second encoder too");
                        }
                        Ok(f)
                    })
                    .map_err(|e| {
                        fail(
                            line_of("[context.call_model]"),
                            format!("context.call_model: {e:#}"),
                        )
                    })?;
                m.fallback = Some(std::sync::Arc::new(fallback));
            }
        }
        let mut categories = Vec::new();
        let mut names = std::collections::HashSet::new();
        for c in raw.categories {
            if !names.insert(c.name.clone()) {
                return Err(fail(
                    line_of(&format!("\"{}\"", c.name)),
                    format!("category {:?} defined twice", c.name),
                ));
            }
            if !(-1.0..=1.0).contains(&c.weight) || c.weight == 0.0 {
                return Err(fail(
                    line_of(&c.name),
                    format!("category {}: weight must be in -1..1 and not 0", c.name),
                ));
            }
            if c.max_strength.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                return Err(fail(
                    line_of(&c.name),
                    format!("category {}: max_strength must be in 0..1", c.name),
                ));
            }
            if c.patterns.is_empty() {
                return Err(fail(
                    line_of(&c.name),
                    format!("category {} has no patterns", c.name),
                ));
            }
            let mut patterns = Vec::new();
            for p in c.patterns {
                let (source, weight) = match p {
                    PatternEntry::Plain(s) => (s, c.weight),
                    PatternEntry::Weighted { pattern, weight } => (pattern, weight),
                };
                if weight.abs() > 1.0 || weight == 0.0 || weight.signum() != c.weight.signum() {
                    return Err(fail(line_of(&source), format!("pattern {source:?}: weight {weight} must share the category's sign and be at most 1")));
                }
                let compiled = compile_pattern(&source, &raw.language, weight)
                    .map_err(|e| fail(line_of(&source), format!("pattern {source:?}: {e}")))?;
                patterns.push(compiled);
            }
            categories.push(Category {
                name: c.name,
                description: c.description,
                weight: c.weight,
                standalone: c.standalone,
                negatable: c.negatable,
                max_strength: c.max_strength.unwrap_or(1.0),
                patterns,
            });
        }
        Ok(Self {
            language: raw.language,
            max_gap: raw.max_gap,
            gaps_cross_commas: raw.gaps_cross_commas,
            levels: raw.levels,
            single_category_cap: raw.single_category_cap,
            addressee: raw.addressee,
            negation: raw.negation,
            reported: raw.reported,
            context: raw.context,
            categories,
            source: file.to_owned(),
        })
    }

    pub fn builtin(language: &str) -> Option<Self> {
        let (name, text) = match language {
            "en" => ("models/phrases/en.toml", BUILTIN_EN),
            "zh" => ("models/phrases/zh.toml", BUILTIN_ZH),
            _ => return None,
        };
        Some(Self::parse(name, text).expect("built-in packs are validated by tests"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_packs_load() {
        for lang in ["en", "zh"] {
            let p = PhrasePack::builtin(lang).unwrap();
            assert!(p.categories.len() >= 6, "{lang}");
        }
    }

    #[test]
    fn a_call_model_beside_a_pack_file_is_read_and_a_broken_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("en.toml");
        std::fs::write(&pack, BUILTIN_EN).unwrap();
        // Not beside it: the one shipped with the binary.
        let p = PhrasePack::load(&pack).unwrap();
        let model = p.context.unwrap().call_model.unwrap().model.unwrap();
        assert_eq!(model.encoder, "minilm");
        std::fs::write(dir.path().join("en_call_model.json"), "{\"format\": 1").unwrap();
        let err = PhrasePack::load(&pack).unwrap_err();
        let line = BUILTIN_EN
            .lines()
            .position(|l| l == "[context.call_model]")
            .unwrap()
            + 1;
        assert_eq!(err.line, line, "{err}");
        assert!(err.problem.contains("en_call_model.json"), "{err}");
    }

    #[test]
    fn a_veto_from_fewer_windows_than_the_model_reads_is_refused() {
        let bad = BUILTIN_EN.replacen("veto_min_windows = 7", "veto_min_windows = 2", 1);
        assert_ne!(bad, BUILTIN_EN);
        let err = PhrasePack::parse("en.toml", &bad).unwrap_err();
        assert!(err.problem.contains("veto_min_windows"), "{err}");
        let default = BUILTIN_EN.replacen("veto_min_windows = 7", "", 1);
        let p = PhrasePack::parse("en.toml", &default).unwrap();
        assert_eq!(p.context.unwrap().call_model.unwrap().veto_from(), 3);
    }

    #[test]
    fn mistakes_name_file_and_line() {
        let bad = BUILTIN_EN.replacen("\"gift (card|cards)\"", "\"gift (card|cards\"", 1);
        let err = PhrasePack::parse("en.toml", &bad).unwrap_err();
        let line = bad
            .lines()
            .position(|l| l.contains("gift (card|cards\""))
            .unwrap()
            + 1;
        assert_eq!(err.line, line, "{err}");
        assert!(
            err.to_string().starts_with(&format!("en.toml:{line}:")),
            "{err}"
        );

        let err = PhrasePack::parse("x.toml", "language = \"en\"\nmax_gap = 2\nlevels = 3\n")
            .unwrap_err();
        assert_eq!(err.line, 3, "{err}");

        let hostile = BUILTIN_EN.replacen("high = ", "high = -", 1);
        assert!(PhrasePack::parse("en.toml", &hostile)
            .unwrap_err()
            .problem
            .contains("levels"));

        let bad_context = BUILTIN_EN.replacen("min_similarity = ", "min_similarity = 4", 1);
        let err = PhrasePack::parse("en.toml", &bad_context).unwrap_err();
        let line = bad_context.lines().position(|l| l == "[context]").unwrap() + 1;
        assert_eq!(err.line, line, "{err}");
        assert!(err.problem.contains("min_similarity"), "{err}");

        // Negation words that normalise to nothing would negate everything or nothing.
        for (field, bad) in [
            ("ends_at = [", "ends_at = [\"，\", "),
            ("after = [", "after = [\"!!\", "),
            ("after_window = ", "after_window = 5"),
        ] {
            let hostile = BUILTIN_ZH.replacen(field, bad, 1);
            assert_ne!(hostile, BUILTIN_ZH, "{field}");
            let err = PhrasePack::parse("zh.toml", &hostile).unwrap_err();
            let line = hostile.lines().position(|l| l == "[negation]").unwrap() + 1;
            assert_eq!(err.line, line, "{err}");
            assert!(err.problem.contains("negation"), "{err}");
        }

        // The Mandarin context check: honest lines and the scam-line windows are checked too.
        for (section, field, bad) in [
            ("[context]", "honest_margin = ", "honest_margin = -"),
            (
                "[context]",
                "honest_sentences = [",
                "honest_sentences = [\" \", ",
            ),
            ("[context]", "encoder = \"e5-small\"", "encoder = \" \""),
            ("[context.lines]", "stride = ", "stride = 9"),
            ("[context.lines]", "weight = ", "weight = 1"),
            // A retelling's words that normalise to nothing, openers with no verdict to end
            // them, a window longer than a call's worth of reach, no sentence for a verdict.
            ("[reported]", "verdicts = [", "verdicts = [\"。\", "),
            ("[reported]", "verdicts = [", "verdicts = [] #"),
            ("[reported]", "window = 60", "window = 600"),
            ("[reported]", "sentences = 2", "sentences = 0"),
            // The call model: thresholds out of range, weights that are nowhere.
            ("[context.call_model]", "gate = ", "gate = 1"),
            // A lift needs the keyword score it starts from.
            ("[context.call_model]", "lift_min_score = 0.15\n", ""),
            (
                "[context.call_model]",
                "live_confirm_below = 0.8",
                "live_confirm_below = 1.5",
            ),
            // The model alone lifts from a length of at least min_windows, and only with a lift.
            (
                "[context.call_model]",
                "alone_min_windows = 10",
                "alone_min_windows = 1",
            ),
            (
                "[context.call_model]",
                "live_alone_min_windows = 40",
                "live_alone_min_windows = 4000",
            ),
            (
                "[context.call_model]",
                "lift = 0.96\nlift_min_score = 0.15\n",
                "",
            ),
            (
                "[context.call_model]",
                "weights = \"zh_call_model.json\"",
                "weights = \"missing.json\"",
            ),
        ] {
            let hostile = BUILTIN_ZH.replacen(field, bad, 1);
            assert_ne!(hostile, BUILTIN_ZH, "{field}");
            let err = PhrasePack::parse("zh.toml", &hostile).unwrap_err();
            let line = hostile.lines().position(|l| l == section).unwrap() + 1;
            assert_eq!(err.line, line, "{field}: {err}");
            assert!(
                err.problem.contains(&section[1..section.len() - 1]),
                "{err}"
            );
        }
    }
}
