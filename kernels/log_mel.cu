// Whisper's log-mel spectrogram for a batch of recordings, on the GPU.
//
// The contract is `asr::mel_batch::LogMelBatch` (src/asr/mel_batch.rs), whose CPU reference
// follows these loops step by step; both must agree with `MelSpectrogram::log_mel` (the
// production CPU path, rustfft) within the bound its tests state. Per row b of `pcm`
// [rows, samples_per_row] (16 kHz, the row's first lens[b] samples are audio, the rest is
// read as silence):
//   1. frame f is centred on sample f * 160: samples f*160-200 .. f*160+199, reflected at the
//      start (sample -i reads sample i, as torch.stft(center=True)), silence from lens[b] on;
//      multiplied by the periodic Hann window (400 taps);
//   2. power of the 201 bins of a 400-point DFT (direct sums over the twiddle table
//      cos/sin(2 pi j / 400), j = k*n mod 400: 80,400 products a frame, one block per frame);
//   3. each mel filter's weighted sum of its bins (Slaney filters, stored sparse: first bin,
//      length, offset into the weights), then log10(max(x, 1e-10));
//   4. the row's peak (one atomic per block), and in a second kernel
//      (max(v, peak - 8) + 4) / 4, as openai-whisper's log_mel_spectrogram.
// Output [rows, n_mels, frames], row-major.

#define N_FFT 400
#define N_BINS 201
#define HOP 160

// Float max through integer atomics: non-negative floats order as signed ints, negative
// ones in reverse as unsigned ints. `addr` starts at -inf.
__device__ void atomic_max_float(float* addr, float v) {
    if (__float_as_int(v) >= 0) {
        atomicMax((int*)addr, __float_as_int(v));
    } else {
        atomicMin((unsigned int*)addr, __float_as_uint(v));
    }
}

extern "C" __global__ void log_mel_frames(
    const float* pcm, const int* lens, const int samples_per_row, const int frames,
    const float* window, const float* cos_t, const float* sin_t,
    const int* filt_first, const int* filt_len, const int* filt_off, const float* filt_w,
    const int n_mels, float* out, float* peak) {
    __shared__ float x[N_FFT];
    __shared__ float power[N_BINS];
    __shared__ float block_max[256];
    const int f = blockIdx.x;
    const int b = blockIdx.y;
    const int len = min(lens[b], samples_per_row);
    const float* row = pcm + (size_t)b * samples_per_row;
    const int start = f * HOP - N_FFT / 2;
    for (int n = threadIdx.x; n < N_FFT; n += blockDim.x) {
        int i = start + n;
        if (i < 0) i = -i;
        x[n] = (i < len ? row[i] : 0.0f) * window[n];
    }
    __syncthreads();
    for (int k = threadIdx.x; k < N_BINS; k += blockDim.x) {
        float re = 0.0f, im = 0.0f;
        int j = 0;  // k * n mod 400, stepped by k
        for (int n = 0; n < N_FFT; n++) {
            re += x[n] * cos_t[j];
            im -= x[n] * sin_t[j];
            j += k;
            if (j >= N_FFT) j -= N_FFT;
        }
        power[k] = re * re + im * im;
    }
    __syncthreads();
    float m_max = -INFINITY;
    for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
        const int first = filt_first[m], count = filt_len[m], off = filt_off[m];
        float s = 0.0f;
        for (int i = 0; i < count; i++) s += power[first + i] * filt_w[off + i];
        const float v = log10f(fmaxf(s, 1e-10f));
        out[((size_t)b * n_mels + m) * frames + f] = v;
        m_max = fmaxf(m_max, v);
    }
    block_max[threadIdx.x] = m_max;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) block_max[threadIdx.x] = fmaxf(block_max[threadIdx.x], block_max[threadIdx.x + s]);
        __syncthreads();
    }
    if (threadIdx.x == 0) atomic_max_float(peak + b, block_max[0]);
}

extern "C" __global__ void log_mel_normalise(float* data, const float* peak, const int per_row,
                                             const int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        const float floor = peak[i / per_row] - 8.0f;
        data[i] = (fmaxf(data[i], floor) + 4.0f) / 4.0f;
    }
}
