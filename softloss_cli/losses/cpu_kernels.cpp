// Hand-written CPU kernels of the losses' row functions (losses/kernels.py builds and loads them).
//
// Each kernel computes, for the rows [r0, r1) of row-major float32 logits z [B, C], the
// per-row loss values and, where `grad` is not null, the gradient d values / d z in the same
// pass, exactly as the eager row function in Python does (same outputs, same sign and scale
// conventions; the Python docstrings give the formulas).
//
// How it is fast: rows are taken in chunks of about kChunk entries, which stay in cache while a
// kernel makes its few passes over them. Every transcendental (expf, log1pf, logf, powf) runs in
// one flat `omp simd` loop over the whole chunk, so the compiler calls glibc's vector variants
// (libmvec, 8 lanes, <= 4 ulp) with no per-row scalar remainder, which on short rows (C = 30)
// would cost more than the vector body. The per-row passes (max, sums, the CDF's prefix sums,
// the gradient) have no library calls. Short rows (C <= kShortRow) go through transposed
// versions of the kernels: 16 rows at a time, one row per vector lane (load_lanes), so those
// passes become vertical operations across k with no horizontal reduction and no remainder.
//
// No torch headers: this compiles in about a second with `g++ -O3`, and is called through
// ctypes (which releases the GIL, so rows can be split across threads from Python).
#include <algorithm>
#include <functional>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

// Declare glibc's vector variants (libmvec), as <math.h> does only under -ffast-math: with
// them, `omp simd` loops call _ZGV*_expf etc. instead of the scalar functions.
extern "C" {
__attribute__((__simd__("notinbranch"))) float expf(float) noexcept;
__attribute__((__simd__("notinbranch"))) float logf(float) noexcept;
__attribute__((__simd__("notinbranch"))) float log1pf(float) noexcept;
__attribute__((__simd__("notinbranch"))) float powf(float, float) noexcept;
}

namespace {

constexpr float kLooUnderflow = 1e-20f;  // base.LOO_UNDERFLOW
constexpr int64_t kChunk = 4096;        // entries per chunk of rows

inline int64_t chunk_rows(int64_t c) { return c >= kChunk ? 1 : kChunk / c; }

// Scratch buffers of a chunk: `count` arrays of (rows of a chunk) x c floats.
struct Scratch {
  std::vector<float> data;
  int64_t stride;
  Scratch(int64_t c, int count) : data(static_cast<size_t>(chunk_rows(c) * c * count)), stride(chunk_rows(c) * c) {}
  float* operator[](int i) { return data.data() + i * stride; }
};

// In a flat loop: out[j] = f(in[j]) for the chunk's n entries, on libmvec's vector functions.
inline void flat_exp(float* x, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] = expf(x[j]);
}

inline float row_max(const float* z, int64_t c) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t k = 0; k < c; ++k) m = z[k] > m ? z[k] : m;
  return m;
}

inline int64_t first_index_of(const float* z, int64_t c, float v) {
  for (int64_t k = 0; k < c; ++k)
    if (z[k] == v) return k;
  return 0;
}

inline float row_sum(const float* x, int64_t c) {
#if defined(__AVX512F__)
  // 16 lanes with a masked last load: a short row (C = 30) is two loads and one reduction, where
  // the vector loop below ends in a scalar remainder and costs several times more per row.
  if (c <= 64) {
    __m512 acc = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= c; k += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(x + k));
    if (k < c) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (c - k)) - 1u), x + k));
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < c; ++k) s += x[k];
  return s;
}

inline float row_sum_without(const float* x, int64_t c, int64_t skip) {
#if defined(__AVX512F__)
  if (c <= 64) {  // as row_sum, with the skipped entry's lane masked off
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < c; k += 16) {
      uint32_t mask = c - k >= 16 ? 0xFFFFu : (1u << (c - k)) - 1u;
      if (skip >= k && skip < k + 16) mask &= ~(1u << (skip - k));
      acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask), x + k));
    }
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < c; ++k) s += k == skip ? 0.f : x[k];
  return s;
}

// e = exp(z - max z) for n rows of a chunk; m[i]: row i's max. Rows of e at stride ld >= c,
// whose entries past c get 0 (exp(-inf)).
inline void shifted_exp(const float* z, int64_t c, int64_t ld, int64_t n, float* m, float* e) {
  for (int64_t i = 0; i < n; ++i) {
    const float* zr = z + i * c;
    float* er = e + i * ld;
    const float mi = row_max(zr, c);
    m[i] = mi;
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) er[k] = zr[k] - mi;
    for (int64_t k = c; k < ld; ++k) er[k] = -INFINITY;
  }
  flat_exp(e, n * ld);
}

inline void shifted_exp(const float* z, int64_t c, int64_t n, float* m, float* e) { shifted_exp(z, c, c, n, m, e); }

// row(r, zr, e, m) for each row r of [r0, r1): zr its logits, e = exp(zr - m) (C entries, writable
// scratch), m its max. The exponentials of a chunk of rows are taken in one flat loop first.
template <typename Row>
inline void for_each_shifted_row(const float* z, int64_t C, int64_t r0, int64_t r1, Row row) {
  Scratch buf(C, 1);
  std::vector<float> m(chunk_rows(C));
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0);
    const float* zc = z + c0 * C;
    shifted_exp(zc, C, n, m.data(), buf[0]);
    for (int64_t i = 0; i < n; ++i) row(c0 + i, zc + i * C, buf[0] + i * C, m[i]);
  }
}

// c rounded up to whole 8-lane vectors, and a row copied into such a buffer (zeros past c).
inline int64_t padded(int64_t c) { return (c + 7) / 8 * 8; }
inline const float* load_padded(const float* src, float* dst, int64_t c, int64_t cp) {
  std::memcpy(dst, src, c * sizeof(float));
  for (int64_t k = c; k < cp; ++k) dst[k] = 0.f;
  return dst;
}

// sum_{k != skip} exp(z[k]) as (m, s) = (max_{k != skip} z_k, sum_{k != skip} exp(z_k - m)), with
// its own maximum: exact where the terms underflow relative to z[skip] (the leave-one-out
// log-sum-exp of base.log1m_softmax_at; a rare row, so its own loop). Kept as (m, s), not
// m + log s, whose float32 sum rounds to the spacing of m (1e-3 at |m| = 1e4).
struct ShiftedSum {
  float m, s;
};
inline ShiftedSum sum_without(const float* z, int64_t c, int64_t skip) {
  float m = -INFINITY;
  for (int64_t k = 0; k < c; ++k) m = (k != skip && z[k] > m) ? z[k] : m;
  if (m == -INFINITY) return {m, 0.f};
  float s = 0.f;
  for (int64_t k = 0; k < c; ++k) s += k == skip ? 0.f : std::exp(z[k] - m);
  return {m, s};
}

// out[k] = x[0] + ... + x[k]: 8 lanes at a time with AVX2 (a log-step scan inside each
// vector, one add to carry between vectors), sequential otherwise.
inline void inclusive_scan(const float* x, float* out, int64_t n) {
  int64_t k = 0;
  float carry = 0.f;
#if defined(__AVX2__)
  __m256 run = _mm256_setzero_ps();
  for (; k + 8 <= n; k += 8) {
    __m256 v = _mm256_loadu_ps(x + k);
    v = _mm256_add_ps(v, _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(v), 4)));
    v = _mm256_add_ps(v, _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(v), 8)));
    const __m256 low = _mm256_permute2f128_ps(v, v, 0x08);  // [0, lower lane]
    v = _mm256_add_ps(v, _mm256_permute_ps(low, 0xFF));    // + the lower lane's total
    v = _mm256_add_ps(v, run);
    _mm256_storeu_ps(out + k, v);
    run = _mm256_permute_ps(_mm256_permute2f128_ps(v, v, 0x11), 0xFF);  // broadcast v[7]
  }
  if (k) carry = out[k - 1];
#endif
  for (; k < n; ++k) {
    carry += x[k];
    out[k] = carry;
  }
}

// For the n entries of a chunk: lp = log1p(exp(-|z|)), sigmoid(z) into s and sigmoid(-z) into sn,
// from one exp per entry. softplus(z) = max(z, 0) + lp and softplus(-z) = max(-z, 0) + lp, each
// exact (softplus(-z) as softplus(z) - z would cancel in float32 for large z).
inline float pos(float x) { return x > 0.f ? x : 0.f; }  // not fmaxf: its NaN rule makes gcc call it per entry
// e = exp(-|x|), s = sigmoid(x) and sn = 1 - s = sigmoid(-x), neither by a subtraction from 1.
inline void sigmoid_parts(float x, float& e, float& s, float& sn) {
  e = expf(-std::fabs(x));
  const float inv = 1.f / (1.f + e), ei = e * inv;
  s = x >= 0.f ? inv : ei;
  sn = x >= 0.f ? ei : inv;
}

// One entry of a BCE with logits: value softplus(x) - t x, gradient sigmoid(x) - t.
inline void bce_entry(float x, float t, float& value, float& grad) {
  float e, s, sn;
  sigmoid_parts(x, e, s, sn);
  value = pos(x) + log1pf(e) - t * x;
  grad = s - t;
}

#if defined(__AVX512F__)
// Rows up to this many entries take sum_c log1p(e_c) as log prod_c (1 + e_c): one logarithm per
// row, not per entry. Each factor is in [1, 2], so the product of up to 64 stays finite in
// float32; its rounding (about C ulp) is below what a sum of C logarithms rounds.
constexpr int64_t kProductRow = 64;

// prod_k x[k] for a row of c <= 64 entries (16 lanes, a masked last load filled with 1).
inline float row_product(const float* x, int64_t c) {
  __m512 acc = _mm512_set1_ps(1.f);
  int64_t k = 0;
  for (; k + 16 <= c; k += 16) acc = _mm512_mul_ps(acc, _mm512_loadu_ps(x + k));
  if (k < c)
    acc = _mm512_mul_ps(acc, _mm512_mask_loadu_ps(_mm512_set1_ps(1.f), static_cast<__mmask16>((1u << (c - k)) - 1u), x + k));
  return _mm512_reduce_mul_ps(acc);
}

// BCE with logits over the n rows (C <= kProductRow) of a chunk, targets t(j): value[i] =
// sum_c (max(x, 0) - t x) + log prod_c (1 + e), e = exp(-|x|), and g = sigmoid(x) - t.
// `lin` and `one_p` are scratch arrays of n * C; `values` gets the n row values.
template <typename Target>
inline void bce_rows_by_product(const float* x, Target target, int64_t n, int64_t C, float* lin, float* one_p,
                                float* g, float* values) {
#pragma omp simd
  for (int64_t j = 0; j < n * C; ++j) {
    const float t = target(j), xj = x[j], e = expf(-std::fabs(xj)), inv = 1.f / (1.f + e);
    one_p[j] = 1.f + e;
    lin[j] = pos(xj) - t * xj;
    g[j] = (xj >= 0.f ? inv : e * inv) - t;
  }
  for (int64_t i = 0; i < n; ++i) values[i] = row_product(one_p + i * C, C);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) values[i] = logf(values[i]);
  for (int64_t i = 0; i < n; ++i) values[i] += row_sum(lin + i * C, C);
}
#endif

inline void softplus_sigmoid(const float* z, int64_t n, float* lp, float* s, float* sn) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float e, sj, snj;
    sigmoid_parts(z[j], e, sj, snj);
    lp[j] = log1pf(e);
    s[j] = sj;
    sn[j] = snj;
  }
}

// x ** g for x >= 0. kInt: g is the integer gi in 0..15, by squaring (a fixed sequence of
// products: the caller's loop still vectorises, and no powf is evaluated); else powf (0 ** g =
// 0 for g > 0, 1 for g = 0, as torch's pow). The kernels pick kInt outside their loops: a
// runtime test inside would be if-converted, evaluating powf on every lane anyway.
template <bool kInt>
inline float pow_g(float x, float g, int gi) {
  if (kInt) {
    const float x2 = x * x, x4 = x2 * x2, x8 = x4 * x4;
    return ((gi & 1) ? x : 1.f) * ((gi & 2) ? x2 : 1.f) * ((gi & 4) ? x4 : 1.f) * ((gi & 8) ? x8 : 1.f);
  }
  return powf(x, g);
}

// 0 when every label y[r0..r1) is in [0, bound), else the first bad row + 1: checked before any
// row is read, as torch's gather would refuse them (a kernel would read out of bounds).
inline int64_t bad_label(const int64_t* y, int64_t r0, int64_t r1, int64_t bound) {
  if (!y) return 0;
  for (int64_t r = r0; r < r1; ++r)
    if (y[r] < 0 || y[r] >= bound) return r + 1;
  return 0;
}

inline int small_int(float g) { return (g == std::floor(g) && g >= 0.f && g <= 15.f) ? static_cast<int>(g) : -1; }

// --- Short rows, transposed: kLanes rows at a time, one row per vector lane. -----------------
// On short rows (C = 30) a per-row pass is a few vectors plus a horizontal reduction and a
// dependency chain (the CDF's prefix sums), so the kernels above spend most of their time on
// per-row latency. Transposed, t[k * kLanes + l] holds row l's entry k: every per-row reduction,
// scan and max is a vertical operation across k, kLanes rows at once, with no remainders.
constexpr int64_t kLanes = 16;
// The transposed kernels run for C up to kShortRow; those whose row kernel is one softmax pass
// and a few sums (nl, the two-head CE, the kappa statistics, KL to a soft label) only up to kShortSoftmaxRow: past
// it the row kernel is as fast or faster (B = 4096: equal at C = 48, 1.1-1.5x faster at 64).
constexpr int64_t kShortRow = 128;
constexpr int64_t kShortSoftmaxRow = 40;

#if defined(__AVX2__)
// r[0..8) (8 rows of 8) transposed in place: 24 shuffles.
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]),
               t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]),
               t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]),
               t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

// Calls tile(k0, l0) for the 8 x 8 tiles of a whole block (n == kLanes, C >= 8) and returns
// true; the last tile overlaps the one before where 8 does not divide C (it copies some
// entries twice). False (nothing done) for partial blocks, narrow rows or no AVX2.
template <typename Tile>
inline bool for_each_tile([[maybe_unused]] int64_t C, [[maybe_unused]] int64_t n, [[maybe_unused]] Tile tile) {
#if defined(__AVX2__)
  if (n == kLanes && C >= 8) {
    for (int64_t k = 0; k < C; k += 8)
      for (int64_t l0 = 0; l0 < kLanes; l0 += 8) tile(k + 8 <= C ? k : C - 8, l0);
    return true;
  }
#endif
  return false;
}

// t[k * kLanes + l] = rows[l][k] for the block's n <= kLanes rows (each C long, anywhere:
// rows of the logits, or of a weight table picked by label); other lanes get 0.
inline void load_lanes(const float* const* rows, int64_t C, int64_t n, float* t) {
#if defined(__AVX2__)
  if (for_each_tile(C, n, [&](int64_t k0, int64_t l0) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(rows[l0 + i] + k0);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(t + (k0 + i) * kLanes + l0, r[i]);
      }))
    return;
#endif
  if (n < kLanes) std::fill(t, t + C * kLanes, 0.f);
  for (int64_t l = 0; l < n; ++l)
    for (int64_t k = 0; k < C; ++k) t[k * kLanes + l] = rows[l][k];
}

// The block's n rows of row-major src (C apart), as load_lanes.
inline void load_lanes(const float* src, int64_t C, int64_t n, float* t) {
  const float* rows[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) rows[l] = src + (l < n ? l : 0) * C;
  load_lanes(rows, C, n, t);
}

// dst[l * C + k] = t[k * kLanes + l] for the block's n rows.
inline void store_lanes(const float* t, int64_t C, int64_t n, float* dst) {
#if defined(__AVX2__)
  if (for_each_tile(C, n, [&](int64_t k0, int64_t l0) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(t + (k0 + i) * kLanes + l0);
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (l0 + i) * C + k0, r[i]);
      }))
    return;
#endif
  for (int64_t l = 0; l < n; ++l)
    for (int64_t k = 0; k < C; ++k) dst[l * C + k] = t[k * kLanes + l];
}

// The block's labels as 32-bit lanes (0 past n).
inline void load_label_lanes(const int64_t* y, int64_t n, int32_t* yl) {
  for (int64_t l = 0; l < kLanes; ++l) yl[l] = l < n ? static_cast<int32_t>(y[l]) : 0;
}

// e = exp(t - m) with m the per-lane max over k (written to m), and (where s is not null) s the
// per-lane sum of e.
inline void lanes_shifted_exp(const float* t, int64_t C, float* m, float* e, float* s) {
  for (int64_t l = 0; l < kLanes; ++l) m[l] = -INFINITY;
  for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) m[l] = t[k * kLanes + l] > m[l] ? t[k * kLanes + l] : m[l];
  }
  for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) e[k * kLanes + l] = t[k * kLanes + l] - m[l];
  }
  flat_exp(e, C * kLanes);
  if (!s) return;
  for (int64_t l = 0; l < kLanes; ++l) s[l] = 0.f;
  for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) s[l] += e[k * kLanes + l];
  }
}

}  // namespace

namespace {
// cdf_rows for C <= kShortRow, transposed (see load_lanes).
int64_t cdf_rows_short(const float* z, const int64_t* y, const float* gaps, int64_t C, int64_t r0, int64_t r1,
                       float* values, float* grad) {
  std::vector<float> buf(4 * C * kLanes + C);
  float *t = buf.data(), *p = t + C * kLanes, *w = p + C * kLanes, *g = w + C * kLanes, *gp = g + C * kLanes;
  for (int64_t k = 0; k < C; ++k) gp[k] = k == C - 1 ? 0.f : (gaps ? gaps[k] : 1.f);  // no threshold at C - 1
  alignas(64) float m[kLanes], s[kLanes], rest[kLanes], run[kLanes], val[kLanes], pg[kLanes];
  alignas(64) int32_t yl[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(z + b0 * C, C, n, t);
    load_label_lanes(y + b0, n, yl);
    lanes_shifted_exp(t, C, m, p, s);
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      s[l] = 1.f / s[l];
      rest[l] = 0.f;
      run[l] = 0.f;
      val[l] = 0.f;
      pg[l] = 0.f;
    }
    for (int64_t k = 0; k < C; ++k) {  // p, and rest = sum_{j != y} p_j (the exact 1 - p_y)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float pk = p[k * kLanes + l] * s[l];
        p[k * kLanes + l] = pk;
        rest[l] += k == yl[l] ? 0.f : pk;
      }
    }
    for (int64_t k = 0; k < C; ++k) {  // e_k = F_k - 1[k >= y] as a running sum; w_k = gap_k e_k
      const float gk = gp[k];
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        run[l] += k == yl[l] ? -rest[l] : p[k * kLanes + l];
        const float wk = gk * run[l];
        val[l] += wk * run[l];
        w[k * kLanes + l] = wk;
      }
    }
    for (int64_t l = 0; l < n; ++l) values[b0 + l] = val[l];
    if (!grad) continue;
    for (int64_t l = 0; l < kLanes; ++l) run[l] = 0.f;
    for (int64_t k = 0; k < C; ++k) {  // g_k = sum_{i<k} w_i; pg = sum_k p_k g_k
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        g[k * kLanes + l] = run[l];
        pg[l] += p[k * kLanes + l] * run[l];
        run[l] += w[k * kLanes + l];
      }
    }
    for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) g[k * kLanes + l] = p[k * kLanes + l] * (g[k * kLanes + l] - pg[l]);
    }
    store_lanes(g, C, n, grad + b0 * C);
  }
  return 0;
}
}  // namespace

extern "C" {

// ordinal.cdf_rows: sum_{k<C-1} gap_k (F_k - 1[k >= y])^2; grad divided by -2.
int64_t cdf_rows(const float* z, const int64_t* y, const float* gaps, int64_t C, int64_t r0, int64_t r1,
                 float* values, float* grad) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  if (C <= kShortRow) return cdf_rows_short(z, y, gaps, C, r0, r1, values, grad);
  // Rows at a stride padded to whole vectors (p = 0 past C): no loop has a scalar remainder.
  const int64_t Cp = padded(C), R = chunk_rows(Cp);
  std::vector<float> buf(R * Cp + 3 * Cp, 0.f), m(R);
  float *e = buf.data(), *a = e + R * Cp, *b = a + Cp, *gp = b + Cp;
  if (gaps) std::memcpy(gp, gaps, (C - 1) * sizeof(float));  // zeros from C - 1 on: no threshold there
  for (int64_t c0 = r0; c0 < r1; c0 += R) {
    const int64_t n = std::min(R, r1 - c0);
    shifted_exp(z + c0 * C, C, Cp, n, m.data(), e);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = c0 + i, yr = y[r];
      float* p = e + i * Cp;
      const float inv = 1.f / row_sum(p, Cp);
      float rest = 0.f;  // sum_{j != y} p_j, the exact 1 - p_y
#pragma omp simd reduction(+ : rest)
      for (int64_t k = 0; k < Cp; ++k) {
        p[k] *= inv;
        rest += k == yr ? 0.f : p[k];
      }
      const float py = p[yr];
      p[yr] = -rest;
      inclusive_scan(p, a, Cp);  // e_k = F_k - 1[k >= y]
      p[yr] = py;
      for (int64_t k = C - 1; k < Cp; ++k) a[k] = 0.f;  // k = C-1 is no threshold
      float val = 0.f;
      if (gaps) {
#pragma omp simd reduction(+ : val)
        for (int64_t k = 0; k < Cp; ++k) {
          const float w = gp[k] * a[k];
          val += w * a[k];
          a[k] = w;
        }
      } else {
#pragma omp simd reduction(+ : val)
        for (int64_t k = 0; k < Cp; ++k) val += a[k] * a[k];
      }
      values[r] = val;
      if (!grad) continue;
      inclusive_scan(a, b, Cp);  // g_k = sum_{i<k} w_i = b_k - w_k
      float pg = 0.f;
#pragma omp simd reduction(+ : pg)
      for (int64_t k = 0; k < Cp; ++k) pg += p[k] * (b[k] - a[k]);
      float* gr = grad + r * C;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) gr[k] = p[k] * ((b[k] - a[k]) - pg);
    }
  }
  return 0;
}

}  // extern "C"

namespace {
// The block's lanes: for each lane, the first k where t[k] equals m (the first argmax).
inline void lanes_first_argmax(const float* t, const float* m, int64_t C, int32_t* top) {
  for (int64_t l = 0; l < kLanes; ++l) top[l] = 0;
  for (int64_t k = C - 1; k >= 0; --k) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) top[l] = t[k * kLanes + l] == m[l] ? static_cast<int32_t>(k) : top[l];
  }
}

// cdw_rows for C <= kShortRow, transposed. A row where 1 - p_top underflows (rare) is redone
// with the row kernel's scalar leave-one-out formulas after the vector passes.
int64_t cdw_rows_short(const float* z, const int64_t* y, const float* table, int per_class, int64_t C, int64_t r0,
                       int64_t r1, float* values, float* grad) {
  std::vector<float> buf(4 * C * kLanes);
  float *t = buf.data(), *e = t + C * kLanes, *lg = e + C * kLanes, *w = lg + C * kLanes;
  alignas(64) float m[kLanes], inv[kLanes], rest[kLanes], l1t[kLanes], val[kLanes], area[kLanes], wt[kLanes],
      coef[kLanes];
  alignas(64) int32_t top[kLanes];
  const float* wrows[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(z + b0 * C, C, n, t);
    for (int64_t l = 0; l < kLanes; ++l) {
      const int64_t r = b0 + (l < n ? l : 0);
      wrows[l] = per_class ? table + y[r] * C : table + r * C;
    }
    load_lanes(wrows, C, n, w);
    lanes_shifted_exp(t, C, m, e, nullptr);
    lanes_first_argmax(t, m, C, top);
    for (int64_t l = 0; l < kLanes; ++l) rest[l] = 0.f;
    for (int64_t k = 0; k < C; ++k) {  // rest = sum_{k != top} e_k: 1 - p_top = rest / (1 + rest) without rounding
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float ek = e[k * kLanes + l];
        rest[l] += k == top[l] ? 0.f : ek;
      }
    }
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      inv[l] = 1.f / (1.f + rest[l]);
      l1t[l] = logf(rest[l] * inv[l]);  // log(1 - p_top); -inf where it underflows (redone below)
      val[l] = 0.f;
      area[l] = 0.f;
    }
    for (int64_t k = 0; k < C; ++k) {  // -p_k, every p_k <= 1/2 off the top
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float pk = e[k * kLanes + l] * inv[l];
        lg[k * kLanes + l] = k == top[l] ? 0.f : -pk;
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < C * kLanes; ++j) lg[j] = log1pf(lg[j]);
    for (int64_t l = 0; l < kLanes; ++l) wt[l] = w[top[l] * kLanes + l];
    for (int64_t k = 0; k < C; ++k) {  // lg: log1p(-p_k), then w_k p_k / (1 - p_k)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t j = k * kLanes + l;
        const float ej = e[j], pk = k == top[l] ? 0.f : ej * inv[l];
        const float wr = w[j] * pk / (1.f - pk);
        val[l] += w[j] * lg[j];
        area[l] += wr;
        lg[j] = wr;
      }
    }
    for (int64_t l = 0; l < n; ++l) values[b0 + l] = -val[l] - wt[l] * l1t[l];
    if (grad) {
      // w_k r_k - p_k A - w_t p_t p_k / (1 - p_t), with p_k / (1 - p_t) = e_k / rest; at the top p_t (w_t - A)
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) coef[l] = inv[l] * area[l] + wt[l] * inv[l] / rest[l];
      for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t j = k * kLanes + l;
          const float off_top = lg[j] - e[j] * coef[l];
          t[j] = k == top[l] ? inv[l] * (wt[l] - area[l]) : off_top;
        }
      }
      store_lanes(t, C, n, grad + b0 * C);
    }
    for (int64_t l = 0; l < n; ++l) {
      if (!(rest[l] * inv[l] < kLooUnderflow)) continue;
      // 1 - p_top underflowed: log(1 - p_top) and p_k / (1 - p_top) from the leave-one-out sum
      const int64_t r = b0 + l, tl = top[l];
      const float* zr = z + r * C;
      const ShiftedSum loo = sum_without(zr, C, tl);
      values[r] = -val[l] - wt[l] * (((loo.m - m[l]) + std::log(loo.s)) - std::log(1.f + rest[l]));
      if (!grad) continue;
      float* gr = grad + r * C;
      const float rinv = 1.f / loo.s;
      for (int64_t k = 0; k < C; ++k) {
        const int64_t j = k * kLanes + l;
        if (k != tl) gr[k] = lg[j] - e[j] * inv[l] * area[l] - wt[l] * inv[l] * std::exp(zr[k] - loo.m) * rinv;
      }
    }
  }
  return 0;
}

// nl_rows for C <= kShortSoftmaxRow, transposed; rows where rest = sum_{k != l} e_k underflows are
// redone with the row kernel's leave-one-out formulas.
int64_t nl_rows_short(const float* z, const int64_t* label, const uint8_t* positive, float neg_weight, int64_t C,
                      int64_t r0, int64_t r1, float* total, float* ce_out, float* neg_out, float* grad) {
  std::vector<float> buf(2 * C * kLanes);
  float *t = buf.data(), *e = t + C * kLanes;
  alignas(64) float m[kLanes], s[kLanes], rest[kLanes], zl[kLanes], el[kLanes], pos[kLanes], gl[kLanes],
      coef[kLanes];
  alignas(64) int32_t yl[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(z + b0 * C, C, n, t);
    load_label_lanes(label + b0, n, yl);
    lanes_shifted_exp(t, C, m, e, s);
    for (int64_t l = 0; l < kLanes; ++l) {
      rest[l] = zl[l] = el[l] = 0.f;
      pos[l] = l < n && positive[b0 + l] ? 1.f : 0.f;
    }
    for (int64_t k = 0; k < C; ++k) {
      const int32_t k32 = static_cast<int32_t>(k);
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        // (loads outside the conditionals: gcc if-converts, and vectorises, only unconditional loads)
        const float ej = e[k * kLanes + l], tj = t[k * kLanes + l];
        const bool at = k32 == yl[l];
        rest[l] += at ? 0.f : ej;
        zl[l] = at ? tj : zl[l];
        el[l] = at ? ej : el[l];
      }
    }
    alignas(64) float ce[kLanes], neg[kLanes];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const float log_s = logf(s[l]);
      ce[l] = (m[l] - zl[l]) + log_s;
      neg[l] = log_s - logf(rest[l]);
    }
    for (int64_t l = 0; l < n; ++l) {
      const int64_t r = b0 + l;
      if (rest[l] < kLooUnderflow * s[l]) {  // rare: leave-one-out in the log domain
        const ShiftedSum loo = sum_without(z + r * C, C, yl[l]);
        neg[l] = ((m[l] - loo.m) + std::log(s[l])) - std::log(loo.s);
      }
      ce_out[r] = ce[l];
      neg_out[r] = neg[l];
      total[r] = pos[l] != 0.f ? ce[l] : neg_weight * neg[l];
    }
    if (!grad) continue;
    // positive: p_k, p_l - 1 at l; negative: -w p_l e_k / rest off l, w p_l at l
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const float inv = 1.f / s[l], p_l = el[l] * inv;
      coef[l] = pos[l] != 0.f ? inv : -neg_weight * p_l / rest[l];
      gl[l] = pos[l] != 0.f ? p_l - 1.f : neg_weight * p_l;
    }
    for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float off_label = e[k * kLanes + l] * coef[l];
        t[k * kLanes + l] = k == yl[l] ? gl[l] : off_label;
      }
    }
    store_lanes(t, C, n, grad + b0 * C);
    for (int64_t l = 0; l < n; ++l) {
      const int64_t r = b0 + l;
      if (pos[l] != 0.f || !(rest[l] < kLooUnderflow * s[l])) continue;
      const float* zr = z + r * C;
      const ShiftedSum loo = sum_without(zr, C, yl[l]);
      const float c = -neg_weight * el[l] / s[l], rinv = 1.f / loo.s;
      float* gr = grad + r * C;
      for (int64_t k = 0; k < C; ++k)
        if (k != yl[l]) gr[k] = c * std::exp(zr[k] - loo.m) * rinv;
    }
  }
  return 0;
}
}  // namespace

extern "C" {

// ordinal.cdw_rows: -sum_i w_i log(1 - p_i), w = table[y] (per_class) or the row's weights.
int64_t cdw_rows(const float* z, const int64_t* y, const float* table, int per_class, int64_t C, int64_t r0,
                 int64_t r1, float* values, float* grad) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  if (C <= kShortRow) return cdw_rows_short(z, y, table, per_class, C, r0, r1, values, grad);
  // Rows of the chunk at a stride padded to whole vectors (zeros past C): no loop has a scalar
  // remainder, which on short rows (C = 30) costs as much as the vector body.
  const int64_t Cp = padded(C), R = chunk_rows(Cp);
  std::vector<float> buf(2 * R * Cp + Cp), m(R), inv(R), log1m_t(R), rest(R), loo_m(R), loo_s(R);
  float *e = buf.data(), *lg = e + R * Cp, *wp = lg + R * Cp;
  std::vector<int64_t> top(R);
  std::vector<char> underflow(R);
  for (int64_t c0 = r0; c0 < r1; c0 += R) {
    const int64_t n = std::min(R, r1 - c0);
    const float* zc = z + c0 * C;
    shifted_exp(zc, C, Cp, n, m.data(), e);
    for (int64_t i = 0; i < n; ++i) {
      const float* zr = zc + i * C;
      float* er = e + i * Cp;
      const int64_t t = first_index_of(zr, C, m[i]);
      top[i] = t;
      const float rs = row_sum_without(er, Cp, t);  // 1 - p_t = rest / (1 + rest) without rounding
      const float s = 1.f + rs;
      inv[i] = 1.f / s;
      rest[i] = rs;
      underflow[i] = rs * inv[i] < kLooUnderflow;
      if (underflow[i]) {  // rare: its own scalar logs
        const ShiftedSum loo = sum_without(zr, C, t);
        loo_m[i] = loo.m;
        loo_s[i] = loo.s;
        log1m_t[i] = ((loo.m - m[i]) + std::log(loo.s)) - std::log(s);
      } else {
        log1m_t[i] = rs * inv[i];  // log taken below, for the whole chunk in one vector loop
      }
      float* lr = lg + i * Cp;
      const float iv = inv[i];
#pragma omp simd
      for (int64_t k = 0; k < Cp; ++k) lr[k] = k == t ? 0.f : -er[k] * iv;  // -p_k, every p_k <= 1/2 off the top
    }
#pragma omp simd
    for (int64_t j = 0; j < n * Cp; ++j) lg[j] = log1pf(lg[j]);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) log1m_t[i] = underflow[i] ? log1m_t[i] : logf(log1m_t[i]);  // log(1 - p_t)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = c0 + i, t = top[i];
      const float* w = load_padded(per_class ? table + y[r] * C : table + r * C, wp, C, Cp);
      const float* er = e + i * Cp;
      float* lr = lg + i * Cp;  // log1p(-p_k), then w_k p_k / (1 - p_k)
      const float iv = inv[i];
      float val = 0.f, area = 0.f;
#pragma omp simd reduction(+ : val, area)
      for (int64_t k = 0; k < Cp; ++k) {
        const float pk = k == t ? 0.f : er[k] * iv;
        const float wr = w[k] * pk / (1.f - pk);
        val += w[k] * lr[k];
        area += wr;
        lr[k] = wr;
      }
      values[r] = -val - w[t] * log1m_t[i];
      if (!grad) continue;
      float* gr = grad + r * C;
      const float p_t = iv, wp_t = w[t] * p_t;
      // w_k r_k - p_k A - w_t p_t p_k / (1 - p_t), p_k / (1 - p_t) = e_k / rest, or from the log
      // domain where rest underflowed (a rare row: its own scalar loop)
      if (underflow[i]) {
        const float* zr = zc + i * C;
        const float rinv = 1.f / loo_s[i];
        for (int64_t k = 0; k < C; ++k) gr[k] = lr[k] - er[k] * iv * area - wp_t * std::exp(zr[k] - loo_m[i]) * rinv;
      } else {
        const float coef = iv * area + wp_t / rest[i];
#pragma omp simd
        for (int64_t k = 0; k < C; ++k) gr[k] = lr[k] - er[k] * coef;
      }
      gr[t] = p_t * (w[t] - area);
    }
  }
  return 0;
}

// negative.nl_rows: -log p_l where positive, else neg_weight * -log(1 - p_l). Outputs the
// total, and the two terms (ce, neg) of every row.
int64_t nl_rows(const float* z, const int64_t* label, const uint8_t* positive, float neg_weight, int64_t C, int64_t r0,
             int64_t r1, float* total, float* ce_out, float* neg_out, float* grad) {
  if (const int64_t bad = bad_label(label, r0, r1, C)) return bad;
  if (C <= kShortSoftmaxRow) return nl_rows_short(z, label, positive, neg_weight, C, r0, r1, total, ce_out, neg_out, grad);
  for_each_shifted_row(z, C, r0, r1, [&](int64_t r, const float* zr, float* e, float m) {
    const int64_t l = label[r];
    const float s = row_sum(e, C);
    const float rest = row_sum_without(e, C, l);
    const float log_s = std::log(s);
    const float ce = (m - zr[l]) + log_s;
    const bool underflow = rest < kLooUnderflow * s;
    const ShiftedSum loo = underflow ? sum_without(zr, C, l) : ShiftedSum{0.f, 1.f};
    const float neg = underflow ? ((m - loo.m) + log_s) - std::log(loo.s) : log_s - std::log(rest);
    const bool pos = positive[r] != 0;
    ce_out[r] = ce;
    neg_out[r] = neg;
    total[r] = pos ? ce : neg_weight * neg;
    if (!grad) return;
    float* gr = grad + r * C;
    const float inv = 1.f / s;
    const float p_l = e[l] * inv;
    if (pos) {
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) gr[k] = e[k] * inv;
      gr[l] = p_l - 1.f;
      return;
    }
    // w (p_k - p_k / (1 - p_l)) = -w p_l e_k / rest off l, w p_l at l
    const float coef = -neg_weight * p_l;
    if (underflow) {
      const float rinv = 1.f / loo.s;
      for (int64_t k = 0; k < C; ++k) gr[k] = coef * std::exp(zr[k] - loo.m) * rinv;
    } else {
      const float rinv = coef / rest;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) gr[k] = e[k] * rinv;
    }
    gr[l] = neg_weight * p_l;
  });
  return 0;
}

}  // extern "C"

namespace {
// two_head_ce_rows for C <= kShortSoftmaxRow, transposed.
int64_t two_head_ce_rows_short(const float* z, const int64_t* y, int64_t C, int64_t r0, int64_t r1, float* ce_out,
                               float* grad, float* others) {
  std::vector<float> buf(2 * C * kLanes);
  float *t = buf.data(), *e = t + C * kLanes;
  alignas(64) float m[kLanes], s[kLanes], zy[kLanes], ce[kLanes];
  alignas(64) int32_t yl[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(z + b0 * C, C, n, t);
    load_label_lanes(y + b0, n, yl);
    lanes_shifted_exp(t, C, m, e, s);
    for (int64_t l = 0; l < kLanes; ++l) zy[l] = 0.f;
    for (int64_t k = 0; k < C; ++k) {
      const int32_t k32 = static_cast<int32_t>(k);
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float tk = t[k * kLanes + l];
        zy[l] = k32 == yl[l] ? tk : zy[l];
      }
    }
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      ce[l] = (m[l] - zy[l]) + logf(s[l]);
      s[l] = 1.f / s[l];
    }
    for (int64_t l = 0; l < n; ++l) ce_out[b0 + l] = ce[l];
    for (int64_t k = 0; k < C; ++k) {  // e: p; t: the gradient p - onehot(y)
      const int32_t k32 = static_cast<int32_t>(k);
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float pk = e[k * kLanes + l] * s[l];
        const bool at = k32 == yl[l];
        t[k * kLanes + l] = at ? -(1.f - pk) : pk;  // p_y - 1, but -0 (not +0) where p_y = 1
        e[k * kLanes + l] = at ? -1.f : pk;
      }
    }
    if (others) store_lanes(e, C, n, others + b0 * C);
    if (grad) store_lanes(t, C, n, grad + b0 * C);
  }
  return 0;
}

// binary_rows for K <= kShortRow, transposed; kConditional: CORN (a template constant: a runtime
// flag in the loop made gcc accumulate with masked stores, which stall).
template <bool kConditional>
void binary_rows_short(const float* x, const int64_t* y, const float* weights, int64_t K, int64_t r0, int64_t r1,
                       float* values, float* grad) {
  std::vector<float> buf(4 * K * kLanes);
  float *t = buf.data(), *sp = t + K * kLanes, *s = sp + K * kLanes, *sn = s + K * kLanes;
  alignas(64) float val[kLanes];
  alignas(64) int32_t yl[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(x + b0 * K, K, n, t);
    load_label_lanes(y + b0, n, yl);
    softplus_sigmoid(t, K * kLanes, sp, s, sn);
    for (int64_t l = 0; l < kLanes; ++l) val[l] = 0.f;
    // task k < y: softplus(-x) = lp + max(-x, 0), gradient -sigmoid(-x); k >= y: softplus(x), sigmoid(x)
    for (int64_t k = 0; k < K; ++k) {
      const int32_t k32 = static_cast<int32_t>(k);
      const float wk = weights ? weights[k] : 1.f;
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t j = k * kLanes + l;
        const float xj = t[j], spj = sp[j], sj = s[j], snj = sn[j];
        const bool above = k32 < yl[l];
        const float w = (kConditional && k32 > yl[l]) ? 0.f : wk;
        const float sx = above ? -xj : xj;
        sp[j] = w * (spj + pos(sx));  // (summed below: accumulating here, gcc made masked stores, which stall)
        t[j] = above ? -w * snj : w * sj;
      }
    }
    for (int64_t k = 0; k < K; ++k) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) val[l] += sp[k * kLanes + l];
    }
    for (int64_t l = 0; l < n; ++l) values[b0 + l] = val[l];
    if (grad) store_lanes(t, K, n, grad + b0 * K);
  }
}
}  // namespace

extern "C" {

// average_k.two_head_ce_rows: CE, its gradient p - onehot(y), and `others` = p with -1 at y.
// A null `others` (with a gradient): the gradient stands for it, its label entries p_y - 1 (-0
// where p_y = 1) below every probability as the -1 are (by the floats' order keys).
int64_t two_head_ce_rows(const float* z, const int64_t* y, int64_t C, int64_t r0, int64_t r1, float* ce_out,
                      float* grad, float* others) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  if (C <= kShortSoftmaxRow) return two_head_ce_rows_short(z, y, C, r0, r1, ce_out, grad, others);
  for_each_shifted_row(z, C, r0, r1, [&](int64_t r, const float* zr, const float* e, float m) {
    const int64_t yr = y[r];
    const float s = row_sum(e, C), inv = 1.f / s;
    ce_out[r] = (m - zr[yr]) + std::log(s);
    float* o = (others ? others : grad) + r * C;
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) o[k] = e[k] * inv;
    if (grad && others) {
      float* gr = grad + r * C;
      std::memcpy(gr, o, C * sizeof(float));
      gr[yr] = -(1.f - gr[yr]);
    }
    o[yr] = others ? -1.f : -(1.f - o[yr]);  // p_y - 1, but -0 (not +0) where p_y = 1
  });
  return 0;
}

}  // extern "C"

namespace {
// kl_rows for C <= kShortSoftmaxRow, transposed (see load_lanes): the block's rows of q are gathered by
// label straight into lanes, and log s = log sum_k exp(z_k - m) is one vector logf per block.
int64_t kl_rows_short(const float* z, const int64_t* target, const float* q, const float* q_log_q,
                      const float* q_sum, int empty_uniform, int64_t C, int64_t r0, int64_t r1, float* values,
                      float* grad) {
  std::vector<float> buf(3 * C * kLanes);
  float *t = buf.data(), *e = t + C * kLanes, *qt = e + C * kLanes;
  alignas(64) float m[kLanes], s[kLanes], shift[kLanes], dot[kLanes], scale[kLanes], qs[kLanes], w[kLanes],
      zs[kLanes], off[kLanes];
  const float* qrows[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    for (int64_t l = 0; l < kLanes; ++l) {
      const int64_t r = b0 + (l < n ? l : 0);
      qrows[l] = q + (target ? target[r] : r) * C;
    }
    load_lanes(z + b0 * C, C, n, t);
    load_lanes(qrows, C, n, qt);
    lanes_shifted_exp(t, C, m, e, s);
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      shift[l] = m[l] + logf(s[l]);  // log p_k = z_k - shift
      dot[l] = 0.f;
      qs[l] = 0.f;
      zs[l] = 0.f;
      off[l] = 0.f;
    }
    for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        dot[l] += qt[k * kLanes + l] * (t[k * kLanes + l] - shift[l]);
        qs[l] += qt[k * kLanes + l];
        zs[l] += t[k * kLanes + l];
      }
    }
    for (int64_t l = 0; l < kLanes; ++l) {
      if (l >= n) {
        scale[l] = w[l] = 0.f;
      } else if (!q_sum && empty_uniform && !(qs[l] > 0.f)) {  // no positive: the target is 1/C
        values[b0 + l] = shift[l] - zs[l] / static_cast<float>(C);
        scale[l] = 1.f / s[l];
        w[l] = 0.f;
        off[l] = 1.f / static_cast<float>(C);
      } else if (q_sum) {  // KL to the soft label q
        const int64_t row = target ? target[b0 + l] : b0 + l;
        values[b0 + l] = q_log_q[row] - dot[l];
        scale[l] = q_sum[row] / s[l];
        w[l] = 1.f;
      } else {  // normalised: CE to q / sum q (0 where sum q = 0)
        w[l] = qs[l] > 0.f ? 1.f / qs[l] : 0.f;
        values[b0 + l] = -dot[l] * w[l];
        scale[l] = qs[l] > 0.f ? 1.f / s[l] : 0.f;
      }
    }
    if (!grad) continue;
    for (int64_t k = 0; k < C; ++k) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l)
        e[k * kLanes + l] = e[k * kLanes + l] * scale[l] - w[l] * qt[k * kLanes + l] - off[l];
    }
    store_lanes(e, C, n, grad + b0 * C);
  }
  return 0;
}
}  // namespace

extern "C" {

}  // extern "C"

namespace {
// ev_l1_rows for C <= kShortRow, transposed (see load_lanes): E, log s and the gradient's
// factors are vertical operations over the block's 16 rows.
int64_t ev_l1_rows_short(const float* z, const int64_t* y, const float* v, float w, int64_t C, int64_t r0, int64_t r1,
                         float* total, float* ev, float* ce, float* grad) {
  std::vector<float> buf(2 * C * kLanes);
  float *t = buf.data(), *e = t + C * kLanes;
  alignas(64) float m[kLanes], s[kLanes], inv[kLanes], ex[kLanes], sg[kLanes], zy[kLanes], ls[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(z + b0 * C, C, n, t);
    lanes_shifted_exp(t, C, m, e, s);
    for (int64_t l = 0; l < kLanes; ++l) {
      ex[l] = 0.f;
      zy[l] = l < n ? z[(b0 + l) * C + y[b0 + l]] : 0.f;
    }
    for (int64_t k = 0; k < C; ++k) {
      const float vk = v[k];
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) ex[l] += e[k * kLanes + l] * vk;
    }
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      inv[l] = 1.f / s[l];
      ex[l] *= inv[l];  // E = sum_k p_k v_k
      ls[l] = logf(s[l]);
    }
    for (int64_t l = 0; l < n; ++l) {
      const float diff = ex[l] - v[y[b0 + l]];
      sg[l] = static_cast<float>((diff > 0.f) - (diff < 0.f));
      const float a = std::fabs(diff);
      ev[b0 + l] = a;
      const float c = m[l] + ls[l] - zy[l];  // -log p_y
      if (ce) ce[b0 + l] = c;
      total[b0 + l] = w > 0.f ? a + w * c : a;
    }
    if (!grad) continue;
    for (int64_t l = n; l < kLanes; ++l) sg[l] = 0.f;
    for (int64_t k = 0; k < C; ++k) {  // p_k (s (v_k - E) + w)
      const float vk = v[k];
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) e[k * kLanes + l] *= inv[l] * (sg[l] * (vk - ex[l]) + w);
    }
    store_lanes(e, C, n, grad + b0 * C);
    if (w > 0.f)
      for (int64_t l = 0; l < n; ++l) grad[(b0 + l) * C + y[b0 + l]] -= w;
  }
  return 0;
}
}  // namespace

extern "C" {

// ordinal.ev_l1_rows: |E - v_y| + w (-log p_y), E = sum_k p_k v_k; grad p_k (s (v_k - E) + w) - w 1[k = y],
// s = sign(E - v_y). `ce` may be null (w = 0: no CE term).
int64_t ev_l1_rows(const float* z, const int64_t* y, const float* v, float w, int64_t C, int64_t r0, int64_t r1,
                   float* total, float* ev, float* ce, float* grad) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  if (C <= kShortRow) return ev_l1_rows_short(z, y, v, w, C, r0, r1, total, ev, ce, grad);
  for_each_shifted_row(z, C, r0, r1, [&](int64_t r, const float* zr, float* e, float m) {
    const int64_t yr = y[r];
    const float sum = row_sum(e, C), inv = 1.f / sum;
    float ex = 0.f;
#pragma omp simd reduction(+ : ex)
    for (int64_t k = 0; k < C; ++k) ex += e[k] * v[k];
    ex *= inv;
    const float diff = ex - v[yr];
    const float sg = static_cast<float>((diff > 0.f) - (diff < 0.f));
    ev[r] = std::fabs(diff);
    const float c = m + std::log(sum) - zr[yr];
    if (ce) ce[r] = c;
    total[r] = w > 0.f ? ev[r] + w * c : ev[r];
    if (!grad) return;
    float* gr = grad + r * C;
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) gr[k] = e[k] * inv * (sg * (v[k] - ex) + w);
    gr[yr] -= w;
  });
  return 0;
}

// ordinal.kl_rows: KL(q || softmax(z)) = q_log_q - sum_k q_k log p_k; grad p * q_sum - q. With q_sum
// null (multilabel.softmax_ml_rows), the CE to q / sum q instead: -sum_k q_k log p_k / sum q, grad
// p - q / sum q, both 0 on a row with sum q = 0 (with empty_uniform, that row's CE to 1/C);
// q_log_q is not read. With
// `target`, q [N, C], q_log_q [N], q_sum [N] are per-class tables (row target[b], N = q_rows);
// else per row.
int64_t kl_rows(const float* z, const int64_t* target, const float* q, const float* q_log_q, const float* q_sum,
                int empty_uniform, int64_t q_rows, int64_t C, int64_t r0, int64_t r1, float* values, float* grad) {
  if (const int64_t bad = bad_label(target, r0, r1, q_rows)) return bad;
  if (C <= kShortSoftmaxRow)
    return kl_rows_short(z, target, q, q_log_q, q_sum, empty_uniform, C, r0, r1, values, grad);
  for_each_shifted_row(z, C, r0, r1, [&](int64_t r, const float* zr, float* e, float m) {
    const int64_t row = target ? target[r] : r;
    const float* qr = q + row * C;
    const float s = row_sum(e, C);
    const float shift = m + std::log(s);  // log p_k = z_k - shift
    float dot = 0.f, qs = 0.f, zs = 0.f;
    if (q_sum) {
#pragma omp simd reduction(+ : dot)
      for (int64_t k = 0; k < C; ++k) dot += qr[k] * (zr[k] - shift);
    } else {  // the row's sums too (the normalised form)
#pragma omp simd reduction(+ : dot, qs, zs)
      for (int64_t k = 0; k < C; ++k) {
        dot += qr[k] * (zr[k] - shift);
        qs += qr[k];
        zs += zr[k];
      }
    }
    // KL to q; or, without q_sum, CE to q / sum q (0 where sum q = 0, or with empty_uniform
    // the CE to 1/C there)
    const bool uniform_row = !q_sum && empty_uniform && !(qs > 0.f);
    const float w = q_sum ? 1.f : (qs > 0.f ? 1.f / qs : 0.f);
    values[r] = q_sum ? q_log_q[row] - dot : (uniform_row ? shift - zs / static_cast<float>(C) : -dot * w);
    if (!grad) return;
    const float scale = q_sum ? q_sum[row] / s : (qs > 0.f || uniform_row ? 1.f / s : 0.f);
    const float off = uniform_row ? 1.f / static_cast<float>(C) : 0.f;
    float* gr = grad + r * C;
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) gr[k] = e[k] * scale - w * qr[k] - off;
  });
  return 0;
}

}  // extern "C"

namespace {
// kappa_stats for C <= kShortSoftmaxRow, transposed: the same outputs (see kappa_stats), except
// that each whole block of kLanes rows of p is left in lanes (t[k * kLanes + l]), the layout
// kappa_grad_short reads: the two passes must run over the same row ranges.
int64_t kappa_stats_short(const float* z, const int64_t* y, const float* WT, const float* m, const float* class_w,
                          int64_t C, int64_t r0, int64_t r1, float* p, float* obs, float* pm, float* mce, float* pe) {
  std::vector<float> buf(3 * C * kLanes);
  float *t = buf.data(), *e = t + C * kLanes, *w = e + C * kLanes;
  alignas(64) float mx[kLanes], inv[kLanes], o[kLanes], a[kLanes], sq[kLanes], qq[kLanes];
  alignas(64) int32_t yl[kLanes];
  const float* wrows[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    load_lanes(z + b0 * C, C, n, t);
    load_label_lanes(y + b0, n, yl);
    if (WT) {
      for (int64_t l = 0; l < kLanes; ++l) wrows[l] = WT + yl[l < n ? l : 0] * C;
      load_lanes(wrows, C, n, w);
    } else {
      std::fill(w, w + C * kLanes, 0.f);
    }
    // A whole block's probabilities stay in p in lanes (kappa_grad_short reads them so): no
    // transpose out here and none in there.
    float* eb = n == kLanes ? p + b0 * C : e;
    lanes_shifted_exp(t, C, mx, eb, inv);
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      inv[l] = 1.f / inv[l];
      o[l] = a[l] = sq[l] = qq[l] = 0.f;
    }
    for (int64_t k = 0; k < C; ++k) {
      const int32_t k32 = static_cast<int32_t>(k);
      const float mk = WT ? m[k] : 0.f, cw = class_w ? class_w[k] : 1.f;
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t j = k * kLanes + l;
        const float pk = eb[j] * inv[l], wk = w[j];
        eb[j] = pk;
        o[l] += pk * wk;
        a[l] += pk * mk;
        const float err = k32 == yl[l] ? pk - 1.f : pk;
        sq[l] += cw * err * err;
        qq[l] += pk * cw * err;
      }
    }
    if (n < kLanes) store_lanes(e, C, n, p + b0 * C);
    for (int64_t l = 0; l < n; ++l) {
      const int64_t r = b0 + l;
      if (obs) obs[r] = o[l];
      if (pm) pm[r] = a[l];
      if (mce) mce[r] = sq[l] / static_cast<float>(C);
      if (pe) pe[r] = qq[l];
    }
  }
  return 0;
}
}  // namespace

extern "C" {

// The batch kappa losses (and MCE), first pass: p = softmax(z) into `p`, and per row
// obs_b = sum_i p_bi W[i, y_b] (WT: W transposed, row y_b) and pm_b = p_b . m (where `WT` is not
// null), and (where `mce` is not null) the per-class squared error
// mce_b = (1/C) sum_i w_i e_bi^2 and pe_b = sum_i p_bi w_i e_bi, e_bi = p_bi - 1[i = y_b]: every
// per-row sum the gradient needs (kappa_grad), so that pass is a single one.
int64_t kappa_stats(const float* z, const int64_t* y, const float* WT, const float* m, const float* class_w, int64_t C,
                    int64_t r0, int64_t r1, float* p, float* obs, float* pm, float* mce, float* pe) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  if (C <= kShortSoftmaxRow) return kappa_stats_short(z, y, WT, m, class_w, C, r0, r1, p, obs, pm, mce, pe);
  // Null inputs become rows of ones / zeros: no pointer test inside the vectorised loop.
  std::vector<float> ones(class_w ? 0 : C, 1.f), zeros(WT ? 0 : C, 0.f), mx(chunk_rows(C));
  if (!class_w) class_w = ones.data();
  if (!WT) m = zeros.data();
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0);
    shifted_exp(z + c0 * C, C, n, mx.data(), p + c0 * C);  // into p, normalised below
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = c0 + i, yr = y[r];
      float* pr = p + r * C;
      const float* wr = WT ? WT + yr * C : zeros.data();
      const float inv = 1.f / row_sum(pr, C);
      float o = 0.f, a = 0.f, sq = 0.f, q = 0.f;
#pragma omp simd reduction(+ : o, a, sq, q)
      for (int64_t k = 0; k < C; ++k) {
        const float pk = pr[k] * inv;
        pr[k] = pk;
        o += pk * wr[k];
        a += pk * m[k];
        const float err = k == yr ? pk - 1.f : pk;
        sq += class_w[k] * err * err;
        q += pk * class_w[k] * err;
      }
      if (obs) obs[r] = o;
      if (pm) pm[r] = a;
      if (mce) mce[r] = sq / static_cast<float>(C);
      if (pe) pe[r] = q;
    }
  }
  return 0;
}

// The batch kappa losses' chance term: m = W n / N (W transposed in WT), with n_j the count of
// label j among the N labels; checks every label first (returns the first bad row + 1).
int64_t kappa_expected(const int64_t* y, int64_t N, const float* WT, int64_t C, float* m) {
  if (const int64_t bad = bad_label(y, 0, N, C)) return bad;
  std::vector<int64_t> counts(C, 0);
  for (int64_t r = 0; r < N; ++r) ++counts[y[r]];
  std::fill(m, m + C, 0.f);
  for (int64_t j = 0; j < C; ++j) {
    if (!counts[j]) continue;
    const float nj = static_cast<float>(counts[j]);
    const float* wj = WT + j * C;  // W[:, j]
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) m[i] += nj * wj[i];
  }
  const float n_all = static_cast<float>(N);
#pragma omp simd
  for (int64_t i = 0; i < C; ++i) m[i] /= n_all;
  return 0;
}

namespace {
// kappa_grad for C <= kShortSoftmaxRow, transposed, on kappa_stats_short's p (whole blocks in lanes).
void kappa_grad_short(float* p, const int64_t* y, const float* WT, const float* m, float a_wk, float ratio,
                      float a_mce, const float* class_w, const float* obs, const float* pm, const float* pe,
                      int64_t C, int64_t r0, int64_t r1) {
  const float two_c = 2.f / static_cast<float>(C);
  std::vector<float> buf(3 * C * kLanes, 0.f);
  float *t = buf.data(), *g = t + C * kLanes, *w = g + C * kLanes;  // w stays 0 without WT
  alignas(64) float pg[kLanes];
  alignas(64) int32_t yl[kLanes];
  const float* wrows[kLanes];
  for (int64_t b0 = r0; b0 < r1; b0 += kLanes) {
    const int64_t n = std::min(kLanes, r1 - b0);
    float* pb = p + b0 * C;
    const float* pl = pb;  // a whole block is in lanes already
    if (n < kLanes) {
      load_lanes(pb, C, n, t);
      pl = t;
    }
    load_label_lanes(y + b0, n, yl);
    if (WT) {
      for (int64_t l = 0; l < kLanes; ++l) wrows[l] = WT + yl[l < n ? l : 0] * C;
      load_lanes(wrows, C, n, w);
    }
    for (int64_t l = 0; l < kLanes; ++l) {
      const int64_t r = b0 + (l < n ? l : 0);
      pg[l] = (WT ? a_wk * (obs[r] - ratio * pm[r]) : 0.f) + (pe ? a_mce * two_c * pe[r] : 0.f);
    }
    for (int64_t k = 0; k < C; ++k) {
      const int32_t k32 = static_cast<int32_t>(k);
      const float shift = WT ? a_wk * ratio * m[k] : 0.f, cw = a_mce * two_c * (class_w ? class_w[k] : 1.f);
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t j = k * kLanes + l;
        const float pk = pl[j], err = k32 == yl[l] ? pk - 1.f : pk;
        g[j] = pk * (a_wk * w[j] - shift + cw * err - pg[l]);
      }
    }
    store_lanes(g, C, n, pb);
  }
}
}  // namespace

// Second pass, in place on p: grad = p * (g - sum_i p_i g_i) with
// g_i = a_wk (W[i, y] - ratio m_i) + a_mce (2 / C) w_i (p_i - 1[i = y]); the row's
// sum_i p_i g_i = a_wk (obs - ratio pm) + a_mce (2 / C) pe comes from kappa_stats' sums.
int64_t kappa_grad(float* p, const int64_t* y, const float* WT, const float* m, float a_wk, float ratio, float a_mce,
                   const float* class_w, const float* obs, const float* pm, const float* pe, int64_t C, int64_t r0,
                   int64_t r1) {
  if (C <= kShortSoftmaxRow) {
    kappa_grad_short(p, y, WT, m, a_wk, ratio, a_mce, class_w, obs, pm, pe, C, r0, r1);
    return 0;
  }
  const float two_c = 2.f / static_cast<float>(C);
  std::vector<float> ones(class_w ? 0 : C, 1.f), zeros(WT ? 0 : C, 0.f);
  if (!class_w) class_w = ones.data();
  if (!WT) {
    a_wk = 0.f;
    m = zeros.data();
  }
  for (int64_t r = r0; r < r1; ++r) {
    float* pr = p + r * C;
    const int64_t yr = y[r];
    const float* wr = WT ? WT + yr * C : zeros.data();
    const float pg = (WT ? a_wk * (obs[r] - ratio * pm[r]) : 0.f) + (pe ? a_mce * two_c * pe[r] : 0.f);
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) {
      const float err = k == yr ? pr[k] - 1.f : pr[k];
      const float g = a_wk * (wr[k] - ratio * m[k]) + a_mce * two_c * class_w[k] * err;
      pr[k] = pr[k] * (g - pg);
    }
  }
  return 0;
}

// multilabel.bce_rows: sum_c softplus(z_c) - t_c z_c; grad sigmoid(z) - t.
int64_t bce_rows(const float* z, const float* t, int64_t C, int64_t r0, int64_t r1, float* values, float* grad) {
  Scratch buf(C, 3);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0), off = c0 * C;
    float *sp = buf[0], *g = grad ? grad + off : buf[1];  // the gradient straight to its place
    const float *zc = z + off, *tc = t + off;
#if defined(__AVX512F__)
    if (C <= kProductRow) {
      bce_rows_by_product(zc, [&](int64_t j) { return tc[j]; }, n, C, sp, buf[2], g, values + c0);
      continue;
    }
#endif
#pragma omp simd
    for (int64_t j = 0; j < n * C; ++j) bce_entry(zc[j], tc[j], sp[j], g[j]);
    for (int64_t i = 0; i < n; ++i) values[c0 + i] = row_sum(sp + i * C, C);
  }
  return 0;
}

// average_k.bce_one_hot_rows: scale [softplus(-z_y) + neg_weight sum_{c != y} softplus(z_c)].
int64_t bce_one_hot_rows(const float* z, const int64_t* y, float neg_weight, float scale, int64_t C, int64_t r0,
                      int64_t r1, float* values, float* grad) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  Scratch buf(C, 3);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0), off = c0 * C;
    float *sp = buf[0], *s = buf[1], *sn = buf[2];
    const float* zc = z + off;
#if defined(__AVX512F__)
    if (C <= kProductRow) {
      // sum_c log1p(e_c) as log prod_c (1 + e_c) (bce_rows_by_product); the label's own
      // log1p(e_y) and sigmoid(-z_y) one vector pass over the chunk's rows.
      float *lin = sp, *one_p = s;
      float* g = grad ? grad + off : sn;
      const float a = scale * neg_weight;
#pragma omp simd
      for (int64_t j = 0; j < n * C; ++j) {
        const float x = zc[j], e = expf(-std::fabs(x)), inv = 1.f / (1.f + e);
        one_p[j] = 1.f + e;
        lin[j] = pos(x);
        g[j] = a * (x >= 0.f ? inv : e * inv);
      }
      float all[kChunk], zy[kChunk], lpy[kChunk], sny[kChunk];
      for (int64_t i = 0; i < n; ++i) {
        all[i] = row_product(one_p + i * C, C);
        zy[i] = zc[i * C + y[c0 + i]];
      }
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float e = expf(-std::fabs(zy[i])), inv = 1.f / (1.f + e);
        all[i] = logf(all[i]);
        lpy[i] = log1pf(e);
        sny[i] = zy[i] >= 0.f ? e * inv : inv;
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = c0 + i, yr = y[r];
        const float rest = row_sum_without(lin + i * C, C, yr) + (all[i] - lpy[i]);  // sum_{c != y} softplus(z_c)
        values[r] = scale * (neg_weight * rest + (pos(-zy[i]) + lpy[i]));
        if (grad) grad[r * C + yr] = -scale * sny[i];
      }
      continue;
    }
#endif
    softplus_sigmoid(zc, n * C, sp, s, sn);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = c0 + i, yr = y[r];
      float* spr = sp + i * C;
      const float* zr = zc + i * C;
      const float lp_y = spr[yr];
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) spr[k] += pos(zr[k]);  // softplus(z)
      values[r] = scale * (neg_weight * row_sum_without(spr, C, yr) + (pos(-zr[yr]) + lp_y));
      if (!grad) continue;
      float* gr = grad + r * C;
      const float* sr = s + i * C;
      const float a = scale * neg_weight;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) gr[k] = a * sr[k];
      gr[yr] = -scale * sn[i * C + yr];
    }
  }
  return 0;
}

}  // extern "C"

// multilabel.focal_rows (below): -sum_c [a_pos t (1-s)^g log s + a_neg (1-t) s^g log(1-s)]; grad / -1.
template <bool kInt>
void focal_impl(const float* z, const float* t, float gamma, float a_pos, float a_neg, int64_t C, int64_t r0,
                int64_t r1, float* values, float* grad) {
  const int gi = small_int(gamma);
  Scratch buf(C, 3);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0), off = c0 * C;
    float *sp = buf[0], *s = buf[1], *sn = buf[2];
    const float *zc = z + off, *tc = t + off;
    softplus_sigmoid(zc, n * C, sp, s, sn);
    float* g = grad ? grad + off : s;  // the gradient goes straight to its place (s is read first)
#pragma omp simd
    for (int64_t j = 0; j < n * C; ++j) {
      const float ls = -(pos(-zc[j]) + sp[j]);  // log s = -softplus(-z)
      const float lns = -(pos(zc[j]) + sp[j]);  // log(1 - s) = -softplus(z)
      const float wp = pow_g<kInt>(sn[j], gamma, gi), wn = pow_g<kInt>(s[j], gamma, gi);
      const float pos_term = a_pos * wp * ls, neg_term = a_neg * wn * lns;
      const float d_pos = a_pos * wp * (sn[j] - gamma * s[j] * ls);
      const float d_neg = a_neg * wn * (gamma * sn[j] * lns - s[j]);
      sp[j] = neg_term + tc[j] * (pos_term - neg_term);
      g[j] = d_neg + tc[j] * (d_pos - d_neg);
    }
    for (int64_t i = 0; i < n; ++i) values[c0 + i] = -row_sum(sp + i * C, C);
  }
}

// Whether every target entry is 0 or 1 (multi-hot), not a soft target.
inline bool hard_targets(const float* t, int64_t n) {
  int64_t soft = 0;
#pragma omp simd reduction(+ : soft)
  for (int64_t j = 0; j < n; ++j) soft += (t[j] != 0.f) & (t[j] != 1.f);
  return soft == 0;
}

// The logarithms of asl_impl for n entries: lp = log1p(exp(-|z|)) (log s = -(max(-z, 0) + lp)),
// s, 1 - s, and lom = log(1 - p_m) = log(min(1, 1 + clip - s)) (with clip = 0: log(1 - s)).
inline void asl_logs(const float* z, const float* t, float clip, int64_t n, float* lp, float* s, float* sn,
                     float* lom) {
  if (clip > 0.f && hard_targets(t, n)) {
    // Multi-hot targets: each entry needs one logarithm only, lp where t = 1 and lom where t = 0
    // (the other one, finite, is multiplied by 0).
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      float e, sj, snj;
      sigmoid_parts(z[j], e, sj, snj);
      s[j] = sj;
      sn[j] = snj;
      // lom = min(log(1 + clip - s), 0): clamped after the logarithm, not before, as the latter
      // made gcc's code for this loop 1.5x slower. logf of 1 + x, not log1pf(x): half the cost
      // (libmvec), for an absolute error of about 1e-7 per entry (the rounding of 1 + x).
      const float lg = logf(t[j] > 0.5f ? 1.f + e : 1.f + clip - sj);
      lp[j] = lg;
      lom[j] = lg < 0.f ? lg : 0.f;
    }
    return;
  }
  softplus_sigmoid(z, n, lp, s, sn);
  if (clip > 0.f) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) lom[j] = logf(1.f + clip - s[j] < 1.f ? 1.f + clip - s[j] : 1.f);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) lom[j] = -(pos(z[j]) + lp[j]);
  }
}

// multilabel.asl_rows (below): -sum_c [t (1-s)^gp log s + (1-t) p_m^gn log(1 - p_m)], p_m = max(s - clip, 0);
// grad / -1. `detach` treats the weights (1-s)^gp and p_m^gn as constants.
template <bool kInt, bool kClip0, bool kSimple, bool kGn0>
void asl_impl(const float* z, const float* t, float gamma_neg, float gamma_pos, float clip, int detach, int64_t C,
              int64_t r0, int64_t r1, float* values, float* grad) {
  const int gin = small_int(gamma_neg), gip = small_int(gamma_pos);
  const int gim1 = gamma_neg >= 1.f ? small_int(gamma_neg - 1.f) : -1;
  const float gp_grad = detach ? 0.f : gamma_pos;
  Scratch buf(C, 4);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0), off = c0 * C;
    float *sp = buf[0], *s = buf[1], *sn = buf[2], *lom = buf[3];
    const float *zc = z + off, *tc = t + off;
    asl_logs(zc, tc, clip, n * C, sp, s, sn, lom);
    float* g = grad ? grad + off : s;  // the gradient goes straight to its place (s is read first)
#pragma omp simd
    for (int64_t j = 0; j < n * C; ++j) {
      const float sj = s[j], snj = sn[j];
      const float ls = -(pos(-zc[j]) + sp[j]);
      const float pm = clip > 0.f ? (sj - clip > 0.f ? sj - clip : 0.f) : sj;
      const float one_m = clip > 0.f ? (1.f + clip - sj < 1.f ? 1.f + clip - sj : 1.f) : snj;
      const float log_one_m = lom[j];
      const float wp = pow_g<kInt>(snj, gamma_pos, gip);
      const float w_neg = pow_g<kInt>(pm, gamma_neg, gin);
      const float pos_term = ls * wp, neg_term = log_one_m * w_neg;
      // The options are template constants (asl_rows picks the instance): tests of runtime flags
      // inside this loop keep gcc from vectorising it.
      // (1-s)^gp ((1-s) - gp s log s): with gp = 0 (wp = 1) it is 1 - s; detached weights drop the gp term
      const float d_pos = wp * (snj - gp_grad * sj * ls);
      const float dpm = sj * snj;
      const float dn_focal_simple = -sj * w_neg;                                // clip = 0, constant weights
      const float dn_focal = w_neg * (gamma_neg * snj * log_one_m - sj);        // clip = 0
      const float dn_clip_simple = (kGn0 && !(pm > 0.f)) ? 0.f : -dpm * w_neg / one_m;
      // p_m^(gn-1); for 0 < gn < 1, 0 where p_m = 0 (it multiplies terms that are 0 there)
      const float w_m1 = kInt ? pow_g<true>(pm, gamma_neg - 1.f, gim1)
                              : (pm > 0.f ? powf(pm > 0.f ? pm : 1.f, gamma_neg - 1.f) : 0.f);
      const float dn_clip = (w_m1 * log_one_m * gamma_neg - w_neg / one_m) * dpm;
      const float d_neg = kClip0 ? (kSimple ? dn_focal_simple : dn_focal) : (kSimple ? dn_clip_simple : dn_clip);
      g[j] = d_neg + tc[j] * (d_pos - d_neg);
      sp[j] = neg_term + tc[j] * (pos_term - neg_term);
    }
    for (int64_t i = 0; i < n; ++i) values[c0 + i] = -row_sum(sp + i * C, C);
  }
}

extern "C" {

int64_t focal_rows(const float* z, const float* t, float gamma, float a_pos, float a_neg, int64_t C, int64_t r0,
                int64_t r1, float* values, float* grad) {
  if (small_int(gamma) >= 0) {
    focal_impl<true>(z, t, gamma, a_pos, a_neg, C, r0, r1, values, grad);
  } else {
    focal_impl<false>(z, t, gamma, a_pos, a_neg, C, r0, r1, values, grad);
  }
  return 0;
}

int64_t asl_rows(const float* z, const float* t, float gamma_neg, float gamma_pos, float clip, int detach, int64_t C,
              int64_t r0, int64_t r1, float* values, float* grad) {
  // integer exponents throughout (p_m^(gn-1) too, where the gradient needs it): no powf
  const bool ints = small_int(gamma_neg) >= 0 && small_int(gamma_pos) >= 0 &&
                    (gamma_neg == 0.f || gamma_neg >= 1.f);
  using Impl = void (*)(const float*, const float*, float, float, float, int, int64_t, int64_t, int64_t, float*, float*);
  // [ints][clip == 0][detach or gamma_neg == 0][gamma_neg == 0]
  static const Impl impls[2][2][2][2] = {
      {{{asl_impl<false, false, false, false>, asl_impl<false, false, false, true>},
        {asl_impl<false, false, true, false>, asl_impl<false, false, true, true>}},
       {{asl_impl<false, true, false, false>, asl_impl<false, true, false, true>},
        {asl_impl<false, true, true, false>, asl_impl<false, true, true, true>}}},
      {{{asl_impl<true, false, false, false>, asl_impl<true, false, false, true>},
        {asl_impl<true, false, true, false>, asl_impl<true, false, true, true>}},
       {{asl_impl<true, true, false, false>, asl_impl<true, true, false, true>},
        {asl_impl<true, true, true, false>, asl_impl<true, true, true, true>}}}};
  const bool gn0 = gamma_neg == 0.f;
  impls[ints][clip == 0.f][detach || gn0][gn0](z, t, gamma_neg, gamma_pos, clip, detach, C, r0, r1, values, grad);
  return 0;
}

// average_k.epr_batch, first pass: s = sigmoid(z); per row ssum = sum_c s_c, sy = s_y and
// pos = softplus(-z_y) / C (the positive term); where g is not null, g = s (1 - s) = e / (1 + e)^2
// (e = exp(-|z|)), the regulariser's gradient up to the batch's factor (epr_grad).
int64_t epr_stats(const float* z, const int64_t* y, int64_t C, int64_t r0, int64_t r1, float* g, float* ssum,
                  float* pos_term, float* sy) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  Scratch buf(C, 2);
  std::vector<float> zy(chunk_rows(C));
  const float inv_c = 1.f / static_cast<float>(C);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0), off = c0 * C;
    const float* zc = z + off;
    float *s = buf[0], *gc = g ? g + off : buf[1];
#pragma omp simd
    for (int64_t j = 0; j < n * C; ++j) {
      float e, sj, snj;
      sigmoid_parts(zc[j], e, sj, snj);
      s[j] = sj;
      gc[j] = sj * snj;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t yr = y[c0 + i];
      ssum[c0 + i] = row_sum(s + i * C, C);
      sy[c0 + i] = s[i * C + yr];
      zy[i] = zc[i * C + yr];
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) pos_term[c0 + i] = (pos(-zy[i]) + log1pf(expf(-std::fabs(zy[i])))) * inv_c;
  }
  return 0;
}

// average_k.epr_batch, second pass, in place: g = a g (the regulariser), then at each row's
// label g_y += b (s_y - 1) (the positive term's d softplus(-z_y) / dz_y, times b).
int64_t epr_grad(float* g, const int64_t* y, float a, float b, const float* sy, int64_t C, int64_t r0, int64_t r1) {
  float* gr = g + r0 * C;
#pragma omp simd
  for (int64_t j = 0; j < (r1 - r0) * C; ++j) gr[j] *= a;
  for (int64_t r = r0; r < r1; ++r) g[r * C + y[r]] += b * (sy[r] - 1.f);
  return 0;
}

// ordinal_heads.binary_rows for CORAL/CORN: sum_k w_k softplus(sign_k x_k), sign_k = -1 where
// y > k, +1 where y <= k; `conditional` (CORN) drops the tasks k > y. grad w sign sigmoid(sign x).
int64_t binary_rows(const float* x, const int64_t* y, const float* weights, int conditional, int64_t K, int64_t r0,
                 int64_t r1, float* values, float* grad) {
  if (const int64_t bad = bad_label(y, r0, r1, K + 1)) return bad;
  if (K <= kShortRow) {
    (conditional ? binary_rows_short<true> : binary_rows_short<false>)(x, y, weights, K, r0, r1, values, grad);
    return 0;
  }
  std::vector<float> ones(weights ? 0 : K, 1.f);
  if (!weights) weights = ones.data();
  Scratch buf(K, 3);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(K)) {
    const int64_t n = std::min(chunk_rows(K), r1 - c0), off = c0 * K;
    float *sp = buf[0], *s = buf[1], *sn = buf[2];
    const float* xc = x + off;
    softplus_sigmoid(xc, n * K, sp, s, sn);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = c0 + i, yr = y[r];
      const float *xr = xc + i * K, *spr = sp + i * K, *sr = s + i * K, *snr = sn + i * K;
      float* gr = grad ? grad + r * K : nullptr;
      float val = 0.f;
      // task k < y: softplus(-x) = softplus(x) - x, gradient -sigmoid(-x); k >= y: softplus(x), sigmoid(x)
#pragma omp simd reduction(+ : val)
      for (int64_t k = 0; k < K; ++k) {
        const bool above = k < yr;
        const float w = (conditional && k > yr) ? 0.f : weights[k];
        val += w * (spr[k] + pos(above ? -xr[k] : xr[k]));
      }
      values[r] = val;
      if (!gr) continue;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) {
        const float w = (conditional && k > yr) ? 0.f : weights[k];
        gr[k] = k < yr ? -w * snr[k] : w * sr[k];
      }
    }
  }
  return 0;
}

}  // extern "C"

extern "C" {

}  // extern "C"

// Unsigned keys in the floats' order (negatives flipped whole, positives with the sign bit set).
inline uint32_t order_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Whether an entry of order key k at index j is among the selected: above the boundary key kb,
// or one of its ties up to index last_tie (ties are taken in index order).
template <typename Index>
inline bool chosen(uint32_t k, uint32_t kb, Index j, Index last_tie) {
  return (k > kb) | ((k == kb) & (j <= last_tie));
}

constexpr int64_t kKeyBlock = 256;  // entries whose order keys are made at once, in a vector loop

// keys[0, len) = the order keys of others[j0, j0 + len), len <= kKeyBlock.
inline void block_keys(const float* others, int64_t j0, int64_t len, uint32_t* keys) {
#pragma omp simd
  for (int64_t u = 0; u < len; ++u) keys[u] = order_key(others[j0 + u]);
}

// The count largest of others[0, n) (1 <= count <= n), ties in index order: the entries with
// key > *kb, and those with key == *kb up to index *last_tie. Linear time, a radix select on the
// order keys: an 11-bit histogram of all entries finds the bin holding the count-th largest; the
// entries of that bin (few) are refined on the next 11 bits, then on the last 10.
static void select_largest(const float* others, int64_t n, int64_t count, uint32_t* kb, int64_t* last_tie);

// The count-th largest of keys (all >= base, 1 <= count <= keys.size()): a radix select, 11 bits
// of key - base at a time from the top. std::nth_element on the ~1.3 count candidates of
// select_largest_sampled cost more than the rest of it together (a mispredicted branch per
// comparison); a histogram pass has no data-dependent branch.
static uint32_t kth_largest_key(const std::vector<uint32_t>& all, uint32_t base, int64_t count) {
  uint32_t top = base;
  for (const uint32_t k : all) top = k > top ? k : top;
  int bits = top > base ? 32 - __builtin_clz(top - base) : 0;
  std::vector<uint32_t> keys;
  const std::vector<uint32_t>* cur = &all;
  int64_t need = count;
  while (true) {
    const int shift = bits > 11 ? bits - 11 : 0;
    int64_t hist[2048] = {0};
    for (const uint32_t k : *cur) ++hist[(k - base) >> shift];
    int64_t bin = 2047;
    while (bin > 0 && hist[bin] < need) need -= hist[bin--];
    const uint32_t lo = base + (static_cast<uint32_t>(bin) << shift);
    if (shift == 0) return lo;
    std::vector<uint32_t> next;
    next.reserve(static_cast<size_t>(hist[bin]));
    for (const uint32_t k : *cur)
      if (((k - base) >> shift) == static_cast<uint32_t>(bin)) next.push_back(k);
    keys.swap(next);
    cur = &keys;
    base = lo;
    bits = shift;
  }
}

// select_largest when count is a small part of n: a strided sample (n / 64 entries, 2k..16k) gives a
// bound with somewhat more than count entries above it (expected 1.25 count + 64); one pass
// collects those candidates in index order, and the selection runs on them alone. False (and
// nothing set) when fewer than count entries pass the bound: the caller selects on all.
static bool select_largest_sampled(const float* others, int64_t n, int64_t count, uint32_t* kb, int64_t* last_tie) {
  const int64_t target = std::clamp<int64_t>(n / 64, 2048, 16384);  // sampled entries
  const int64_t step = (n + target - 1) / target;
  std::vector<uint32_t> sample;
  sample.reserve(static_cast<size_t>(n / step + 1));
  for (int64_t j = 0; j < n; j += step) sample.push_back(order_key(others[j]));
  const int64_t m = static_cast<int64_t>(sample.size());
  const int64_t r = std::min(m, static_cast<int64_t>(1.25 * static_cast<double>(count) * m / n) + 64);
  std::nth_element(sample.begin(), sample.begin() + (m - r), sample.end());
  const uint32_t bound = sample[m - r];
  // Candidates written at nc, with room for 16 more past it (the vector path stores 16 at once).
  size_t cap = static_cast<size_t>(r * step + 64) + 16, nc_ = 0;
  std::vector<int64_t> cand(cap);
  std::vector<uint32_t> cand_keys(cap);
  auto room = [&]() {
    if (nc_ + 16 > cap) {
      cap *= 2;
      cand.resize(cap);
      cand_keys.resize(cap);
    }
  };
  int64_t j0 = 0;
#if defined(__AVX512F__)
  // 16 entries at a time: order keys (u ^ (sign-extended sign | sign bit)), an unsigned compare
  // with the bound, and the passing keys and indices compressed in registers and stored whole;
  // one entry per step (the loop below) took longer than the rest of the selection.
  {
    const __m512i vbound = _mm512_set1_epi32(static_cast<int32_t>(bound));
    const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j0 + 16 <= n && j0 + 16 <= INT32_MAX; j0 += 16) {
      const __m512i u = _mm512_loadu_si512(others + j0);
      const __m512i key = _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), sign));
      const __mmask16 pass = _mm512_cmp_epu32_mask(key, vbound, _MM_CMPINT_NLT);
      if (!pass) continue;
      room();
      const __m512i idx = _mm512_maskz_compress_epi32(pass, _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(j0))));
      _mm512_storeu_si512(cand_keys.data() + nc_, _mm512_maskz_compress_epi32(pass, key));
      _mm512_storeu_si512(cand.data() + nc_, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(idx)));
      _mm512_storeu_si512(cand.data() + nc_ + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(idx, 1)));
      nc_ += static_cast<size_t>(__builtin_popcount(pass));
    }
  }
#endif
  uint32_t kbuf[kKeyBlock];
  for (; j0 < n; j0 += kKeyBlock) {
    const int64_t len = std::min(kKeyBlock, n - j0);
    block_keys(others, j0, len, kbuf);
    for (int64_t u = 0; u < len; ++u) {  // without a branch (room for one more)
      if (nc_ + 1 > cap - 16) room();
      cand[nc_] = j0 + u;
      cand_keys[nc_] = kbuf[u];
      nc_ += kbuf[u] >= bound;
    }
  }
  cand.resize(nc_);
  cand_keys.resize(nc_);
  const int64_t nc = static_cast<int64_t>(cand.size());
  if (nc < count) return false;
  *kb = kth_largest_key(cand_keys, bound, count);
  int64_t need = count;  // less those above the boundary: the ties to take, in index order
  for (const uint32_t k : cand_keys) need -= k > *kb;
  for (int64_t h = 0; h < nc; ++h)
    if (cand_keys[h] == *kb && --need == 0) {
      *last_tie = cand[h];
      return true;
    }
  *last_tie = n - 1;  // (not reached: the count-th largest is among the candidates)
  return true;
}

static void select_largest(const float* others, int64_t n, int64_t count, uint32_t* kb, int64_t* last_tie) {
  if (n >= 65536 && count * 8 <= n && select_largest_sampled(others, n, count, kb, last_tie)) return;
  // The bin of h[0..bins) holding the need-th largest entry, counted from the top; need becomes
  // the rank within that bin.
  auto find_bin = [](const std::vector<int64_t>& h, int64_t& need) {
    int64_t bin = static_cast<int64_t>(h.size()) - 1;
    while (bin > 0 && h[bin] < need) need -= h[bin--];
    return static_cast<uint32_t>(bin);
  };
  // The top 11 bits first, counted in 4 interleaved histograms: probabilities cluster in a few
  // bins, and one histogram would chain each increment on the store of the previous one.
  uint32_t kbuf[kKeyBlock];
  std::vector<int64_t> hist(2048, 0);
  {
    std::vector<int64_t> sub(4 * 2048, 0);
    for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
      const int64_t m = std::min(kKeyBlock, n - j0);
      block_keys(others, j0, m, kbuf);
      int64_t u = 0;
      for (; u + 4 <= m; u += 4)
        for (int64_t v = 0; v < 4; ++v) ++sub[v * 2048 + (kbuf[u + v] >> 21)];
      for (; u < m; ++u) ++sub[kbuf[u] >> 21];
    }
    for (int64_t v = 0; v < 4; ++v)
      for (int64_t k = 0; k < 2048; ++k) hist[k] += sub[v * 2048 + k];
  }
  int64_t need = count;
  const uint32_t b1 = find_bin(hist, need);
  // The indices in bin b1, in index order, written without a branch (one slot to spare).
  std::vector<int64_t> members(static_cast<size_t>(hist[b1]) + 1);
  int64_t found = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
    const int64_t m = std::min(kKeyBlock, n - j0);
    block_keys(others, j0, m, kbuf);
    for (int64_t u = 0; u < m; ++u) {
      members[found] = j0 + u;
      found += (kbuf[u] >> 21) == b1;
    }
  }
  members.resize(static_cast<size_t>(found));
  std::fill(hist.begin(), hist.end(), 0);
  for (const int64_t j : members) ++hist[(order_key(others[j]) >> 10) & 0x7FFu];
  const uint32_t b2 = find_bin(hist, need);
  std::vector<int64_t> inner;
  for (const int64_t j : members)
    if (((order_key(others[j]) >> 10) & 0x7FFu) == b2) inner.push_back(j);
  hist.assign(1024, 0);
  for (const int64_t j : inner) ++hist[order_key(others[j]) & 0x3FFu];
  const uint32_t b3 = find_bin(hist, need);
  *kb = (b1 << 21) | (b2 << 10) | b3;  // the count-th largest; `need` of its ties are taken
  *last_tie = n - 1;
  for (const int64_t j : inner)  // in index order
    if (order_key(others[j]) == *kb && --need == 0) {
      *last_tie = j;
      return;
    }
}

extern "C" {

// average_k.pseudo_bce_rows's selection: sel = (the order key kb of the `count`-th largest entry
// of `others`, the index of the last of its ties taken), ties taken in index order, as the eager
// path's topk of candidates takes them; `boundary` gets that entry's value. Each row's label
// holds a negative value (-1, or p_y - 1 from two_head_ce_rows), so it is never among them.
int64_t pseudo_select(const float* others, const int64_t* y, int64_t B, int64_t C, int64_t count, int64_t* sel,
                      float* boundary) {
  if (const int64_t bad = bad_label(y, 0, B, C)) return bad;
  uint32_t kb = 0;
  int64_t last_tie = 0;
  select_largest(others, B * C, count, &kb, &last_tie);
  sel[0] = kb;
  sel[1] = last_tie;
  *boundary = others[last_tie];
  return 0;
}

// average_k.batch_pseudo_labels: pseudo [B, C] = 1 at the entries pseudo_select chooses and at
// each row's label y, else 0.
int64_t batch_pseudo_labels(const float* others, const int64_t* y, int64_t B, int64_t C, int64_t count,
                            float* pseudo, float* boundary) {
  int64_t sel[2];
  if (const int64_t bad = pseudo_select(others, y, B, C, count, sel, boundary)) return bad;
  const uint32_t kb = static_cast<uint32_t>(sel[0]);
  const int64_t last_tie = sel[1];
#pragma omp simd
  for (int64_t j = 0; j < B * C; ++j) pseudo[j] = chosen(order_key(others[j]), kb, j, last_tie) ? 1.f : 0.f;
  for (int64_t i = 0; i < B; ++i) pseudo[i * C + y[i]] = 1.f;
  return 0;
}

// average_k.pseudo_bce_rows: bce_rows(a, pseudo) with the pseudo-labels of batch_pseudo_labels
// read off `others` and sel = (kb, last_tie) of pseudo_select as each entry is reached (never
// written out): sum_c softplus(a_c) - t_c a_c, grad sigmoid(a) - t.
int64_t pseudo_bce_rows(const float* a, const float* others, const int64_t* y, int64_t kb, int64_t last_tie,
                        int64_t C, int64_t r0, int64_t r1, float* values, float* grad) {
  if (const int64_t bad = bad_label(y, r0, r1, C)) return bad;
  const uint32_t kb32 = static_cast<uint32_t>(kb);
  Scratch buf(C, 3);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk_rows(C)) {
    const int64_t n = std::min(chunk_rows(C), r1 - c0), off = c0 * C;
    float *sp = buf[0], *g = grad ? grad + off : buf[1];  // the gradient straight to its place
    const float *ac = a + off, *oc = others + off;
    // entries j <= ties_to of this chunk: ties taken (int32 compares: 8 lanes, not 4)
    const int32_t ties_to = static_cast<int32_t>(std::clamp<int64_t>(last_tie - off, -1, n * C));
#if defined(__AVX512F__)
    if (C <= kProductRow) {
      bce_rows_by_product(
          ac, [&](int64_t j) { return chosen(order_key(oc[j]), kb32, static_cast<int32_t>(j), ties_to) ? 1.f : 0.f; },
          n, C, sp, buf[2], g, values + c0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t yr = y[c0 + i];  // the label: t = 1 (its `others` entry, -1, gave t = 0)
        values[c0 + i] -= ac[i * C + yr];
        g[i * C + yr] -= 1.f;
      }
      continue;
    }
#endif
#pragma omp simd
    for (int64_t j = 0; j < n * C; ++j) {
      const float t = chosen(order_key(oc[j]), kb32, static_cast<int32_t>(j), ties_to) ? 1.f : 0.f;
      bce_entry(ac[j], t, sp[j], g[j]);
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t yr = y[c0 + i];  // the label: t = 1 (its `others` entry, -1, gave t = 0)
      values[c0 + i] = row_sum(sp + i * C, C) - ac[i * C + yr];
      g[i * C + yr] -= 1.f;
    }
  }
  return 0;
}

}  // extern "C"
