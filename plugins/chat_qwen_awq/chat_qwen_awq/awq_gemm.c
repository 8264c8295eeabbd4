/* AWQ int4 GEMM for x86-64 CPUs with AVX512-BF16 (plughost chat_qwen_awq; compiled on first use).
 *
 * y[m, n] = sum_g s[g, n] * (sum_{k in g} x[m, k] * q[n, k] - z[g, n] * sum_{k in g} x[m, k])
 *
 * which is AWQ's w = (q - z) * s per group, factored so that the inner sums multiply bf16
 * activations by the 4-bit codes themselves, as bf16 128 + q (OR-ing q into the bits of 128.0; the
 * extra 128 * sum x leaves with the zero term): such a code is exact in bf16, and the product of two
 * bf16 values is exact in fp32, so VDPBF16PS computes the products without rounding (two per
 * instruction and lane, twice the rate of fp32 FMAs). Only fp32 sums round; AWQ's fp16 scales are
 * used as they are (torch's int4 kernel rounds scales, zeros and its output to bf16).
 *
 * Layout of the packed weight, tile by tile of 16 output columns: w[N/16][K/4][32] bytes; byte j
 * of chunk c of a tile holds the codes of column j/2 of the tile at k = 4c + j%2 (low nibble) and
 * k = 4c + 2 + j%2 (high nibble), the order VDPBF16PS pairs them in.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* Two adjacent bf16 values as one 32-bit lane (memcpy: no aliasing or alignment assumption). */
static inline int32_t pair(const uint16_t *x) {
    int32_t v;
    memcpy(&v, x, sizeof v);
    return v;
}

/* Bytes ahead of each tile's stream to prefetch: the hardware prefetcher alone leaves a one-row
   decode step waiting on memory (24 layers of the 0.5B shape, one thread: 10.4-11.4 ms without,
   8.5 ms at 2048-3072 bytes ahead; 8 rows 21 ms -> 15.6 ms). */
#ifndef PREFETCH
#define PREFETCH 3072
#endif

/* One register block: MB rows x NT tiles of 16 columns, over all of K. */
#define KERNEL(MB, NT)                                                                              \
static void tile_##MB##_##NT(const uint16_t *x, int64_t K, const uint8_t *wt, const uint16_t *s, const uint8_t *z, \
                      int64_t lds, int64_t N, int64_t n0, int64_t G, const float *xs, int64_t groups, float *y) { \
    const __m512i bias = _mm512_set1_epi16(0x4300); /* bf16 128.0: OR-ing a code c into it gives 128 + c */ \
    const __m512i low = _mm512_set1_epi16(0xF);                                                      \
    const int64_t chunks = G / 4, tile_bytes = (K / 4) * 32;                                         \
    __m512 out[NT][MB];                                                                              \
    for (int j = 0; j < NT; j++) for (int m = 0; m < MB; m++) out[j][m] = _mm512_setzero_ps();      \
    for (int64_t g = 0; g < groups; g++) {                                                           \
        __m512 acc[NT][MB], acc2[NT][MB];                                                            \
        for (int j = 0; j < NT; j++) for (int m = 0; m < MB; m++)                                    \
            acc[j][m] = acc2[j][m] = _mm512_setzero_ps();                                            \
        const uint16_t *xg = x + g * G;                                                              \
        for (int64_t c = 0; c < chunks; c++) {                                                       \
            __m512bh xa[MB], xb[MB];                                                                 \
            for (int m = 0; m < MB; m++) {                                                           \
                const uint16_t *xm = xg + m * K + 4 * c;                                             \
                xa[m] = (__m512bh)_mm512_set1_epi32(pair(xm));                                       \
                xb[m] = (__m512bh)_mm512_set1_epi32(pair(xm + 2));                                   \
            }                                                                                        \
            for (int j = 0; j < NT; j++) {                                                           \
                const uint8_t *wc = wt + j * tile_bytes + (g * chunks + c) * 32;                     \
                _mm_prefetch((const char *)(wc + PREFETCH), _MM_HINT_T0);                            \
                __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)wc));           \
                /* (v & 0xF) | bias in one instruction (truth table 0xEA: (a & b) | c) */           \
                __m512bh wa = (__m512bh)_mm512_ternarylogic_epi32(v, low, bias, 0xEA);              \
                __m512bh wb = (__m512bh)_mm512_or_si512(_mm512_srli_epi16(v, 4), bias);              \
                for (int m = 0; m < MB; m++) {                                                       \
                    acc[j][m] = _mm512_dpbf16_ps(acc[j][m], wa, xa[m]);                              \
                    acc2[j][m] = _mm512_dpbf16_ps(acc2[j][m], wb, xb[m]);                            \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        for (int j = 0; j < NT; j++) {                                                               \
            const int64_t at = g * lds + n0 + 16 * j;                                                \
            const __m512 sv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + at)));        \
            const __m512 zv = _mm512_add_ps(                                                         \
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(z + at)))),  \
                _mm512_set1_ps(128.0f));                                                             \
            for (int m = 0; m < MB; m++)                                                             \
                out[j][m] = _mm512_fmadd_ps(sv, _mm512_fnmadd_ps(zv, _mm512_set1_ps(xs[m * groups + g]),  \
                                            _mm512_add_ps(acc[j][m], acc2[j][m])), out[j][m]);      \
        }                                                                                            \
    }                                                                                                \
    for (int j = 0; j < NT; j++) for (int m = 0; m < MB; m++)                                        \
        _mm512_storeu_ps(y + m * N + n0 + 16 * j, out[j][m]);                                        \
}

KERNEL(1, 4) KERNEL(2, 2) KERNEL(3, 2) KERNEL(4, 2) KERNEL(5, 1) KERNEL(6, 1) KERNEL(7, 1) KERNEL(8, 1)
KERNEL(1, 1) KERNEL(2, 1) KERNEL(3, 1) KERNEL(4, 1)

typedef void (*tile_fn)(const uint16_t *, int64_t, const uint8_t *, const uint16_t *, const uint8_t *, int64_t,
                        int64_t, int64_t, int64_t, const float *, int64_t, float *);
/* TILES[mb]: the widest kernel for mb rows (NTS[mb] tiles at once); ONE[mb]: one tile (the tail) */
static const tile_fn TILES[9] = {0, tile_1_4, tile_2_2, tile_3_2, tile_4_2, tile_5_1, tile_6_1, tile_7_1, tile_8_1};
static const int NTS[9] = {0, 4, 2, 2, 2, 1, 1, 1, 1};
static const tile_fn ONE[9] = {0, tile_1_1, tile_2_1, tile_3_1, tile_4_1, tile_5_1, tile_6_1, tile_7_1, tile_8_1};

static float bf16_to_float(uint16_t v) {
    union { uint32_t u; float f; } c;
    c.u = (uint32_t)v << 16;
    return c.f;
}

/* Column tiles [t0, t1) of y for all M rows (8 rows at a time). */
static void tiles(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint16_t *s, const uint8_t *z,
                  int64_t lds, int64_t N, int64_t G, const float *xs, float *y, int64_t t0, int64_t t1) {
    const int64_t groups = K / G;
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
        const int64_t mb = M - m0 < 8 ? M - m0 : 8;
        const uint16_t *xb = x + m0 * K;
        const float *xsb = xs + m0 * groups;
        int64_t t = t0;
        for (; t + NTS[mb] <= t1; t += NTS[mb])
            TILES[mb](xb, K, w + t * (K / 4) * 32, s, z, lds, N, t * 16, G, xsb, groups, y + m0 * N);
        for (; t < t1; t++)
            ONE[mb](xb, K, w + t * (K / 4) * 32, s, z, lds, N, t * 16, G, xsb, groups, y + m0 * N);
    }
}

/* y[M, N] (fp32) = x[M, K] (bf16 bits, rows contiguous) times the packed weight w with fp16 scales s
   and uint8 zero codes z (both [K/G] rows of lds elements, this weight's columns first), on `threads`
   OpenMP threads (torch's own runtime: it is the libgomp already loaded) each taking a share of the
   column tiles; xs is scratch of M * K/G floats (the rows' group sums). */
void awq_gemm(const uint16_t *x, int64_t M, int64_t K, const uint8_t *w, const uint16_t *s, const uint8_t *z,
              int64_t lds, int64_t N, int64_t G, float *xs, float *y, int64_t threads) {
    const int64_t groups = K / G, count = N / 16;
    for (int64_t m = 0; m < M; m++)
        for (int64_t g = 0; g < groups; g++) {
            float sum = 0.0f;
            const uint16_t *xr = x + m * K + g * G;
            for (int64_t k = 0; k < G; k++) sum += bf16_to_float(xr[k]);
            xs[m * groups + g] = sum;
        }
    if (threads <= 1 || count < 2) {
        tiles(x, M, K, w, s, z, lds, N, G, xs, y, 0, count);
        return;
    }
    if (threads > count) threads = count;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t part = 0; part < threads; part++)
        tiles(x, M, K, w, s, z, lds, N, G, xs, y, count * part / threads, count * (part + 1) / threads);
}
