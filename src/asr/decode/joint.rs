//! Continuous batching: greedy decodes of windows from different callers join one running
//! batch at the next decoder step, instead of each caller stepping a batch of its own.
//!
//! Why: on the CPU a decoder step is bound by reading the weights (tiny.en's vocabulary
//! projection alone is 40 MB in f16, read once per step whatever the number of rows), so rows
//! stepped together cost little more than one. Live calls' utterances reach the recognisers a
//! few tenths of a second apart, so a batch taken from the queue is one or two rows; rows that
//! join a decode already running share its steps.
//!
//! How: the caller that finds no one stepping the batch steps it (leader/follower, no thread
//! of its own): before each step it takes in the windows that arrived (their prompts run
//! through the decoder together, their cached tokens left-padded to the batch's length), and
//! a row that finishes leaves with its result. Once its own rows are done it hands the batch
//! to a caller still waiting, so no caller steps for the others longer than its own decode.
//! Each row gets the tokens it would get in a batch of its own (the same rules and prompt
//! pass; the step's products differ only by the rounding of batched arithmetic).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use anyhow::Result;
use candle_core::Tensor;

use super::{damaged_weights, BatchRow, FallbackPolicy, RowInfo, Started, WindowDecoder};
use super::{DecoderState, WindowResult};

/// Most rows stepped together on the CPU: the vocabulary projection's f16 copy serves up to
/// 16 rows (`step_weights::MAX_ROWS`); later windows wait for a row to leave.
pub const MAX_JOINED_ROWS: usize = 16;

/// Most rows stepped together on a GPU, where each row holds its own copy of its window's
/// cross-attention keys and values (tiny.en, 15-s window, f16: 4.6 MB; base 9 MB).
pub const MAX_JOINED_ROWS_GPU: usize = 1024;

/// The running batch of one model, shared by every thread that decodes with it.
#[derive(Default)]
pub struct JointDecodes {
    lane: Mutex<Lane>,
    /// Signalled when results are published or the batch is handed back.
    changed: Condvar,
    /// Rows that joined a batch already running (see [`Self::rows_joined`]).
    joined: AtomicU64,
}

#[derive(Default)]
struct Lane {
    waiting: Vec<Pending>,
    /// The batch, when no thread is stepping it.
    running: Option<Running>,
    /// A thread holds the batch and steps it.
    driving: bool,
    finished: HashMap<u64, Result<WindowResult>>,
    next_ticket: u64,
}

/// Rows decode together only with the same timestamp rule and audio length.
type Key = (bool, usize);

struct Pending {
    ticket: u64,
    key: Key,
    /// `[1, frames, d]`, the encoded window.
    audio: Tensor,
    prompt: Vec<u32>,
    sot_sequence: Vec<u32>,
    policy: FallbackPolicy,
    seed: u64,
}

struct Member {
    ticket: u64,
    policy: FallbackPolicy,
    sampled: Vec<u32>,
    sum_logprob: f64,
}

struct Running {
    key: Key,
    state: DecoderState,
    /// The next token's logits for each member, `[members, vocab]` (F32).
    logits: Tensor,
    rows: RowInfo,
    /// Rows the picker was built for.
    picker_rows: usize,
    members: Vec<Member>,
}

impl JointDecodes {
    /// How many rows joined a batch while other rows were decoding in it (not counting
    /// rows that started a batch): whether continuous batching took place at all.
    pub fn rows_joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Lane> {
        self.lane.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Greedy decodes of `rows` (temperature 0, one sequence each), `audio [b, frames, d]`
    /// one encoded window per row, in the running batch; one result per row, in order (the
    /// results [`WindowDecoder::decode_batch`] gives at temperature 0). Blocks until they are
    /// done. Errors: `audio` and `rows` disagree; a row's own error (its prompt pass or its
    /// text) fails that row only; an error of a step fails every row in the batch then.
    pub fn decode(
        &self,
        dec: &WindowDecoder<'_>,
        audio: &Tensor,
        rows: &[BatchRow<'_>],
    ) -> Result<Vec<WindowResult>> {
        if audio.dim(0)? != rows.len() {
            anyhow::bail!("{} rows for {} encoded windows", rows.len(), audio.dim(0)?);
        }
        if let Some(r) = rows.iter().find(|r| r.policy.beam_size > 1) {
            anyhow::bail!(
                "a beam search of {} does not join a running batch",
                r.policy.beam_size
            );
        }
        let key = (dec.rules.with_timestamps, audio.dim(1)?);
        let mut lane = self.lock();
        let mut mine = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let ticket = lane.next_ticket;
            lane.next_ticket += 1;
            lane.waiting.push(Pending {
                ticket,
                key,
                audio: audio.narrow(0, i, 1)?,
                prompt: r.prompt.to_vec(),
                sot_sequence: r.sot_sequence.to_vec(),
                policy: r.policy.clone(),
                seed: r.seed,
            });
            mine.push(ticket);
        }
        loop {
            if mine.iter().all(|t| lane.finished.contains_key(t)) {
                return mine
                    .iter()
                    .map(|t| lane.finished.remove(t).expect("a finished row"))
                    .collect();
            }
            if !lane.driving {
                lane.driving = true;
                let mut running = lane.running.take();
                drop(lane);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.drive(dec, &mut running, &mine)
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the batched decoder panicked")));
                lane = self.lock();
                lane.driving = false;
                match outcome {
                    Ok(()) => lane.running = running,
                    Err(e) => {
                        // The batch is lost; its rows fail, the waiting ones start a new one.
                        tracing::warn!("running decode failed: {e:#}");
                        for m in running.into_iter().flat_map(|r| r.members) {
                            lane.finished
                                .insert(m.ticket, Err(anyhow::anyhow!("batched decode: {e:#}")));
                        }
                    }
                }
                self.changed.notify_all();
                continue;
            }
            lane = self.changed.wait(lane).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Steps the batch until the rows `mine` are done (or nothing is left to decode), taking
    /// in waiting windows before each step and publishing rows as they finish.
    fn drive(
        &self,
        dec: &WindowDecoder<'_>,
        running: &mut Option<Running>,
        mine: &[u64],
    ) -> Result<()> {
        let mut done: Vec<(u64, Result<WindowResult>)> = Vec::new();
        loop {
            let new: Vec<Pending> = {
                let mut lane = self.lock();
                if !done.is_empty() {
                    lane.finished.extend(done.drain(..));
                    self.changed.notify_all();
                }
                if mine.iter().all(|t| lane.finished.contains_key(t)) {
                    return Ok(());
                }
                let Some(key) = running
                    .as_ref()
                    .map(|r| r.key)
                    .or_else(|| lane.waiting.first().map(|p| p.key))
                else {
                    return Ok(());
                };
                let on_cpu = running.as_ref().map_or_else(
                    || {
                        lane.waiting
                            .first()
                            .is_none_or(|p| p.audio.device().is_cpu())
                    },
                    |r| r.rows.device.is_cpu(),
                );
                let most = if on_cpu {
                    MAX_JOINED_ROWS
                } else {
                    MAX_JOINED_ROWS_GPU
                };
                let room = most.saturating_sub(running.as_ref().map_or(0, |r| r.members.len()));
                // In arrival order, up to the first window that cannot join (another audio
                // length or timestamp rule): the batch then drains and that window starts the
                // next, so a steady stream of joiners cannot starve it.
                let joinable = lane
                    .waiting
                    .iter()
                    .take_while(|p| p.key == key)
                    .count()
                    .min(room);
                lane.waiting.drain(..joinable).collect()
            };
            if !new.is_empty() {
                let before = running.as_ref().map_or(0, |r| r.members.len());
                tracing::debug!(
                    joining = new.len(),
                    running = before,
                    "rows join the decode"
                );
                if before > 0 {
                    self.joined.fetch_add(new.len() as u64, Ordering::Relaxed);
                }
                self.admit(dec, running, new, &mut done)?;
            }
            let Some(run) = running.as_mut() else {
                continue;
            };
            advance(dec, run, &mut done)?;
            if run.members.is_empty() {
                *running = None;
            }
        }
    }

    /// Runs the prompts of `new` through the decoder and adds them to the batch. A prompt
    /// pass that fails for the new rows together is tried row by row, so one bad row fails
    /// alone.
    fn admit(
        &self,
        dec: &WindowDecoder<'_>,
        running: &mut Option<Running>,
        new: Vec<Pending>,
        done: &mut Vec<(u64, Result<WindowResult>)>,
    ) -> Result<()> {
        match start(dec, &new) {
            Ok(started) => join(dec, running, started, new),
            Err(e) if new.len() == 1 => {
                done.push((new[0].ticket, Err(e)));
                Ok(())
            }
            Err(_) => {
                for p in new {
                    match start(dec, std::slice::from_ref(&p)) {
                        Ok(started) => join(dec, running, started, vec![p])?,
                        Err(e) => done.push((p.ticket, Err(e))),
                    }
                }
                Ok(())
            }
        }
    }
}

fn start(dec: &WindowDecoder<'_>, new: &[Pending]) -> Result<Started> {
    let audio: Vec<&Tensor> = new.iter().map(|p| &p.audio).collect();
    let audio = Tensor::cat(&audio, 0)?;
    let rows: Vec<BatchRow<'_>> = new
        .iter()
        .map(|p| BatchRow {
            prompt: &p.prompt,
            sot_sequence: &p.sot_sequence,
            policy: &p.policy,
            seed: p.seed,
        })
        .collect();
    dec.start_rows(&audio, &rows, rows.len())
}

/// Adds the prompt pass `started` of `new` to the batch: the shorter side's cached tokens are
/// left-padded (and masked) to the other's length.
fn join(
    dec: &WindowDecoder<'_>,
    running: &mut Option<Running>,
    started: Started,
    new: Vec<Pending>,
) -> Result<()> {
    let key = new[0].key;
    let members = new.into_iter().map(|p| Member {
        ticket: p.ticket,
        policy: p.policy,
        sampled: Vec::new(),
        sum_logprob: 0.0,
    });
    let Some(run) = running.as_mut() else {
        let picker_rows = started.rows.no_speech.len();
        *running = Some(Running {
            key,
            state: started.state,
            logits: started.logits,
            rows: started.rows,
            picker_rows,
            members: members.collect(),
        });
        return Ok(());
    };
    let Started {
        mut state,
        logits,
        rows,
    } = started;
    let len = run.state.len.max(state.len);
    let (grow_run, grow_new) = (len - run.state.len, len - state.len);
    run.state.pad_front(grow_run)?;
    state.pad_front(grow_new)?;
    run.state.append(state)?;
    run.logits = Tensor::cat(&[&run.logits, &logits], 0)?;
    let info = &mut run.rows;
    info.pads.iter_mut().for_each(|p| *p += grow_run);
    info.pads.extend(rows.pads.iter().map(|p| p + grow_new));
    info.no_speech.extend(rows.no_speech);
    info.prompt_len.extend(rows.prompt_len);
    info.budget.extend(rows.budget);
    run.members.extend(members);
    let n = run.members.len();
    if n > run.picker_rows {
        run.picker_rows = n.max(MAX_JOINED_ROWS).next_power_of_two();
        info.picker = dec
            .rules
            .picker(run.logits.dim(1)?, run.picker_rows, &info.device)?;
    }
    Ok(())
}

/// One greedy step of the batch: each member's next token under the rules; members that end
/// leave with their result (in `done`); the others go through the decoder.
fn advance(
    dec: &WindowDecoder<'_>,
    run: &mut Running,
    done: &mut Vec<(u64, Result<WindowResult>)>,
) -> Result<()> {
    let sp = dec.rules.special;
    let histories: Vec<&[u32]> = run.members.iter().map(|m| m.sampled.as_slice()).collect();
    let logits = dec.biased(run.logits.clone(), &histories)?;
    let picks = run.rows.picker.pick(&dec.rules, &logits, &histories)?;
    if picks.iter().any(|&(_, lp)| lp.is_nan()) {
        return Err(damaged_weights());
    }
    let mut keep = Vec::with_capacity(run.members.len());
    for (i, (m, &(next, logprob))) in run.members.iter_mut().zip(&picks).enumerate() {
        let finished = next == sp.eot || {
            m.sum_logprob += logprob as f64;
            m.sampled.push(next);
            dec.must_stop(&m.policy, &run.rows, i, &m.sampled)
        };
        if finished {
            let sampled = std::mem::take(&mut m.sampled);
            let result = dec.result(sampled, m.sum_logprob, run.rows.no_speech[i]);
            done.push((m.ticket, result));
        } else {
            keep.push(i);
        }
    }
    if keep.len() < run.members.len() {
        if keep.is_empty() {
            run.members.clear();
            return Ok(());
        }
        let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        run.state
            .select_rows(&Tensor::new(idx.as_slice(), &run.rows.device)?)?;
        let mut members = std::mem::take(&mut run.members)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>();
        run.members = keep
            .iter()
            .map(|&i| members[i].take().expect("kept once"))
            .collect();
        let info = &mut run.rows;
        info.keep_rows(&keep);
        // Padding every remaining row has is read by none of them.
        let common = info.pads.iter().copied().min().unwrap_or(0);
        if common > 0 {
            run.state.drop_front(common)?;
            info.pads.iter_mut().for_each(|p| *p -= common);
        }
    }
    let last = run
        .members
        .iter()
        .map(|m| *m.sampled.last().expect("a token sampled"))
        .collect();
    run.logits = dec.step(&mut run.state, last, &run.rows.pads, &run.rows.device)?;
    Ok(())
}
