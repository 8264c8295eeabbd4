/* int8 lm_head GEMM for x86-64 CPUs with AVX512-VNNI (plughost chat_qwen_awq, cpu_head_dtype: int8;
 * compiled on first use together with awq_gemm.c).
 *
 * y[m, n] = s[n] * sum_b a[m, b] * sum_{k in b} xq[m, k] * w[n, k]
 *
 * w: the head's per-row int8 codes (scale s[n]); xq: the activations quantised to int8 per block b of
 * 32 (scale a[m, b]), as llama.cpp's Q8_0 does. VPDPBUSD multiplies 64 unsigned bytes by 64 signed
 * ones per instruction, so the weights are stored as w + 128 (unsigned) and each block's extra
 * 128 * sum xq is taken off once. The integer sums are exact; a decode step reads one byte per weight.
 *
 * Packed weight, tile by tile of 16 rows of the head: w[N/16][K/4][64] bytes; byte 4i + j of chunk c
 * is w[16 t + i, 4c + j] + 128.
 */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Four adjacent int8 values as one 32-bit lane (memcpy: no aliasing or alignment assumption). */
static inline int32_t quad(const int8_t *x) {
    int32_t v;
    memcpy(&v, x, sizeof v);
    return v;
}

#define BLOCK 32

/* Quantise each row's blocks of 32: xq = round(x / a), a = max |x| / 127 (0 for a block of zeros or
   subnormals, whose 127 / max would overflow; NaN for a block holding a NaN or an infinity, so that
   its logits become NaN as with a float head instead of a finite guess). */
static void quantise(const float *x, int64_t M, int64_t K, int8_t *xq, float *a, int32_t *sums) {
    const int64_t blocks = K / BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < blocks; b++) {
            const float *xb = x + m * K + b * BLOCK;
            float top = 0.0f;
            int finite = 1;
            for (int k = 0; k < BLOCK; k++) {
                top = fmaxf(top, fabsf(xb[k]));
                finite &= isfinite(xb[k]) != 0;
            }
            const int normal = finite && top >= FLT_MIN;
            const float scale = !finite ? NAN : normal ? top / 127.0f : 0.0f, inverse = normal ? 127.0f / top : 0.0f;
            int32_t sum = 0;
            for (int k = 0; k < BLOCK; k++) {
                const int32_t q = (int32_t)lrintf(xb[k] * inverse);
                xq[m * K + b * BLOCK + k] = (int8_t)q;
                sum += q;
            }
            a[m * blocks + b] = scale;
            sums[m * blocks + b] = 128 * sum;
        }
}

#define HEAD_KERNEL(MB)                                                                             \
static void head_tile_##MB(const int8_t *xq, const float *a, const int32_t *sums, int64_t K,        \
                           const uint8_t *wt, const float *s, int64_t N, int64_t n0, float *y) {     \
    const int64_t blocks = K / BLOCK;                                                                \
    __m512 out[MB];                                                                                  \
    for (int m = 0; m < MB; m++) out[m] = _mm512_setzero_ps();                                       \
    for (int64_t b = 0; b < blocks; b++) {                                                           \
        __m512i acc[MB];                                                                             \
        for (int m = 0; m < MB; m++) acc[m] = _mm512_setzero_si512();                                \
        for (int c = 0; c < BLOCK / 4; c++) {                                                        \
            const uint8_t *wc = wt + (b * (BLOCK / 4) + c) * 64;                                     \
            _mm_prefetch((const char *)(wc + 4096), _MM_HINT_T0);                                    \
            const __m512i w = _mm512_loadu_si512((const void *)wc);                                  \
            for (int m = 0; m < MB; m++)                                                             \
                acc[m] = _mm512_dpbusd_epi32(acc[m], w,                                              \
                    _mm512_set1_epi32(quad(xq + m * K + b * BLOCK + 4 * c)));                       \
        }                                                                                            \
        for (int m = 0; m < MB; m++) {                                                               \
            const __m512i exact = _mm512_sub_epi32(acc[m], _mm512_set1_epi32(sums[m * blocks + b])); \
            out[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), _mm512_set1_ps(a[m * blocks + b]), out[m]); \
        }                                                                                            \
    }                                                                                                \
    const __m512 sv = _mm512_loadu_ps(s + n0);                                                       \
    for (int m = 0; m < MB; m++) _mm512_storeu_ps(y + m * N + n0, _mm512_mul_ps(out[m], sv));       \
}

HEAD_KERNEL(1) HEAD_KERNEL(2) HEAD_KERNEL(3) HEAD_KERNEL(4) HEAD_KERNEL(5) HEAD_KERNEL(6) HEAD_KERNEL(7) HEAD_KERNEL(8)

typedef void (*head_fn)(const int8_t *, const float *, const int32_t *, int64_t, const uint8_t *, const float *,
                        int64_t, int64_t, float *);
static const head_fn HEAD_TILES[9] = {0,           head_tile_1, head_tile_2, head_tile_3, head_tile_4,
                                      head_tile_5, head_tile_6, head_tile_7, head_tile_8};

/* y[M, N] (fp32) = x[M, K] (fp32) times the packed int8 rows w with row scales s, on `threads` OpenMP
   threads; xq (M * K bytes), a and sums (M * K/32 each) are scratch. Rows go 8 at a time. */
void head_int8_gemm(const float *x, int64_t M, int64_t K, const uint8_t *w, const float *s, int64_t N, int8_t *xq,
                    float *a, int32_t *sums, float *y, int64_t threads) {
    quantise(x, M, K, xq, a, sums);
    const int64_t count = N / 16, blocks = K / BLOCK;
    if (threads < 1) threads = 1;
    if (threads > count) threads = count;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t part = 0; part < threads; part++)
        for (int64_t m0 = 0; m0 < M; m0 += 8) {
            const int64_t mb = M - m0 < 8 ? M - m0 : 8;
            for (int64_t t = count * part / threads; t < count * (part + 1) / threads; t++)
                HEAD_TILES[mb](xq + m0 * K, a + m0 * blocks, sums + m0 * blocks, K, w + t * (K / 4) * 64, s, N,
                               t * 16, y + m0 * N);
        }
}
