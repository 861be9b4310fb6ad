// G.711 network audio to the recogniser's 16 kHz, for a batch of calls, on the GPU.
//
// The contract is `audio::g711_batch::G711To16k` (src/audio/g711_batch.rs), whose CPU
// reference follows these loops; both must agree with the production path
// (`g711::decode` then `resample::to_16k`, rubato's FFT resampler) within the bound its tests
// state. Per row b of `codes` [rows, codes_per_row] (8 kHz G.711 bytes, the first lens[b] are
// audio, the rest read as silence):
//   1. each byte through `table` (256 linear values of the row's law, in [-1, 1]);
//   2. 2x interpolation by a half-band windowed sinc: output 2n is input n, output 2n+1 is
//      sum_j taps[j] * input[n - T + 1 + j], j < 2T (T = taps_per_side), input outside
//      0..lens[b] is silence. The taps are symmetric, so the output is aligned with the input
//      (no delay to remove), as `to_16k`'s is.
// Output [rows, 2 * codes_per_row], zero from 2 * lens[b] on. One thread per output sample.

extern "C" __global__ void g711_to_16k(
    const unsigned char* codes, const int* lens, const int codes_per_row, const float* table,
    const float* taps, const int taps_per_side, float* out, const int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int out_per_row = 2 * codes_per_row;
    const int b = i / out_per_row;
    const int o = i - b * out_per_row;
    const int len = min(lens[b], codes_per_row);
    const unsigned char* row = codes + (size_t)b * codes_per_row;
    const int n = o >> 1;
    float v = 0.0f;
    if (n < len) {
        if ((o & 1) == 0) {
            v = table[row[n]];
        } else {
            const int first = n - taps_per_side + 1;
            for (int j = 0; j < 2 * taps_per_side; j++) {
                const int k = first + j;
                if (k >= 0 && k < len) v += taps[j] * table[row[k]];
            }
        }
    }
    out[i] = v;
}
