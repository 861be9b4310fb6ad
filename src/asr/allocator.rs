//! The C allocator's settings for tensor work.
//!
//! Every candle op returns a fresh buffer, and an encoder window makes hundreds of buffers of
//! 0.5-16 MiB. glibc serves requests above its mmap threshold (128 KiB at start, raised as
//! blocks are freed) with their own `mmap` and gives them back with `munmap` on free, so each
//! op's output is zeroed page by page by the kernel again. Measured on the 2-core machine,
//! `transcribe --model tiny.en --no-vad` of 99 s of speech: 6.0 s wall, of which 1.6 s was the
//! kernel's page faults; with the settings below 4.9 s (0.5 s in the kernel), same
//! transcript, peak RSS 255 MB in both. mimalloc did less well on the same run (5.2 s, peak
//! RSS 333 MB).

/// Largest request that glibc serves from its heaps rather than its own `mmap`: 32 MiB, the
/// most `mallopt` accepts on 64-bit (half of a thread arena's 64 MiB heap). One attention
/// block of [`crate::asr::model`] is 16 MiB.
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free memory at the top of a heap that glibc keeps instead of returning it: 128 MiB, about
/// one encoder window's worth of buffers for base.
const TRIM_THRESHOLD: i32 = 128 << 20;

/// Keeps freed tensor buffers for reuse (glibc on Linux; elsewhere nothing). Call it once at
/// start, before the work begins. `GLIBC_TUNABLES` in the environment wins: when it is set,
/// nothing changes. Returns whether the settings were applied.
pub fn keep_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return false;
        }
        // SAFETY: mallopt only sets two of glibc's malloc parameters; both values are in
        // the ranges it documents (mallopt(3)), and it returns 0 on a value it refuses.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        // glibc refuses a threshold above its maximum (returns 0): this would catch a value
        // that silently does nothing.
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            assert!(super::keep_freed_buffers());
        }
    }
}
