//! Call-level scoring: evidence from the phrase packs accumulates per category, categories
//! combine by noisy-OR, and one kind of cue alone stays below the alert line, because honest
//! banks, pharmacies and police say "account", "payment" and "officer" too.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::matcher::{find_from, Closeness, Found, Fuzziness, Gaps, Pattern};
use super::normalize::{tokenize, Token};
use super::pack::{CallModelSettings, PhrasePack};
use super::script_context::{ContextCheck, WindowReading};

pub use crate::call::{Evidence, Risk};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub risk: Risk,
    pub score: f32,
    pub categories: Vec<String>,
    pub evidence: Vec<Evidence>,
    /// The call model's probability that the transcript follows a scam script, when it ran
    /// ([`crate::detect::call_model`]; only for transcripts with keyword evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_model: Option<f32>,
    /// Where the call model's lift flagged the transcript, what the lift stood on; the engine
    /// asks live readings for more than the summary ([`CallModelSettings::lifts_live`]).
    #[serde(skip)]
    pub lift: Option<Lift>,
}

/// What a call-model lift ([`CallModelSettings::may_lift`]) stood on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lift {
    /// Windows the model read (the pack's `[context.lines]` windows over the transcript).
    pub windows: usize,
    /// The keyword score before the lift, 0..1.
    pub keyword_score: f32,
}

/// Fuzzy matches count for less than exact ones: they are likelier to be coincidences.
const FUZZY_DISCOUNT: f32 = 0.8;
/// Chinese gaps are counted in characters, roughly 2-3 per English word.
const HAN_GAP_FACTOR: usize = 3;

pub struct Classifier {
    packs: BTreeMap<String, PhrasePack>,
    pub fuzziness: Fuzziness,
    /// Sentence-embedding check of the words around each match (packs with `[context]`).
    pub context_check: Option<Arc<ContextCheck>>,
    /// Whether packs' call models run (they need the context check's encoder). Off by
    /// default: trained on written calls, they veto scams as the recogniser garbles them
    /// (docs/measured.md, "A model of the whole call").
    pub call_model: bool,
}

impl Classifier {
    pub fn builtin() -> Self {
        Self::with_packs(
            ["en", "zh"]
                .iter()
                .filter_map(|l| PhrasePack::builtin(l))
                .collect(),
        )
    }

    /// A classifier over the given packs, one per language (at least one).
    pub fn with_packs(packs: Vec<PhrasePack>) -> Self {
        assert!(
            !packs.is_empty(),
            "a classifier needs at least one phrase pack"
        );
        Self {
            packs: packs.into_iter().map(|p| (p.language.clone(), p)).collect(),
            fuzziness: Fuzziness::default(),
            context_check: None,
            call_model: false,
        }
    }

    pub fn languages(&self) -> Vec<&str> {
        self.packs.keys().map(String::as_str).collect()
    }

    pub fn pack(&self, language: &str) -> Option<&PhrasePack> {
        self.packs.get(language)
    }

    /// Turns the context check on, with every encoder the packs name loaded now (by default
    /// each loads when its pack is first used).
    ///
    /// Errors: an encoder a pack names cannot be fetched or loaded.
    pub fn set_context_check_loaded(&mut self, check: Arc<ContextCheck>) -> anyhow::Result<()> {
        check.prepare(self.packs.values())?;
        self.context_check = Some(check);
        Ok(())
    }

    /// Loads now every sentence encoder that the packs of `languages` read: the context
    /// check's, and the second encoder of a call model that reads one (EmbeddingGemma for
    /// Mandarin). Otherwise each loads when its pack first needs it, and a live server's first
    /// Mandarin call waits for it: 3-10 s for EmbeddingGemma on 2 cores, or its 1.15 GB
    /// fetch on a machine that has none. Does nothing without the context check.
    ///
    /// Returns each encoder that could not be loaded, with why: its readers are then off (the
    /// context check of its packs) or fall back (a call model to its `fallback_weights`), as
    /// they would on a first use that fails, and it is not tried again.
    pub fn prepare(&self, languages: &[&str]) -> Prepared {
        let mut done = Prepared::default();
        let Some(check) = &self.context_check else {
            return done;
        };
        for pack in self.packs.values() {
            if !languages.contains(&pack.language.as_str()) {
                continue;
            }
            let Some(ctx) = &pack.context else { continue };
            let encoder = check.encoder_name(pack).to_owned();
            // The second encoder only where the call model will run: on the encoder it was
            // trained on, once that has loaded.
            let pieces = ctx
                .call_model
                .as_ref()
                .filter(|_| self.call_model)
                .and_then(|s| s.model.as_ref())
                .filter(|m| m.encoder == encoder)
                .and_then(|m| m.pieces.as_ref())
                .map(|p| p.encoder.clone());
            let own = encoder.clone();
            for name in std::iter::once(encoder).chain(pieces) {
                // The second encoder is read only beside the pack's own.
                if done.failed.iter().any(|(n, _)| *n == own) {
                    break;
                }
                let seen = |n: &String| *n == name;
                if done.loaded.iter().any(|(n, _)| seen(n))
                    || done.failed.iter().any(|(n, _)| seen(n))
                {
                    continue;
                }
                let t0 = std::time::Instant::now();
                match check.load_named(&name, &pack.source) {
                    Ok(()) => done.loaded.push((name, t0.elapsed().as_secs_f64())),
                    Err(why) => done.failed.push((name, why)),
                }
            }
        }
        done
    }

    /// Chinese when a good share of the letters are Han characters, else English
    /// ([`crate::asr::written_language`]).
    pub fn guess_language(text: &str) -> &'static str {
        crate::asr::written_language(text)
    }

    /// The pack for a transcript: the recogniser's language where a pack exists for it and
    /// the text is written in it, else the language the text looks like, else English.
    pub fn pack_for_transcript(&self, detected: Option<&str>, text: &str) -> &PhrasePack {
        let written = Self::guess_language(text);
        detected
            .filter(|l| {
                text.trim().is_empty() || *l == written || !self.packs.contains_key(written)
            })
            .and_then(|l| self.packs.get(l))
            .or_else(|| self.packs.get(written))
            .or_else(|| self.packs.get("en"))
            .or_else(|| self.packs.values().next())
            .expect("a classifier has at least one pack")
    }

    pub fn classify(&self, text: &str, language: Option<&str>) -> Result<Verdict, String> {
        let lang = language.unwrap_or_else(|| Self::guess_language(text));
        let pack = self.packs.get(lang).ok_or_else(|| {
            format!(
                "no phrase pack for language {lang:?} (have: {})",
                self.languages().join(", ")
            )
        })?;
        Ok(self.classify_with(pack, text))
    }

    pub fn classify_with(&self, pack: &PhrasePack, text: &str) -> Verdict {
        let tokens = tokenize(text);
        let gap = Gaps {
            max: if pack.language == "zh" {
                pack.max_gap * HAN_GAP_FACTOR
            } else {
                pack.max_gap
            },
            cross_commas: pack.gaps_cross_commas,
        };
        let char_of = |byte: usize| char_index(text, byte);
        let mut evidence = Vec::new();
        let mut strength: BTreeMap<&str, f32> = BTreeMap::new();
        let mut negative = 0f32;
        let mut standalone_hit = false;
        let negated = |first: usize, end: usize| {
            let Some(n) = &pack.negation else {
                return false;
            };
            let starts_with = |at: usize, words: &[String]| starts_with(&tokens, at, words);
            let scope_ends_within = |from: usize, to: usize| {
                (from..to).any(|k| n.ends_at_tokens.iter().any(|e| starts_with(k, e)))
            };
            // A negation that starts before the match and runs into it negates it too: "您不
            // 需要支付任何费用" read by "需要 支付" (a courier's call, heard unseen_t).
            let before = (first.saturating_sub(n.window)..first).any(|at| {
                n.tokens.iter().any(|neg| {
                    let after = at + neg.len();
                    let runs_into_match = after > first;
                    after <= end
                        && starts_with(at, neg)
                        && !n.except_tokens.iter().any(|e| starts_with(after, e))
                        && (runs_into_match
                            || (same_clause(
                                text,
                                &tokens[after - 1],
                                &tokens[first],
                                &n.clause_marks,
                            ) && !scope_ends_within(after, first)))
                })
            });
            // Inside a match's gap: "验证码千万别告诉任何人", "验证码不要告诉别人" read by
            // "验证码 告诉"; as before a match, a negated feeling ("验证码您别担心发给我")
            // leaves the request standing.
            let inside = (first + 1..end).any(|at| {
                n.tokens.iter().chain(&n.after_tokens).any(|neg| {
                    let after = at + neg.len();
                    after < end
                        && starts_with(at, neg)
                        && !n.except_tokens.iter().any(|e| starts_with(after, e))
                })
            });
            let after = (end..(end + n.after_window).min(tokens.len())).any(|at| {
                n.after_tokens.iter().any(|neg| {
                    starts_with(at, neg)
                        && same_clause(text, &tokens[end - 1], &tokens[at], &n.clause_marks)
                        && !scope_ends_within(end, at)
                })
            });
            before || inside || after
        };
        #[derive(Clone, Copy)]
        struct Hit<'p> {
            category: usize,
            pattern: &'p str,
            first: usize,
            end: usize,
            weight: f32,
        }
        let retold = retellings(pack, &tokens);
        let read_out = messages_read_out(pack, &tokens);
        // How far a negated match's list reaches: the negation's own window.
        let list_reach = pack.negation.as_ref().map_or(0, |n| n.window);
        let matches_of = |p| matches_of(&tokens, p, gap, self.fuzziness);
        // The matches of every negatable pattern, found once (the loop below reads them
        // again), and where the negated ones end: the items of one negated list are often read
        // by different patterns ("will never ask you to withdraw cash, move money to a safe
        // account, or buy gift cards"), so a match that starts within the negation's window
        // after one, in the same clause, is on its list too.
        let negatable_matches: Vec<Vec<Vec<Found>>> = pack
            .categories
            .iter()
            .map(|cat| match cat.negatable && list_reach > 0 {
                true => cat
                    .patterns
                    .iter()
                    .map(|p| matches_of(p).collect())
                    .collect(),
                false => Vec::new(),
            })
            .collect();
        let list_ends: Vec<usize> = negatable_matches
            .iter()
            .flatten()
            .flatten()
            .filter(|f| negated(f.first, f.end))
            .map(|f| f.end)
            .collect();
        let on_a_negated_list = |first: usize| {
            let marks = pack
                .negation
                .as_ref()
                .map_or("", |n| n.clause_marks.as_str());
            list_ends.iter().any(|&e| {
                e <= first
                    && first < e + list_reach
                    && same_clause(text, &tokens[e - 1], &tokens[first], marks)
            })
        };
        let mut hits = Vec::new();
        for (ci, cat) in pack.categories.iter().enumerate() {
            for (pi, p) in cat.patterns.iter().enumerate() {
                // The first match that is neither negated nor inside a retelling: a warning
                // about the code may come before the request for it. A match soon after a
                // negated one goes on its list ("never ask for your PIN or your online
                // banking password").
                let mut list_until = 0;
                let mut candidates: Box<dyn Iterator<Item = Found>> =
                    match negatable_matches[ci].get(pi) {
                        Some(found) => Box::new(found.iter().cloned()),
                        None => Box::new(matches_of(p)),
                    };
                let found = candidates.find(|f| {
                    let negated_here = cat.negatable
                        && (f.first < list_until
                            || negated(f.first, f.end)
                            || on_a_negated_list(f.first));
                    if negated_here {
                        list_until = f.end + list_reach;
                    }
                    let retold_here = cat.weight > 0.0 && within(&retold, f.first, f.end);
                    let read_out_here = cat.weight < 0.0 && within(&read_out, f.first, f.end);
                    !negated_here && !retold_here && !read_out_here
                });
                let Some(f) = found else {
                    continue;
                };
                let mut w = if f.closeness == Closeness::Exact {
                    p.weight
                } else {
                    p.weight * FUZZY_DISCOUNT
                };
                // Standalone categories are acts only a scam asks for ("buy gift cards"): they need
                // no "you" to count.
                if let Some(a) = pack
                    .addressee
                    .as_ref()
                    .filter(|_| cat.weight > 0.0 && !cat.standalone)
                {
                    let near = &tokens
                        [f.first.saturating_sub(a.window)..(f.end + a.window).min(tokens.len())];
                    if !near.iter().any(|t| a.words.contains(&t.text)) {
                        w *= a.discount;
                    }
                }
                hits.push(Hit {
                    category: ci,
                    pattern: &p.source,
                    first: f.first,
                    end: f.end,
                    weight: w,
                });
            }
        }
        // One stretch of words is one cue: "social security number" names an agency and asks for
        // a credential, and "press 1" is read by "press (1|9)" and "press (one|nine)" alike, but
        // said once it must count once. The stronger reading stays. Within one category a
        // reading inside another's words is the same cue too ("售后客服" inside "京东的售后客服",
        // "验证码" inside "验证码告诉我"). Done before the context check, which would give both
        // readings the same window and so the same discount.
        // First, a scam cue inside an honest caller's words is that caller's: "不要把密码告诉任何
        // 人" is a bank's warning, not the secrecy of "不要告诉" nor a request for the password
        // (a customer's call to her bank, heard unseen_l). Done before the one-cue filter, so
        // that a stronger cue dropped with the honest words cannot then suppress a weaker
        // reading that reaches outside them.
        let hits: Vec<Hit> = hits
            .iter()
            .filter(|a| {
                a.weight < 0.0
                    || !hits
                        .iter()
                        .any(|b| b.weight < 0.0 && b.first <= a.first && a.end <= b.end)
            })
            .copied()
            .collect();
        let mut hits: Vec<Hit> = hits
            .iter()
            .enumerate()
            .filter(|&(i, a)| {
                let said_by_stronger = a.weight > 0.0
                    && hits.iter().enumerate().any(|(j, b)| {
                        let same = (b.first, b.end) == (a.first, a.end);
                        let nested = b.category == a.category
                            && ((b.first <= a.first && a.end <= b.end)
                                || (a.first <= b.first && b.end <= a.end));
                        // At equal weight the longer reading stays, or the first of two alike.
                        let tie_won_by_b = if same {
                            j < i
                        } else {
                            b.end - b.first > a.end - a.first
                        };
                        j != i
                            && (same || nested)
                            && (b.weight > a.weight || (b.weight == a.weight && tie_won_by_b))
                    });
                !said_by_stronger
            })
            .map(|(_, &h)| h)
            .collect();
        let mut readings = vec![None; hits.len()];
        if let (Some(check), Some(ctx)) = (&self.context_check, &pack.context) {
            let scam_cues: Vec<usize> = (0..hits.len()).filter(|&i| hits[i].weight > 0.0).collect();
            let windows: Vec<String> = scam_cues
                .iter()
                .map(|&i| {
                    let from = hits[i].first.saturating_sub(ctx.window);
                    let to = (hits[i].end + ctx.window).min(tokens.len());
                    window_text(text, &tokens[from..to])
                })
                .collect();
            match check.read_windows(pack, &windows) {
                Ok(Some(read)) => {
                    for (&i, r) in scam_cues.iter().zip(read) {
                        readings[i] = Some(r);
                        let unlike_a_scam = r.scam < ctx.min_similarity;
                        let like_an_honest_call =
                            r.honest.is_some_and(|h| h >= r.scam + ctx.honest_margin);
                        if unlike_a_scam || like_an_honest_call {
                            hits[i].weight *= ctx.discount;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("context check skipped: {e:#}"),
            }
        }
        let mut miss_by_category = vec![1f32; pack.categories.len()];
        for (hit, reading) in hits.iter().zip(readings) {
            let (start, end) = (tokens[hit.first].span.start, tokens[hit.end - 1].span.end);
            evidence.push(Evidence {
                category: pack.categories[hit.category].name.clone(),
                pattern: hit.pattern.to_owned(),
                matched_text: text[start..end].to_owned(),
                start_char: char_of(start),
                end_char: char_of(end),
                weight: rounded(hit.weight),
                context_similarity: reading.map(|r| rounded(r.scam)),
                honest_similarity: reading.and_then(|r| r.honest).map(rounded),
                spoken: None,
            });
            miss_by_category[hit.category] *= 1.0 - hit.weight.abs();
        }
        for (cat, miss_all) in pack.categories.iter().zip(miss_by_category) {
            let s = (1.0 - miss_all).min(cat.max_strength);
            if s <= 0.0 {
                continue;
            }
            if cat.weight < 0.0 {
                negative = 1.0 - (1.0 - negative) * (1.0 - s);
            } else {
                strength.insert(&cat.name, s);
                standalone_hit |= cat.standalone;
            }
        }
        let score_of = |strength: &BTreeMap<&str, f32>| {
            let mut score = 1.0 - strength.values().map(|s| 1.0 - s).product::<f32>();
            if strength.len() == 1 && !standalone_hit {
                score = score.min(pack.single_category_cap);
            }
            score * (1.0 - negative)
        };
        let mut score = score_of(&strength);
        // The scam-line check reads the whole transcript (about 1 s of CPU per 400 characters
        // of Mandarin with e5-small), and it can only add to a call that has other evidence and
        // is not yet high: a call with none stays under the single-category cap, and a high one
        // cannot rise. Others are not read.
        if strength.values().any(|&s| s > 0.0) && score < pack.levels.high {
            if let Some((e, s)) = self.scam_line(pack, text, &tokens, &retold) {
                evidence.push(e);
                strength.insert(SCAM_LINE, s);
                score = score_of(&strength);
            }
        }
        let (mut call_model, mut lifted) = (None, None);
        if let Some((m, p, lift, windows)) = self.call_model_reading(pack, text, &tokens, score) {
            call_model = Some(rounded(p));
            if score >= pack.levels.suspected && p < m.gate && windows >= m.veto_from() {
                // The keywords heard the topic of a scam; the call reads as an honest one.
                score = p;
            } else if score < pack.levels.suspected
                && m.may_lift(score, windows)
                && m.lift.is_some_and(|l| p >= l)
            {
                if let Some(e) = lift {
                    evidence.push(e);
                    strength.insert(CALL_MODEL, p);
                    lifted = Some(Lift {
                        windows,
                        keyword_score: score,
                    });
                    score = pack.levels.suspected;
                }
            }
        }
        let risk = if score >= pack.levels.high {
            Risk::High
        } else if score >= pack.levels.suspected {
            Risk::Suspected
        } else {
            Risk::None
        };
        evidence.sort_by_key(|e| e.start_char);
        Verdict {
            risk,
            score: rounded(score),
            categories: strength.keys().map(|s| s.to_string()).collect(),
            evidence,
            call_model,
            lift: lifted,
        }
    }
}

/// What [`Classifier::prepare`] loaded: (encoder name, seconds it took, which is near 0 where
/// it was loaded already), and what it could not: (encoder name, why).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Prepared {
    pub loaded: Vec<(String, f64)>,
    pub failed: Vec<(String, String)>,
}

/// The category of evidence from [`crate::detect::pack::LineCheck`].
pub const SCAM_LINE: &str = "scam_line";
/// The category of evidence from [`crate::detect::call_model`] (a call it lifted).
pub const CALL_MODEL: &str = "call_model";

impl Classifier {
    /// The pack's call-model settings with the model's probability for this transcript, the
    /// window it reads as most like a scam as evidence (weighing the probability) and the
    /// number of windows read, when the pack has a model, the check's encoder is the one it
    /// was trained on, the transcript has the model's `min_windows`, and the keyword score is
    /// high enough for the model to move the verdict (it only vetoes flagged calls and lifts
    /// ones with cues).
    fn call_model_reading<'p>(
        &self,
        pack: &'p PhrasePack,
        text: &str,
        tokens: &[Token],
        score: f32,
    ) -> Option<(&'p CallModelSettings, f32, Option<Evidence>, usize)> {
        let ctx = pack.context.as_ref()?;
        let (settings, lines) = (ctx.call_model.as_ref()?, ctx.lines.as_ref()?);
        let model = settings.model.as_ref()?;
        let check = self.context_check.as_ref().filter(|_| self.call_model)?;
        // The reading can move a flagged call (veto) or one the pack may lift.
        let may_move =
            |windows: usize| score >= pack.levels.suspected || settings.may_lift(score, windows);
        if !may_move(usize::MAX) || tokens.is_empty() {
            return None;
        }
        if check.encoder_name(pack) != model.encoder {
            tracing::warn!(
                "call model of {} skipped: trained on {}, the encoder is {}",
                pack.source,
                model.encoder,
                check.encoder_name(pack)
            );
            return None;
        }
        let spans = line_spans(tokens.len(), lines.window, lines.stride);
        if spans.len() < settings.min_windows || !may_move(spans.len()) {
            return None;
        }
        let vectors = match check.window_vectors(pack, &windows_of(text, tokens, &spans)) {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("call model skipped: {e:#}");
                return None;
            }
        };
        // The second encoder's pieces (EmbeddingGemma), when the model reads them; without
        // that encoder, the fallback model reads the windows alone.
        let (model, pieces) = match &model.pieces {
            None => (model, Vec::new()),
            Some(pc) => match check.vectors_by(&pc.encoder, &pack.source, &pc.cut(text)) {
                Ok(Some(v)) => (model, v),
                failed => {
                    if let Err(e) = failed {
                        tracing::warn!(
                            "{}: {e:#}; the call model reads {} alone",
                            pack.source,
                            model.encoder
                        );
                    }
                    (settings.fallback.as_ref()?, Vec::new())
                }
            },
        };
        let p = model.probability(&vectors, &pieces, text, score)?;
        let evidence = model.most_scam_like(&vectors).map(|i| {
            let (a, b) = spans[i];
            let (start, end) = (tokens[a].span.start, tokens[b - 1].span.end);
            Evidence {
                category: CALL_MODEL.to_owned(),
                pattern: CALL_MODEL.to_owned(),
                matched_text: text[start..end].to_owned(),
                start_char: char_index(text, start),
                end_char: char_index(text, end),
                weight: rounded(p),
                context_similarity: None,
                honest_similarity: None,
                spoken: None,
            }
        });
        Some((settings, p, evidence, spans.len()))
    }

    /// The transcript's windows as the scam-line check reads them (`[context.lines]`: its
    /// window and stride, in tokens), in order; empty when the pack has no line check.
    pub fn line_windows(&self, pack: &PhrasePack, text: &str) -> Vec<String> {
        let Some(lines) = pack.context.as_ref().and_then(|c| c.lines.as_ref()) else {
            return Vec::new();
        };
        let tokens = tokenize(text);
        windows_of(
            text,
            &tokens,
            &line_spans(tokens.len(), lines.window, lines.stride),
        )
    }

    /// The window of the transcript that reads most like one of the pack's scam lines, when
    /// one qualifies ([`crate::detect::pack::LineCheck`]), as evidence quoting that line, with
    /// the category's strength.
    fn scam_line(
        &self,
        pack: &PhrasePack,
        text: &str,
        tokens: &[Token],
        retold: &[(usize, usize)],
    ) -> Option<(Evidence, f32)> {
        let (check, ctx) = (self.context_check.as_ref()?, pack.context.as_ref()?);
        let lines = ctx.lines.as_ref()?;
        if tokens.is_empty() {
            return None;
        }
        // A window mostly inside a retold script is the warning, not the script.
        let spans: Vec<(usize, usize)> = line_spans(tokens.len(), lines.window, lines.stride)
            .into_iter()
            .filter(|&(a, b)| (a..b).filter(|&t| within(retold, t, t + 1)).count() * 2 <= b - a)
            .collect();
        if spans.is_empty() {
            return None;
        }
        let windows = windows_of(text, tokens, &spans);
        let readings = match check.read_windows(pack, &windows) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("scam-line check skipped: {e:#}");
                return None;
            }
        };
        let lead = |r: &WindowReading| r.scam - r.honest.unwrap_or(-1.0);
        let (best, r) = readings
            .iter()
            .enumerate()
            .filter(|(_, r)| r.scam >= lines.min_similarity && lead(r) >= lines.margin)
            .max_by(|a, b| lead(a.1).total_cmp(&lead(b.1)))?;
        let (a, b) = spans[best];
        let (start, end) = (tokens[a].span.start, tokens[b - 1].span.end);
        Some((
            Evidence {
                category: SCAM_LINE.to_owned(),
                pattern: ctx.sentences[r.nearest].clone(),
                matched_text: text[start..end].to_owned(),
                start_char: char_index(text, start),
                end_char: char_index(text, end),
                weight: lines.weight,
                context_similarity: Some(rounded(r.scam)),
                honest_similarity: r.honest.map(rounded),
                spoken: None,
            },
            lines.weight,
        ))
    }
}

/// The windows of `window` tokens every `stride` over `n` tokens (the last one ends at `n`),
/// as `(first, end)`; none for no tokens.
fn line_spans(n: usize, window: usize, stride: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut first = 0;
    while first < n {
        let end = (first + window).min(n);
        spans.push((first, end));
        if end == n {
            break;
        }
        first += stride;
    }
    spans
}

/// The words of each `(first, end)` span of tokens, as the sentence encoder reads them.
fn windows_of(text: &str, tokens: &[Token], spans: &[(usize, usize)]) -> Vec<String> {
    spans
        .iter()
        .map(|&(a, b)| window_text(text, &tokens[a..b]))
        .collect()
}

/// Every match of `pattern` in `tokens`, in order, each starting after the previous one ends.
fn matches_of<'a>(
    tokens: &'a [Token],
    pattern: &'a Pattern,
    gaps: Gaps,
    fz: Fuzziness,
) -> impl Iterator<Item = Found> + 'a {
    std::iter::successors(find_from(tokens, pattern, gaps, fz, 0), move |f| {
        find_from(tokens, pattern, gaps, fz, f.end)
    })
}

/// Whether `words` (normalised tokens) start at token `at`.
fn starts_with(tokens: &[Token], at: usize, words: &[String]) -> bool {
    tokens.len() >= at + words.len()
        && tokens[at..at + words.len()]
            .iter()
            .zip(words)
            .all(|(t, w)| t.text == *w)
}

/// The token ranges `[first, end)` of the transcript that retell a scam in order to warn
/// against it ([`crate::detect::pack::Reported`]): for each verdict not denied, from the
/// opener nearest before it (within the window, at most `sentences` sentences earlier) to the
/// verdict's end; from a narrator to the end of its sentence, within the window.
fn retellings(pack: &PhrasePack, tokens: &[Token]) -> Vec<(usize, usize)> {
    let Some(r) = &pack.reported else {
        return Vec::new();
    };
    let any_at = |at: usize, list: &[Vec<String>]| {
        list.iter()
            .filter(|w| starts_with(tokens, at, w))
            .map(Vec::len)
            .max()
    };
    let denied = |at: usize| {
        r.denial_tokens
            .iter()
            .any(|d| at >= d.len() && starts_with(tokens, at - d.len(), d))
    };
    let mut spans = Vec::new();
    for at in 0..tokens.len() {
        if let Some(len) = any_at(at, &r.verdict_tokens).filter(|_| !denied(at)) {
            let end = at + len;
            let earliest = end.saturating_sub(r.window);
            let opener = (earliest..at).rev().find(|&o| {
                any_at(o, &r.opener_tokens).is_some()
                    && tokens[o].sentence + r.sentences >= tokens[at].sentence
            });
            if let Some(open) = opener {
                spans.push((open, end));
            }
        }
        if any_at(at, &r.narrator_tokens).is_some() {
            let limit = (at + r.window).min(tokens.len());
            let end = (at..limit)
                .find(|&t| tokens[t].sentence != tokens[at].sentence)
                .unwrap_or(limit);
            spans.push((at, end));
        }
    }
    spans
}

/// The token ranges `[first, end)` that read a message aloud ([`crate::detect::pack::Reported`]
/// `quoters`): from each quoter to the end of its sentence, within the window.
fn messages_read_out(pack: &PhrasePack, tokens: &[Token]) -> Vec<(usize, usize)> {
    let Some(r) = &pack.reported else {
        return Vec::new();
    };
    (0..tokens.len())
        .filter(|&at| r.quoter_tokens.iter().any(|q| starts_with(tokens, at, q)))
        .map(|at| {
            let limit = (at + r.window).min(tokens.len());
            let end = (at..limit)
                .find(|&t| tokens[t].sentence != tokens[at].sentence)
                .unwrap_or(limit);
            (at, end)
        })
        .collect()
}

/// Whether tokens `[first, end)` lie inside one of `spans`.
fn within(spans: &[(usize, usize)], first: usize, end: usize) -> bool {
    spans.iter().any(|&(a, b)| a <= first && end <= b)
}

/// Scores, weights and similarities are reported to three decimals.
fn rounded(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}

/// The character (not byte) offset of a byte offset in `text`.
fn char_index(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

/// The words of a run of tokens (non-empty) as the sentence encoder reads them: in simplified
/// characters, as the packs' lines are written (e5 puts 轉到 and 转到 apart, and telephone
/// transcripts are half traditional).
fn window_text(text: &str, run: &[Token]) -> String {
    text[run[0].span.start..run[run.len() - 1].span.end]
        .chars()
        .map(crate::asr::simplified)
        .collect()
}

/// Whether nothing between two tokens ends a clause: the same sentence and none of `marks` in
/// the text between them. A negation word governs the verb phrase after it up to the end of its
/// clause.
fn same_clause(text: &str, from: &Token, to: &Token, marks: &str) -> bool {
    from.sentence == to.sentence
        && !text
            .get(from.span.end..to.span.start)
            .unwrap_or("")
            .chars()
            .any(|c| marks.contains(c))
}
