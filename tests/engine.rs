//! The streaming engine's mechanics with a scripted recogniser (no model weights, real speech
//! audio for voice activity): calls heard in order, one worker per call at a time; time is
//! audio time across gaps; a stuck sink holds up neither the recognisers nor another sink;
//! overload drops are counted; bad ingress is refused with a reason while other calls go on.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{fixture_speech, Hearing, ScriptedRecogniser};
use vishguard::call::{AudioChunk, Call, CallId, CallSummary, Event, Party};
use vishguard::detect::Classifier;
use vishguard::engine::{Engine, EngineConfig, SinkSpec};
use vishguard::sinks::memory::Collector;
use vishguard::sinks::{Overflow, QueueConfig, Sink};
use vishguard::sources::{Ingest, IngestError, Ingress};

const SCAM_LINE: &str = "This is the fraud department. Your account is compromised, \
                         move your savings to a safe account and buy gift cards today.";

fn call(id: &str, parties: usize, rate: u32) -> Call {
    Call {
        id: id.into(),
        parties: (0..parties)
            .map(|p| Party {
                label: format!("party {p}"),
                sample_rate: rate,
            })
            .collect(),
        metadata: Default::default(),
    }
}

/// Sends samples at `rate` Hz as 20 ms chunks starting at `from_s` seconds of audio time.
fn play(
    ingest: &dyn Ingest,
    id: &CallId,
    party: usize,
    (samples, rate): (&[f32], u32),
    from_s: f64,
    wait: bool,
) {
    let step = rate as usize / 50;
    for (i, chunk) in samples.chunks(step).enumerate() {
        let item = Ingress::Audio(AudioChunk {
            call: id.clone(),
            party,
            offset_s: from_s + i as f64 * 0.02,
            samples: chunk.to_vec(),
        });
        let sent = if wait {
            ingest.send_waiting(item)
        } else {
            ingest.send(item)
        };
        assert!(
            matches!(sent, Ok(()) | Err(IngestError::QueueFull(_))),
            "{sent:?}"
        );
    }
}

fn engine(
    recogniser: Arc<ScriptedRecogniser>,
    config: EngineConfig,
    sinks: Vec<SinkSpec>,
) -> Engine {
    Engine::start(recogniser, Arc::new(Classifier::builtin()), config, sinks).unwrap()
}

/// The pharmacy clip at 8 kHz (every other sample: the clip has little above 4 kHz).
fn narrowband() -> Vec<f32> {
    fixture_speech("asr/pharmacy.flac")
        .iter()
        .step_by(2)
        .copied()
        .collect()
}

/// An engine with the built-in packs whose every event is kept.
fn collected(recogniser: Arc<ScriptedRecogniser>, config: EngineConfig) -> (Engine, Collector) {
    collected_by(recogniser, Classifier::builtin(), config)
}

/// An engine reading with `classifier` whose every event is kept.
fn collected_by(
    recogniser: Arc<ScriptedRecogniser>,
    classifier: Classifier,
    config: EngineConfig,
) -> (Engine, Collector) {
    let events = Collector::new();
    let sinks = vec![SinkSpec::new(events.clone(), QueueConfig::default())];
    let e = Engine::start(recogniser, Arc::new(classifier), config, sinks).unwrap();
    (e, events)
}

/// Where each transcript's words start (seconds of audio time), in the order sent.
fn transcript_starts(events: &Collector) -> Vec<f64> {
    events
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Transcript(u) => Some(u.start_s),
            _ => None,
        })
        .collect()
}

fn summaries(events: &[Event]) -> Vec<&CallSummary> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CallEnded(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn a_gap_in_the_audio_stays_a_gap_in_the_times() {
    let recogniser = ScriptedRecogniser::new(Duration::ZERO, |_| Some("hello there".into()));
    let config = EngineConfig {
        partials: false,
        ..Default::default()
    };
    let (e, events) = collected(recogniser, config);
    let ingest = e.ingest();
    // 8 kHz, as a telephone call arrives: the front end resamples and keeps the times.
    let narrow = narrowband();
    let len_s = narrow.len() as f64 / 8_000.0;
    let id = CallId::new("gappy");
    ingest.send(Ingress::Open(call("gappy", 1, 8_000))).unwrap();
    play(ingest.as_ref(), &id, 0, (&narrow, 8_000), 0.0, true);
    // Five seconds never arrive (lost on the network, or dropped under load).
    let resume_s = len_s + 5.0;
    play(ingest.as_ref(), &id, 0, (&narrow, 8_000), resume_s, true);
    ingest.send(Ingress::Close(id)).unwrap();
    e.shutdown();
    let starts = transcript_starts(&events);
    let after: Vec<f64> = starts.iter().copied().filter(|&s| s > len_s).collect();
    assert!(!after.is_empty(), "{starts:?}");
    // The first words after the gap start where they were spoken (less the 0.3 s pre-roll),
    // not five seconds early.
    assert!(
        after[0] >= resume_s - 0.35,
        "{starts:?} (resumed at {resume_s})"
    );
    assert!(after[0] <= resume_s + 2.0, "{starts:?}");
}

#[test]
fn speech_cut_at_the_maximum_is_heard_again_before_the_words_that_follow_it() {
    // Each answer is a new word, so a prompt shows which answers it holds.
    let n = std::sync::atomic::AtomicUsize::new(0);
    let recogniser = ScriptedRecogniser::new(Duration::ZERO, move |_| {
        Some(format!("word{}", n.fetch_add(1, Ordering::SeqCst)))
    });
    // Cuts at 1.5 s fall inside the clip's sentences; its pauses still end some utterances.
    let config = EngineConfig {
        partials: false,
        reviews: false,
        utterances: vishguard::audio::utterance::UtteranceConfig {
            max_utterance_s: 1.5,
            ..Default::default()
        },
        ..Default::default()
    };
    let (e, events) = collected(recogniser.clone(), config.clone());
    let ingest = e.ingest();
    let id = CallId::new("cut");
    ingest.send(Ingress::Open(call("cut", 1, 16_000))).unwrap();
    // The clip twice, a second of silence between: the first utterance after it follows a
    // pause.
    let clip = fixture_speech("asr/pharmacy.flac");
    let mut speech = clip.clone();
    speech.extend(vec![0.0; 16_000]);
    speech.extend(&clip);
    play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
    ingest.send(Ingress::Close(id)).unwrap();
    e.shutdown();
    let heard = recogniser.hearings();
    let with_context: Vec<usize> = (0..heard.len())
        .filter(|&i| heard[i].context_s > 0.0)
        .collect();
    assert!(!with_context.is_empty(), "{heard:?}");
    assert!(heard[0].context_s == 0.0);
    assert!(
        with_context.len() < heard.len() - 1,
        "an utterance after a pause is heard alone: {heard:?}"
    );
    for &i in &with_context {
        let (before, now) = (&heard[i - 1], &heard[i]);
        // The whole previous utterance (1.5 s, under the 3 s kept), then this one's own audio.
        let previous_own = before.seconds - before.context_s;
        assert!(
            (now.context_s - previous_own).abs() < 1e-6,
            "{before:?} then {now:?}"
        );
        assert!(now.seconds > now.context_s);
        // The prompt is what was said before the audio heard again, not its words.
        let prompt = now.prompt.as_deref().unwrap_or("");
        let said = |k: usize| prompt.split_whitespace().any(|w| w == format!("word{k}"));
        assert!(!said(i - 1), "{now:?}");
        assert!(i < 2 || said(i - 2), "{now:?}");
    }
    // Transcript times: the utterance's own start when the words did not reach back.
    let starts = transcript_starts(&events);
    assert_eq!(starts.len(), heard.len());
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");

    // With partials on, only finished utterances get the context: a partial is heard alone,
    // as quickly as it can be.
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(5), |_| Some("words".into()));
    let (e, _) = collected(
        recogniser.clone(),
        EngineConfig {
            partials: true,
            ..config
        },
    );
    let ingest = e.ingest();
    let id = CallId::new("cut-partials");
    ingest
        .send(Ingress::Open(call("cut-partials", 1, 16_000)))
        .unwrap();
    play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
    ingest.send(Ingress::Close(id)).unwrap();
    e.shutdown();
    let heard = recogniser.hearings();
    assert!(heard.iter().any(|h| h.partial), "{heard:?}");
    assert!(
        heard.iter().any(|h| !h.partial && h.context_s > 0.0),
        "{heard:?}"
    );
    assert!(
        heard.iter().all(|h| !h.partial || h.context_s == 0.0),
        "{heard:?}"
    );
}

#[test]
fn speech_across_cuts_is_heard_again_joined_and_those_words_decide_the_verdict() {
    // The pieces are heard as harmless words; only the joined hearing hears the scam, as a
    // phrase split by cuts is heard whole when joined.
    let scam = "This is the IRS. There is a warrant for your arrest. \
                Pay the fine today with Google Play gift cards.";
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(5), move |r| {
        Some(if r.review { scam } else { "hello there" }.into())
    });
    let config = EngineConfig {
        partials: false,
        utterances: vishguard::audio::utterance::UtteranceConfig {
            max_utterance_s: 1.5,
            ..Default::default()
        },
        ..Default::default()
    };
    // The clip twice with 3 s of silence between: two runs of speech, each cut at 1.5 s.
    let clip = fixture_speech("asr/pharmacy.flac");
    let mut speech = clip.clone();
    speech.extend(vec![0.0; 48_000]);
    speech.extend(&clip);
    let hear = |config: EngineConfig| {
        let (e, events) = collected(recogniser.clone(), config);
        let ingest = e.ingest();
        let id = CallId::new("joined");
        ingest
            .send(Ingress::Open(call("joined", 1, 16_000)))
            .unwrap();
        play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
        ingest.send(Ingress::Close(id)).unwrap();
        e.shutdown();
        events.events()
    };
    let events = hear(config.clone());
    let heard = recogniser.hearings();
    let reviews: Vec<&Hearing> = heard.iter().filter(|h| h.review).collect();
    assert!(!reviews.is_empty(), "{heard:?}");
    let clip_s = clip.len() as f64 / 16_000.0;
    for r in &reviews {
        // Several utterances of one run joined, never across the 3 s pause.
        assert!(r.seconds > 1.6 && r.seconds < clip_s + 1.0, "{r:?}");
        assert_eq!((r.partial, r.context_s), (false, 0.0), "{r:?}");
    }
    // The close waited for the last review: the summary counts its words.
    let summary = summaries(&events)[0];
    assert!(summary.risk.is_flagged(), "{summary:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Alert(a) if !a.partial)));
    // The transcript holds the pieces' own words only.
    assert!(events
        .iter()
        .all(|e| !matches!(e, Event::Transcript(u) if u.text.contains("IRS"))));

    // Without reviews, the pieces alone: nothing flagged.
    let before = recogniser.hearings().len();
    let events = hear(EngineConfig {
        reviews: false,
        ..config
    });
    assert!(recogniser.hearings()[before..].iter().all(|h| !h.review));
    assert!(!summaries(&events)[0].risk.is_flagged());
}

#[test]
fn each_call_is_heard_in_order_by_one_worker_at_a_time() {
    heard_in_order(3, 1);
}

#[test]
fn batches_hold_different_calls_and_each_call_stays_in_order() {
    let recogniser = heard_in_order(2, 4);
    let batches = recogniser.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|&b| (1..=4).contains(&b)), "{batches:?}");
    assert!(batches.iter().any(|&b| b > 1), "never batched: {batches:?}");
}

fn heard_in_order(workers: usize, batch: usize) -> Arc<ScriptedRecogniser> {
    // Slow enough that utterances of other calls wait while the workers are busy (at 30 ms
    // a loaded machine sometimes never queued two at once).
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(60), |r| {
        Some(format!("{} party {}", r.call_id, r.party))
    });
    let config = EngineConfig {
        partials: false,
        asr_workers: workers,
        asr_batch: batch,
        asr_queue: 64,
        ..Default::default()
    };
    let (e, events) = collected(recogniser.clone(), config);
    let speech = fixture_speech("asr/pharmacy.flac");
    std::thread::scope(|s| {
        for c in 0..4 {
            let ingest = e.ingest();
            let speech = &speech;
            s.spawn(move || {
                let id = CallId::new(format!("c{c}"));
                ingest
                    .send(Ingress::Open(call(id.as_str(), 2, 16_000)))
                    .unwrap();
                for round in 0..4 {
                    let at = round as f64 * 10.0;
                    play(ingest.as_ref(), &id, round % 2, (speech, 16_000), at, true);
                }
                ingest.send(Ingress::Close(id)).unwrap();
            });
        }
    });
    e.shutdown();
    assert_eq!(*recogniser.most_at_once.lock().unwrap(), 1);
    let events = events.events();
    for c in 0..4 {
        let id = CallId::new(format!("c{c}"));
        let mine: Vec<&Event> = events.iter().filter(|e| e.call_id() == &id).collect();
        assert!(
            matches!(mine.first(), Some(Event::CallStarted(_))),
            "{mine:?}"
        );
        assert!(matches!(mine.last(), Some(Event::CallEnded(_))), "{mine:?}");
        // Each party's utterances are heard in the order they were spoken (a party's words
        // only end at its pause, so the parties interleave by when they finished).
        for party in 0..2 {
            let starts: Vec<f64> = mine
                .iter()
                .filter_map(|e| match e {
                    Event::Transcript(u) if u.party == party => Some(u.start_s),
                    _ => None,
                })
                .collect();
            assert!(!starts.is_empty(), "party {party}");
            assert!(
                starts.windows(2).all(|w| w[0] < w[1]),
                "out of order: {starts:?}"
            );
        }
    }
    recogniser
}

/// Blocks every write until released.
struct Stuck {
    open: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Event>>>,
}

impl Sink for Stuck {
    fn describe(&self) -> String {
        "stuck".into()
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        while !self.open.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.seen.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[test]
fn a_stuck_sink_holds_up_neither_the_recognisers_nor_another_sink() {
    let recogniser = ScriptedRecogniser::new(Duration::ZERO, |_| Some(SCAM_LINE.into()));
    let (open, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let fast = Collector::new();
    let spill = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        spill_dir: Some(spill.path().to_path_buf()),
        ..Default::default()
    };
    let stuck = Stuck {
        open: open.clone(),
        seen: seen.clone(),
    };
    let e = engine(
        recogniser,
        config,
        vec![
            SinkSpec::new(
                stuck,
                QueueConfig {
                    capacity: 2,
                    overflow: Overflow::Spill,
                },
            ),
            SinkSpec::new(fast.clone(), QueueConfig::default()),
        ],
    );
    let ingest = e.ingest();
    let speech = fixture_speech("asr/pharmacy.flac");
    for c in 0..3 {
        let id = CallId::new(format!("s{c}"));
        ingest
            .send(Ingress::Open(call(id.as_str(), 1, 16_000)))
            .unwrap();
        play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
        ingest.send(Ingress::Close(id)).unwrap();
    }
    // Every call ends, alerts included, while the stuck sink has taken nothing but its first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while summaries(&fast.events()).len() < 3 {
        assert!(Instant::now() < deadline, "the fast sink was held up");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen.lock().unwrap().is_empty());
    let got = fast.events();
    assert!(got.iter().any(|e| matches!(e, Event::Alert(_))), "{got:?}");
    open.store(true, Ordering::Relaxed);
    let report = e.shutdown();
    // Nothing was lost by the stuck sink: what waited on disk came back, each call's events in
    // the same order (the order promised: per call; calls heard by different workers may
    // interleave differently in two sinks).
    let per_call = |events: &[Event]| {
        let mut by: std::collections::BTreeMap<String, Vec<Event>> = Default::default();
        for e in events {
            by.entry(e.call_id().as_str().to_owned())
                .or_default()
                .push(e.clone());
        }
        by
    };
    assert_eq!(per_call(&seen.lock().unwrap()), per_call(&got));
    assert!(report.sinks[0].spilled > 0, "{:?}", report.sinks);
    assert_eq!(report.sinks[0].dropped, 0);
}

#[test]
fn overload_drops_audio_and_utterances_counted_and_every_call_reports() {
    // A recogniser far slower than the calls: 0.3 s per utterance, one worker.
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(300), |_| Some("words".into()));
    let config = EngineConfig {
        call_queue_chunks: 8,
        asr_queue: 1,
        asr_workers: 1,
        partials: false,
        ..Default::default()
    };
    let (e, events) = collected(recogniser, config);
    let ingest = e.ingest();
    let speech = fixture_speech("asr/pharmacy.flac");
    let mut refused = 0u64;
    let mut refused_s = 0.0;
    for c in 0..6 {
        ingest
            .send(Ingress::Open(call(&format!("c{c}"), 1, 16_000)))
            .unwrap();
    }
    for round in 0..4 {
        for (i, chunk) in speech.chunks(320).enumerate() {
            for c in 0..6 {
                let sent = ingest.send(Ingress::Audio(AudioChunk {
                    call: CallId::new(format!("c{c}")),
                    party: 0,
                    offset_s: round as f64 * 10.0 + i as f64 * 0.02,
                    samples: chunk.to_vec(),
                }));
                if let Err(IngestError::QueueFull(_)) = sent {
                    refused += 1;
                    refused_s += chunk.len() as f64 / 16_000.0;
                }
            }
        }
    }
    for c in 0..6 {
        ingest
            .send(Ingress::Close(format!("c{c}").as_str().into()))
            .unwrap();
    }
    e.shutdown();
    let events = events.events();
    let summaries = summaries(&events);
    assert_eq!(summaries.len(), 6, "every call reports, overloaded or not");
    let stats: Vec<_> = summaries
        .iter()
        .map(|s| s.stream.clone().unwrap())
        .collect();
    let dropped_s: f64 = stats.iter().map(|s| s.dropped_audio_s).sum();
    let dropped_utterances: u64 = stats.iter().map(|s| s.dropped_utterances).sum();
    assert!(
        refused > 0 || dropped_utterances > 0,
        "nothing was dropped under overload"
    );
    assert!(
        (dropped_s - refused_s).abs() < 1e-3,
        "{dropped_s} vs {refused_s}"
    );
    eprintln!("overload: {refused} chunks refused ({refused_s:.1} s), {dropped_utterances} utterances dropped");
}

#[test]
fn sources_that_wait_lose_no_utterance_under_overload() {
    // The same overload, fed by sources that wait (a file read faster than real time, a relay
    // worker catching up on a call it took over): they wait for the recognisers instead.
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(40), |_| Some("words".into()));
    let config = EngineConfig {
        call_queue_chunks: 8,
        asr_queue: 1,
        asr_workers: 1,
        partials: false,
        ..Default::default()
    };
    let (e, events) = collected(recogniser, config);
    let ingest = e.ingest();
    let speech = fixture_speech("asr/pharmacy.flac");
    let calls = 4;
    for c in 0..calls {
        ingest
            .send(Ingress::Open(call(&format!("w{c}"), 1, 16_000)))
            .unwrap();
    }
    std::thread::scope(|scope| {
        for c in 0..calls {
            let (ingest, speech) = (&ingest, &speech);
            scope.spawn(move || {
                for round in 0..2 {
                    for (i, chunk) in speech.chunks(320).enumerate() {
                        ingest
                            .send_waiting(Ingress::Audio(AudioChunk {
                                call: CallId::new(format!("w{c}")),
                                party: 0,
                                offset_s: round as f64 * 10.0 + i as f64 * 0.02,
                                samples: chunk.to_vec(),
                            }))
                            .unwrap();
                    }
                }
                ingest
                    .send(Ingress::Close(format!("w{c}").as_str().into()))
                    .unwrap();
            });
        }
    });
    e.shutdown();
    let events = events.events();
    let stats: Vec<_> = summaries(&events)
        .iter()
        .map(|s| s.stream.clone().unwrap())
        .collect();
    assert_eq!(stats.len(), calls);
    for s in &stats {
        assert_eq!(s.dropped_utterances, 0, "{stats:?}");
        assert_eq!(s.dropped_audio_s, 0.0, "{stats:?}");
        assert_eq!(
            s.utterances, stats[0].utterances,
            "the same audio, the same utterances"
        );
    }
    assert!(stats[0].utterances >= 2, "{stats:?}");
}

#[test]
fn bad_ingress_is_refused_with_a_reason_and_other_calls_go_on() {
    let recogniser = ScriptedRecogniser::new(Duration::ZERO, |_| Some(SCAM_LINE.into()));
    let (e, events) = collected(recogniser, EngineConfig::default());
    let ingest = e.ingest();
    let chunk = |id: &str, party, offset_s: f64| {
        Ingress::Audio(AudioChunk {
            call: id.into(),
            party,
            offset_s,
            samples: vec![0.0; 160],
        })
    };
    assert_eq!(
        ingest.send(chunk("nobody", 0, 0.0)),
        Err(IngestError::UnknownCall("nobody".into()))
    );
    assert!(matches!(
        ingest.send(Ingress::Open(call("none", 0, 8000))),
        Err(IngestError::BadCall { .. })
    ));
    let too_slow = ingest.send(Ingress::Open(call("slow", 1, 10)));
    assert!(
        matches!(&too_slow, Err(IngestError::BadCall { problem, .. }) if problem.contains("10 Hz")),
        "{too_slow:?}"
    );
    ingest.send(Ingress::Open(call("good", 1, 8000))).unwrap();
    assert_eq!(
        ingest.send(Ingress::Open(call("good", 1, 8000))),
        Err(IngestError::DuplicateCall("good".into()))
    );
    assert!(matches!(
        ingest.send(chunk("good", 3, 0.0)),
        Err(IngestError::UnknownParty {
            party: 3,
            parties: 1,
            ..
        })
    ));
    for offset in [f64::NAN, -1.0, 1e12] {
        let sent = ingest.send(chunk("good", 0, offset));
        assert!(
            matches!(&sent, Err(IngestError::BadCall { problem, .. }) if problem.contains("offset_s")),
            "{offset}: {sent:?}"
        );
    }
    let long = ingest.send(Ingress::Audio(AudioChunk {
        call: "good".into(),
        party: 0,
        offset_s: 0.0,
        samples: vec![0.0; 8000 * 60],
    }));
    assert!(matches!(long, Err(IngestError::BadCall { .. })), "{long:?}");
    // Samples that are not numbers are heard as silence: the party is not deafened.
    let mut poisoned = vec![0.0f32; 160];
    poisoned[3] = f32::NAN;
    poisoned[7] = f32::INFINITY;
    ingest
        .send(Ingress::Audio(AudioChunk {
            call: "good".into(),
            party: 0,
            offset_s: 0.0,
            samples: poisoned,
        }))
        .unwrap();
    // The good call is heard all the same.
    let id = CallId::new("good");
    play(ingest.as_ref(), &id, 0, (&narrowband(), 8_000), 0.02, true);
    ingest.send(Ingress::Close(id.clone())).unwrap();
    assert_eq!(
        ingest.send(Ingress::Close(id)),
        Err(IngestError::UnknownCall("good".into()))
    );
    e.shutdown();
    let events = events.events();
    let ended = summaries(&events);
    assert_eq!(ended.len(), 1);
    assert!(ended[0].risk.is_flagged(), "{:?}", ended[0]);
    assert!(ended[0].stream.as_ref().unwrap().utterances >= 1);
}

#[test]
fn a_recogniser_that_panics_on_one_call_leaves_the_others_alone() {
    for asr_batch in [1, 4] {
        panics_on_one_call(asr_batch);
    }
}

fn panics_on_one_call(asr_batch: usize) {
    let recogniser = ScriptedRecogniser::new(Duration::ZERO, |r| {
        if r.call_id.as_str() == "cursed" {
            panic!("the recogniser broke on this call");
        }
        Some(SCAM_LINE.into())
    });
    let config = EngineConfig {
        asr_batch,
        ..Default::default()
    };
    let (e, events) = collected(recogniser, config);
    let ingest = e.ingest();
    let speech = fixture_speech("asr/pharmacy.flac");
    for name in ["cursed", "fine"] {
        let id = CallId::new(name);
        ingest.send(Ingress::Open(call(name, 1, 16_000))).unwrap();
        play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
        ingest.send(Ingress::Close(id)).unwrap();
    }
    // Shutdown returns: no call is left held by a worker that died.
    e.shutdown();
    let events = events.events();
    let ended = summaries(&events);
    assert_eq!(ended.len(), 2, "both calls end with a summary");
    let fine = ended.iter().find(|s| s.call_id.as_str() == "fine").unwrap();
    assert!(fine.risk.is_flagged(), "{fine:?}");
}

#[test]
fn an_id_is_not_reused_while_its_call_is_heard_and_open_calls_are_bounded() {
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(300), |_| Some("hi".into()));
    let config = EngineConfig {
        max_calls: 2,
        partials: false,
        ..Default::default()
    };
    let (e, events) = collected(recogniser, config);
    let ingest = e.ingest();
    let speech = fixture_speech("asr/pharmacy.flac");
    let id = CallId::new("desk");
    ingest.send(Ingress::Open(call("desk", 1, 16_000))).unwrap();
    ingest
        .send(Ingress::Open(call("other", 1, 16_000)))
        .unwrap();
    assert_eq!(
        ingest.send(Ingress::Open(call("third", 1, 16_000))),
        Err(IngestError::TooManyCalls(2))
    );
    play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
    ingest.send(Ingress::Close(id.clone())).unwrap();
    // Its utterances are still being heard: the id stays taken until its summary is out.
    assert_eq!(
        ingest.send(Ingress::Open(call("desk", 1, 16_000))),
        Err(IngestError::DuplicateCall(id.clone()))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while summaries(&events.events()).is_empty() {
        assert!(Instant::now() < deadline, "the first call never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    ingest.send(Ingress::Open(call("desk", 1, 16_000))).unwrap();
    e.shutdown();
    let events = events.events();
    let desk: Vec<&Event> = events.iter().filter(|e| e.call_id() == &id).collect();
    // The two calls named "desk" come one after the other, each whole.
    let kinds: Vec<&str> = desk
        .iter()
        .filter_map(|e| match e {
            Event::CallStarted(_) => Some("started"),
            Event::CallEnded(_) => Some("ended"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["started", "ended", "started", "ended"]);
}

#[test]
fn an_alert_the_finished_words_do_not_bear_out_is_counted_as_withdrawn() {
    // Heard early, the words sound like a script; heard whole, they do not.
    let recogniser = ScriptedRecogniser::new(Duration::ZERO, |r| {
        Some(
            if r.partial {
                SCAM_LINE
            } else {
                "hello, see you on sunday"
            }
            .into(),
        )
    });
    let mut config = EngineConfig::default();
    // The utterance stays open while the call is: only partials are heard before the close.
    config.utterances.end_silence_s = 30.0;
    config.utterances.max_utterance_s = 30.0;
    let (e, events) = collected(recogniser.clone(), config);
    let ingest = e.ingest();
    let id = CallId::new("tentative");
    ingest
        .send(Ingress::Open(call("tentative", 1, 16_000)))
        .unwrap();
    play(
        ingest.as_ref(),
        &id,
        0,
        (&fixture_speech("asr/pharmacy.flac"), 16_000),
        0.0,
        true,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !recogniser.hearings().iter().any(|h| h.partial) {
        assert!(Instant::now() < deadline, "no partial was heard");
        std::thread::sleep(Duration::from_millis(10));
    }
    ingest.send(Ingress::Close(id)).unwrap();
    e.shutdown();
    let events = events.events();
    let alerts = events
        .iter()
        .filter(|e| matches!(e, Event::Alert(a) if a.partial))
        .count();
    assert!(alerts > 0, "{events:?}");
    let summary = summaries(&events)[0].clone();
    assert!(!summary.risk.is_flagged(), "{summary:?}");
    let stream = summary.stream.unwrap();
    assert_eq!(stream.alerts, alerts);
    assert_eq!(stream.alerts_withdrawn, alerts);
}

/// The Mandarin pack with the e5-only call model of `call_model_zh_e5_whole_calls.json` (kept
/// beside the tests, to keep EmbeddingGemma out of them), its text passed through `edit`, and
/// the e5 context check; the folder holds the pack's files.
fn zh_with_fixture_model(edit: impl Fn(String) -> String) -> (Classifier, tempfile::TempDir) {
    let zh = vishguard::detect::pack::BUILTIN_ZH.replacen(
        "weights = \"zh_call_model.json\"",
        "weights = \"call_model_zh_e5_whole_calls.json\"",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::fixture("call_model_zh_e5_whole_calls.json"),
        dir.path().join("call_model_zh_e5_whole_calls.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("zh.toml"), edit(zh)).unwrap();
    let mut classifier = Classifier::with_packs(vec![vishguard::detect::PhrasePack::load(
        &dir.path().join("zh.toml"),
    )
    .unwrap()]);
    classifier.context_check = Some(Arc::new(
        vishguard::detect::script_context::ContextCheck::load(Some("e5-small")).unwrap(),
    ));
    classifier.call_model = true;
    (classifier, dir)
}

/// Plays each call of `script` (call id, the lines its finished utterances hear in order) as
/// one party's speech, as many utterances long as it has lines, and returns every event.
/// A partial hears a filler word, and a review hears nothing new.
fn scripted_calls(classifier: Classifier, script: &[(&str, Vec<String>)]) -> Vec<Event> {
    scripted_calls_heard(classifier, script).0
}

/// [`scripted_calls`], with what the recogniser was asked to hear.
fn scripted_calls_heard(
    classifier: Classifier,
    script: &[(&str, Vec<String>)],
) -> (Vec<Event>, Vec<support::Hearing>) {
    let lines: Arc<Mutex<std::collections::HashMap<String, Vec<String>>>> = Arc::new(Mutex::new(
        script
            .iter()
            .map(|(id, l)| (id.to_string(), l.clone()))
            .collect(),
    ));
    let left = lines.clone();
    let recogniser = ScriptedRecogniser::new(Duration::from_millis(2), move |r| {
        if r.partial {
            return Some("嗯".into());
        }
        if r.review {
            return None;
        }
        let mut lines = left.lock().unwrap();
        let left = lines.get_mut(r.call_id.as_str())?;
        (!left.is_empty()).then(|| left.remove(0))
    });
    let config = EngineConfig {
        utterances: vishguard::audio::utterance::UtteranceConfig {
            max_utterance_s: 2.5,
            ..Default::default()
        },
        ..Default::default()
    };
    let (e, events) = collected_by(recogniser.clone(), classifier, config);
    let ingest = e.ingest();
    let speech = fixture_speech("asr/pharmacy.flac").repeat(3);
    for (name, _) in script {
        let id = CallId::new(*name);
        ingest.send(Ingress::Open(call(name, 1, 16_000))).unwrap();
        play(ingest.as_ref(), &id, 0, (&speech, 16_000), 0.0, true);
        ingest.send(Ingress::Close(id)).unwrap();
    }
    e.shutdown();
    assert!(
        lines.lock().unwrap().values().all(Vec::is_empty),
        "every line was heard"
    );
    (events.events(), recogniser.hearings())
}

/// A first utterance that Whisper hears as English ("you", its word for a breath or a click)
/// neither holds the party to English nor chooses the English pack for the Mandarin that
/// follows: a language settles on two finished utterances in a row, and until then the
/// party's words choose the pack again. Held to English after "you", two Mandarin scams of
/// unseen_ar were heard live as English sentences and not flagged (2026-12-07).
#[test]
fn one_utterance_heard_as_english_does_not_hold_a_mandarin_party_to_english() {
    let lines: Vec<String> = [
        "you",
        "您好，我是市公安局刑侦支队的，您的身份证涉嫌一起洗钱案件。",
        "这个案子要保密，不要告诉任何人，包括您的家人。",
        "您现在把卡里的钱转到安全账户，核查完就退给您。",
    ]
    .map(String::from)
    .to_vec();
    let (events, hearings) = scripted_calls_heard(Classifier::builtin(), &[("call", lines)]);
    let finished: Vec<_> = hearings
        .iter()
        .filter(|h| !h.partial && !h.review)
        .map(|h| h.language.as_deref())
        .collect();
    // The speech runs on past the script's lines; those utterances hear nothing.
    assert_eq!(
        finished[..3],
        [None, None, None],
        "detected until two agree: {finished:?}"
    );
    assert!(
        finished[3..].iter().all(|l| *l == Some("zh")),
        "then held to Mandarin: {finished:?}"
    );
    let (_, alert) = readings(&events, "call");
    assert!(alert.is_some(), "{events:?}");
    let closed = summaries(&events).into_iter().next().unwrap();
    assert!(closed.risk.is_flagged(), "{closed:?}");
}

/// Of the call `name`: each finished utterance's (score, risk) in order, and after how many of
/// them the first alert came.
fn readings(events: &[Event], name: &str) -> (Vec<(f32, vishguard::call::Risk)>, Option<usize>) {
    let (mut scores, mut first_alert) = (Vec::new(), None);
    for e in events {
        match e {
            Event::Transcript(u) if u.call_id.as_str() == name => scores.push((u.score, u.risk)),
            Event::Alert(a) if a.call_id.as_str() == name && first_alert.is_none() => {
                first_alert = Some(scores.len())
            }
            _ => {}
        }
    }
    (scores, first_alert)
}

/// The lines of `name` in a fixture of utterances (`tests/fixtures/live_*_zh.json`).
fn fixture_lines(file: &str, name: &str) -> Vec<String> {
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(support::fixture(file)).unwrap()).unwrap();
    fixture[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// A call flagged only by the call model's lift is alerted once a second finished reading is
/// lifted too; one lifted for a single utterance is never alerted. The words are what base
/// heard, utterance by utterance, of an honest bank anti-fraud call and a task-rebate scam
/// (`tests/fixtures/live_lift_zh.json`): the Mandarin call model (its e5-only form, to keep
/// EmbeddingGemma out of this test) lifts both at the third utterance, and only the scam at
/// the fourth. A call that ends on its first lifted reading (the honest call's first three
/// utterances) is alerted at its close, when its summary is flagged: its last reading heard
/// the whole call.
#[test]
fn a_call_lifted_by_the_call_model_alone_is_alerted_at_its_second_lifted_reading() {
    let utterances = |name: &str| fixture_lines("live_lift_zh.json", name);
    // The e5-only model as trained on whole calls before 2026-12-07: it lifts the honest
    // call's third utterance, which the model trained on prefixes since does not, and the rule
    // is what this test is about.
    // Live readings as long as the summary's (this rule before `live_alone_min_windows`).
    let (classifier, _dir) =
        zh_with_fixture_model(|zh| zh.replacen("live_alone_min_windows = 40", "", 1));
    let events = scripted_calls(
        classifier,
        &[
            ("honest", utterances("honest_anti_fraud_warning")),
            ("scam", utterances("scam_task_rebate")),
            (
                "ends_lifted",
                utterances("honest_anti_fraud_warning")[..3].to_vec(),
            ),
        ],
    );
    let scores = |name: &str| {
        let (r, alert) = readings(&events, name);
        (r.into_iter().map(|(s, _)| s).collect::<Vec<_>>(), alert)
    };
    let (honest, alert) = scores("honest");
    assert_eq!(honest.len(), 4, "{events:?}");
    assert!(
        honest[2] >= 0.5 && honest[3] < 0.5,
        "lifted once: {honest:?}"
    );
    assert_eq!(alert, None, "{honest:?}");
    // Partials and reviews are on, as by default; whether one runs between two utterances
    // depends on timing, so the rule's cases are tested in engine/worker.rs.
    let (scam, alert) = scores("scam");
    assert!(scam[2] >= 0.5 && scam[3] >= 0.5, "lifted twice: {scam:?}");
    assert_eq!(
        alert,
        Some(4),
        "alerted at the second lifted reading: {scam:?}"
    );
    let (ends_lifted, alert) = scores("ends_lifted");
    assert!(
        ends_lifted.len() == 3 && ends_lifted[2] >= 0.5,
        "{ends_lifted:?}"
    );
    assert_eq!(alert, Some(3), "alerted at the close: {events:?}");
    let closed = summaries(&events)
        .into_iter()
        .find(|s| s.call_id.as_str() == "ends_lifted")
        .unwrap();
    assert!(closed.risk.is_flagged(), "{closed:?}");
    assert!(closed.stream.as_ref().unwrap().alerts > 0, "{closed:?}");
}

/// The pack's `live_alone_min_windows` (40 in zh.toml): the model alone lifts a live reading
/// only from that many windows. The task-rebate scam of the test above, lifted by the model
/// alone at its third and fourth utterances (11 and 16 windows), is not alerted while the
/// call goes on, and no reading is shown flagged; the close alerts it, as its summary is
/// flagged (the summary keeps `alone_min_windows`, 10).
#[test]
fn a_lift_by_the_model_alone_waits_for_a_long_enough_live_reading_or_the_close() {
    let lines = fixture_lines("live_lift_zh.json", "scam_task_rebate");
    let (classifier, _dir) = zh_with_fixture_model(|zh| zh);
    let events = scripted_calls(classifier, &[("scam", lines.clone())]);
    let (scores, alert) = readings(&events, "scam");
    assert_eq!(scores.len(), lines.len(), "{events:?}");
    assert!(
        scores[2].0 >= 0.5 && scores[3].0 >= 0.5,
        "lifted twice: {scores:?}"
    );
    assert!(
        scores.iter().all(|(_, risk)| !risk.is_flagged()),
        "no reading is shown flagged: {scores:?}"
    );
    assert_eq!(alert, Some(lines.len()), "alerted at the close: {scores:?}");
    let closed = summaries(&events).into_iter().next().unwrap();
    assert!(closed.risk.is_flagged(), "{closed:?}");
    assert!(closed.stream.as_ref().unwrap().alerts > 0, "{closed:?}");
}
