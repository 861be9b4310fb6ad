//! How many threads candle's CPU kernels use, settled once at start.
//!
//! candle 0.11 asks for its thread count at every matrix product (`get_num_threads` in
//! `candle_core::utils`), and when `RAYON_NUM_THREADS` is unset it counts the physical cores
//! by reading `/proc/cpuinfo` each time (`num_cpus::get_physical`, not cached): 8,170 reads in
//! a 10 s `bench throughput` run of tiny.en (strace), with the kernel formatting the file
//! every time. Writing the count into the variable once makes each of those a lookup. Measured
//! on the 2-core machine, `transcribe --model tiny.en` of the English samples, three runs
//! alternating: 8.61 / 7.60 / 7.25 s wall -> 7.31 / 6.39 / 6.04 s (kernel time 1.3-1.7 ->
//! 0.6 s), same transcript.

/// The variable candle (and rayon's global pool) take the thread count from.
pub const THREADS_VAR: &str = "RAYON_NUM_THREADS";

/// The count to run with: `requested` when it is at least 1, else a valid count already in
/// [`THREADS_VAR`] (`set`), else `default` (what candle picks: the physical cores).
pub fn choose(requested: Option<usize>, set: Option<&str>, default: usize) -> usize {
    requested
        .filter(|&n| n > 0)
        .or_else(|| set.and_then(|s| s.trim().parse().ok()).filter(|&n| n > 0))
        .unwrap_or(default)
        .max(1)
}

/// Settles the CPU thread count for the rest of the process (see [`choose`]) by writing it
/// into [`THREADS_VAR`], and returns it. Call it once at start, before other threads run (it
/// sets an environment variable) and before the first tensor operation (rayon sizes its pool
/// then).
pub fn settle_cpu_threads(requested: Option<usize>) -> usize {
    let set = std::env::var(THREADS_VAR).ok();
    let n = choose(requested, set.as_deref(), default_count());
    if set.as_deref() != Some(n.to_string().as_str()) {
        std::env::set_var(THREADS_VAR, n.to_string());
    }
    n
}

/// Runs `work` on a thread pool of its own, as many threads as the global pool (the count
/// [`settle_cpu_threads`] chose), so that the parallel parts of candle's kernels and of this
/// crate's (`par_chunks` and gemm's rayon tasks) called from `work` go to that pool; threads
/// named `{name}-pool-N`. Without a pool of its own (it could not be built) `work` runs here,
/// on the global pool.
///
/// Why: the live engine's recognisers (and `scan`'s threads) each ask for many small parallel
/// tasks per decoder step; sharing the global pool, each waited on the other's tasks. `bench
/// live --model tiny.en --calls 16 --asr-batch 8`, shared / own pools of 1 / own pools of 2,
/// two runs each alternating (load 1.5-1.8): lag p50 1.48, 1.53 / 1.10, 0.96 / 0.88, 0.95 s,
/// p95 4.43, 4.68 / 2.80, 2.97 / 3.20, 3.08 s; one call p95 0.74 / 0.85 / 0.64 s.
pub fn in_own_pool<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    let prefix = name.to_owned();
    match rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(move |t| format!("{prefix}-pool-{t}"))
        .build()
    {
        Ok(pool) => pool.install(work),
        Err(e) => {
            tracing::warn!("{name}: no thread pool of its own ({e}); sharing the global one");
            work()
        }
    }
}

/// What candle would use with nothing set: its own rule, asked once with the variable unset.
fn default_count() -> usize {
    match std::env::var_os(THREADS_VAR) {
        None => candle_core::utils::get_num_threads(),
        // candle would read the variable; count the cores without it.
        Some(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_wins_then_a_valid_setting_then_the_default() {
        assert_eq!(choose(Some(3), Some("5"), 2), 3);
        assert_eq!(choose(Some(0), Some("5"), 2), 5);
        assert_eq!(choose(None, Some(" 4 "), 2), 4);
        assert_eq!(choose(None, Some("0"), 2), 2);
        assert_eq!(choose(None, Some("many"), 2), 2);
        assert_eq!(choose(None, None, 2), 2);
        assert_eq!(choose(None, None, 0), 1);
    }

    #[test]
    fn the_count_is_written_where_candle_reads_it() {
        let n = settle_cpu_threads(None);
        assert!(n >= 1);
        assert_eq!(std::env::var(THREADS_VAR).unwrap(), n.to_string());
        assert_eq!(candle_core::utils::get_num_threads(), n);
    }
}
