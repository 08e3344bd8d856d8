// Hand-written CPU kernels of the losses' row functions (losses/kernels.py builds and loads them).
//
// Each kernel computes, for the rows [r0, r1) of row-major float32 logits z [B, C], the
// per-row loss values and, where `grad` is not null, the gradient d values / d z in the same
// pass, exactly as the eager row function in Python does (same outputs, same sign and scale
// conventions; the Python docstrings give the formulas). A row is read from memory once and
// stays in cache while its few loops run; the element loops are `omp simd` loops, so the
// compiler vectorises them and calls glibc's vector `expf`/`log1pf`/`powf` (libmvec, <= 4 ulp).
// Only the two prefix sums of the CDF kernel are sequential, done 8 lanes at a time with AVX2.
//
// No torch headers: this compiles in about a second with `g++ -O3`, and is called through
// ctypes (which releases the GIL, so rows can be split across threads from Python).
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

// e[k] = exp(z[k] - m); returns sum_k e[k].
inline float exp_shifted(const float* z, float m, float* e, int64_t c) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < c; ++k) {
    const float v = expf(z[k] - m);
    e[k] = v;
    s += v;
  }
  return s;
}

// sum_{k != skip} exp(z[k]) as (m, s) = (max_{k != skip} z_k, sum_{k != skip} exp(z_k - m)), with
// its own maximum: exact where the terms underflow relative to z[skip] (the leave-one-out
// log-sum-exp of base.log1m_softmax_at). Kept as (m, s), not m + log s, whose float32 sum rounds
// to the spacing of m (1e-3 at |m| = 1e4).
struct ShiftedSum {
  float m, s;
};
inline ShiftedSum sum_without(const float* z, int64_t c, int64_t skip) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t k = 0; k < c; ++k) m = (k != skip && z[k] > m) ? z[k] : m;
  if (m == -INFINITY) return {m, 0.f};
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < c; ++k) s += k == skip ? 0.f : expf(z[k] - m);
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

// softplus(z) = max(z, 0) + log1p(exp(-|z|)), sigmoid(z) and sigmoid(-z), from one exp.
struct SoftplusSigmoid {
  float sp, s, sn;
};
#pragma omp declare simd notinbranch
inline SoftplusSigmoid softplus_sigmoid(float z) {
  const float e = expf(-fabsf(z));
  const float inv = 1.f / (1.f + e);
  const float ei = e * inv;
  return {fmaxf(z, 0.f) + log1pf(e), z >= 0.f ? inv : ei, z >= 0.f ? ei : inv};
}

// x ** g for x >= 0: repeated products when g is a small integer (`gi` >= 0), else powf
// (0 ** g = 0 for g > 0, 1 for g = 0, as torch's pow).
#pragma omp declare simd notinbranch uniform(g, gi)
inline float pow_g(float x, float g, int gi) {
  if (gi >= 0) {
    float out = 1.f;
    for (int i = 0; i < gi; ++i) out *= x;
    return out;
  }
  return powf(x, g);
}

inline int small_int(float g) { return (g == std::floor(g) && g >= 0.f && g <= 8.f) ? static_cast<int>(g) : -1; }

}  // namespace

extern "C" {

// ordinal.cdf_rows: sum_{k<C-1} gap_k (F_k - 1[k >= y])^2; grad divided by -2.
void cdf_rows(const float* z, const int64_t* y, const float* gaps, int64_t C, int64_t r0, int64_t r1,
              float* values, float* grad) {
  std::vector<float> buf(3 * C);
  float *p = buf.data(), *a = p + C, *b = a + C;
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const int64_t yr = y[r];
    const float m = row_max(zr, C);
    const float s = exp_shifted(zr, m, p, C);
    const float inv = 1.f / s;
    float rest = 0.f;  // sum_{j != y} p_j, the exact 1 - p_y
#pragma omp simd reduction(+ : rest)
    for (int64_t k = 0; k < C; ++k) {
      p[k] *= inv;
      rest += k == yr ? 0.f : p[k];
    }
    const float py = p[yr];
    p[yr] = -rest;
    inclusive_scan(p, a, C);  // e_k = F_k - 1[k >= y]
    p[yr] = py;
    a[C - 1] = 0.f;
    float val = 0.f;
#pragma omp simd reduction(+ : val)
    for (int64_t k = 0; k < C; ++k) {
      const float w = gaps && k < C - 1 ? gaps[k] * a[k] : a[k];
      val += w * a[k];
      a[k] = w;
    }
    values[r] = val;
    if (!grad) continue;
    inclusive_scan(a, b, C);  // g_k = sum_{i<k} w_i = b_k - w_k
    float pg = 0.f;
#pragma omp simd reduction(+ : pg)
    for (int64_t k = 0; k < C; ++k) pg += p[k] * (b[k] - a[k]);
    float* gr = grad + r * C;
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) gr[k] = p[k] * ((b[k] - a[k]) - pg);
  }
}

// ordinal.cdw_rows: -sum_i w_i log(1 - p_i), w = table[y] (per_class) or the row's weights.
void cdw_rows(const float* z, const int64_t* y, const float* table, int per_class, int64_t C, int64_t r0,
              int64_t r1, float* values, float* grad) {
  std::vector<float> buf(C);
  float* e = buf.data();
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const float* w = per_class ? table + y[r] * C : table + r * C;
    const float m = row_max(zr, C);
    const int64_t t = first_index_of(zr, C, m);
    float rest = 0.f;  // sum_{k != t} e_k: 1 - p_t = rest / (1 + rest) without rounding
#pragma omp simd reduction(+ : rest)
    for (int64_t k = 0; k < C; ++k) {
      const float v = expf(zr[k] - m);
      e[k] = v;
      rest += k == t ? 0.f : v;
    }
    const float s = 1.f + rest;
    const float inv = 1.f / s;
    const float log_s = logf(s);
    const bool underflow = rest * inv < kLooUnderflow;
    // log(1 - p_t); the off-top ratio p_k / (1 - p_t) = e_k / rest, or exp(z_k - lse_rest)
    const ShiftedSum loo = underflow ? sum_without(zr, C, t) : ShiftedSum{0.f, 1.f};
    const float log1m_t = underflow ? ((loo.m - m) + logf(loo.s)) - log_s : logf(rest) - log_s;
    const float p_t = inv;
    const float w_t = w[t];
    float val = 0.f, area = 0.f;
#pragma omp simd reduction(+ : val, area)
    for (int64_t k = 0; k < C; ++k) {
      const float pk = k == t ? 0.f : e[k] * inv;  // every p_k <= 1/2 off the top
      val += w[k] * log1pf(-pk);
      area += w[k] * pk / (1.f - pk);
    }
    values[r] = -val - w_t * log1m_t;
    if (!grad) continue;
    float* gr = grad + r * C;
    const float wp_t = w_t * p_t;
    const float rest_inv = 1.f / (underflow ? loo.s : rest);
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) {
      const float pk = e[k] * inv;
      const float ratio = (underflow ? expf(zr[k] - loo.m) : e[k]) * rest_inv;
      gr[k] = w[k] * pk / (1.f - pk) - pk * area - wp_t * ratio;
    }
    gr[t] = p_t * (w_t - area);
  }
}

// negative.nl_rows: -log p_l where positive, else neg_weight * -log(1 - p_l). Outputs the
// total, and the two terms (ce, neg) of every row.
void nl_rows(const float* z, const int64_t* label, const uint8_t* positive, float neg_weight, int64_t C, int64_t r0,
             int64_t r1, float* total, float* ce_out, float* neg_out, float* grad) {
  std::vector<float> buf(C);
  float* e = buf.data();
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const int64_t l = label[r];
    const float m = row_max(zr, C);
    float rest = 0.f;
    float s = 0.f;
#pragma omp simd reduction(+ : rest, s)
    for (int64_t k = 0; k < C; ++k) {
      const float v = expf(zr[k] - m);
      e[k] = v;
      s += v;
      rest += k == l ? 0.f : v;
    }
    const float log_s = logf(s);
    const float ce = (m - zr[l]) + log_s;
    const bool underflow = rest < kLooUnderflow * s;
    const ShiftedSum loo = underflow ? sum_without(zr, C, l) : ShiftedSum{0.f, 1.f};
    const float neg = underflow ? ((m - loo.m) + log_s) - logf(loo.s) : log_s - logf(rest);
    const bool pos = positive[r] != 0;
    ce_out[r] = ce;
    neg_out[r] = neg;
    total[r] = pos ? ce : neg_weight * neg;
    if (!grad) continue;
    float* gr = grad + r * C;
    const float inv = 1.f / s;
    const float p_l = e[l] * inv;
    if (pos) {
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) gr[k] = e[k] * inv;
      gr[l] = p_l - 1.f;
    } else {
      // w (p_k - p_k / (1 - p_l)) = -w p_l e_k / rest off l, w p_l at l
      const float coef = -neg_weight * p_l;
      const float rest_inv = 1.f / (underflow ? loo.s : rest);
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) gr[k] = coef * (underflow ? expf(zr[k] - loo.m) : e[k]) * rest_inv;
      gr[l] = neg_weight * p_l;
    }
  }
}

// average_k.two_head_ce_rows: CE, its gradient p - onehot(y), and `others` = p with -1 at y.
void two_head_ce_rows(const float* z, const int64_t* y, int64_t C, int64_t r0, int64_t r1, float* ce_out,
                      float* grad, float* others) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const int64_t yr = y[r];
    float* o = others + r * C;
    const float m = row_max(zr, C);
    const float s = exp_shifted(zr, m, o, C);
    const float inv = 1.f / s;
    ce_out[r] = (m - zr[yr]) + logf(s);
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) o[k] *= inv;
    if (grad) {
      float* gr = grad + r * C;
      std::memcpy(gr, o, C * sizeof(float));
      gr[yr] -= 1.f;
    }
    o[yr] = -1.f;
  }
}

// multilabel.bce_rows: sum_c softplus(z_c) - t_c z_c; grad sigmoid(z) - t.
void bce_rows(const float* z, const float* t, int64_t C, int64_t r0, int64_t r1, float* values, float* grad) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const float* tr = t + r * C;
    float* gr = grad ? grad + r * C : nullptr;
    float val = 0.f;
    if (gr) {
#pragma omp simd reduction(+ : val)
      for (int64_t k = 0; k < C; ++k) {
        const SoftplusSigmoid q = softplus_sigmoid(zr[k]);
        val += q.sp - tr[k] * zr[k];
        gr[k] = q.s - tr[k];
      }
    } else {
#pragma omp simd reduction(+ : val)
      for (int64_t k = 0; k < C; ++k) val += softplus_sigmoid(zr[k]).sp - tr[k] * zr[k];
    }
    values[r] = val;
  }
}

// average_k.bce_one_hot_rows: scale [softplus(-z_y) + neg_weight sum_{c != y} softplus(z_c)].
void bce_one_hot_rows(const float* z, const int64_t* y, float neg_weight, float scale, int64_t C, int64_t r0,
                      int64_t r1, float* values, float* grad) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const int64_t yr = y[r];
    float* gr = grad ? grad + r * C : nullptr;
    float val = 0.f;
#pragma omp simd reduction(+ : val)
    for (int64_t k = 0; k < C; ++k) {
      const SoftplusSigmoid q = softplus_sigmoid(zr[k]);
      const bool at = k == yr;
      val += at ? q.sp - zr[k] : neg_weight * q.sp;
      if (gr) gr[k] = scale * (at ? -q.sn : neg_weight * q.s);
    }
    values[r] = val * scale;
  }
}

// multilabel.focal_rows: -sum_c [a_pos t (1-s)^g log s + a_neg (1-t) s^g log(1-s)]; grad / -1.
void focal_rows(const float* z, const float* t, float gamma, float a_pos, float a_neg, int64_t C, int64_t r0,
                int64_t r1, float* values, float* grad) {
  const int gi = small_int(gamma);
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const float* tr = t + r * C;
    float* gr = grad ? grad + r * C : nullptr;
    float val = 0.f;
#pragma omp simd reduction(+ : val)
    for (int64_t k = 0; k < C; ++k) {
      const SoftplusSigmoid q = softplus_sigmoid(zr[k]);
      const float ls = -(q.sp - zr[k]);  // log s = -softplus(-z)
      const float lns = -q.sp;           // log(1 - s)
      const float wp = pow_g(q.sn, gamma, gi), wn = pow_g(q.s, gamma, gi);
      const float pos = a_pos * wp * ls, neg = a_neg * wn * lns;
      val += neg + tr[k] * (pos - neg);
      if (gr) {
        const float d_pos = a_pos * wp * (q.sn - gamma * q.s * ls);
        const float d_neg = a_neg * wn * (gamma * q.sn * lns - q.s);
        gr[k] = d_neg + tr[k] * (d_pos - d_neg);
      }
    }
    values[r] = -val;
  }
}

// multilabel.asl_rows: -sum_c [t (1-s)^gp log s + (1-t) p_m^gn log(1 - p_m)], p_m = max(s - clip, 0);
// grad / -1. `detach` treats the weights (1-s)^gp and p_m^gn as constants.
void asl_rows(const float* z, const float* t, float gamma_neg, float gamma_pos, float clip, int detach, int64_t C,
              int64_t r0, int64_t r1, float* values, float* grad) {
  const int gin = small_int(gamma_neg), gip = small_int(gamma_pos);
  const int gim1 = gamma_neg >= 1.f ? small_int(gamma_neg - 1.f) : -1;
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const float* tr = t + r * C;
    float* gr = grad ? grad + r * C : nullptr;
    float val = 0.f;
#pragma omp simd reduction(+ : val)
    for (int64_t k = 0; k < C; ++k) {
      const SoftplusSigmoid q = softplus_sigmoid(zr[k]);
      const float s = q.s, sn = q.sn;
      const float ls = -(q.sp - zr[k]);
      float pm, one_m, log_one_m;
      if (clip > 0.f) {
        pm = fmaxf(s - clip, 0.f);
        one_m = fminf(1.f + clip - s, 1.f);
        log_one_m = logf(one_m);
      } else {
        pm = s;
        one_m = sn;
        log_one_m = -q.sp;
      }
      const float wp = pow_g(sn, gamma_pos, gip);
      const float w_neg = pow_g(pm, gamma_neg, gin);
      const float pos = ls * wp, neg = log_one_m * w_neg;
      val += neg + tr[k] * (pos - neg);
      if (gr) {
        const float d_pos = gamma_pos == 0.f ? sn : (detach ? wp * sn : wp * (sn - gamma_pos * s * ls));
        float d_neg;
        if (clip == 0.f) {
          d_neg = (detach || gamma_neg == 0.f) ? -s * w_neg : w_neg * (gamma_neg * sn * log_one_m - s);
        } else {
          const float dpm = s * sn;
          if (detach || gamma_neg == 0.f) {
            d_neg = -dpm * w_neg / one_m;
            if (gamma_neg == 0.f && !(pm > 0.f)) d_neg = 0.f;
          } else {
            // p_m^(gn-1); for 0 < gn < 1, 0 where p_m = 0 (it multiplies terms that are 0 there)
            const float w_m1 = gamma_neg >= 1.f ? pow_g(pm, gamma_neg - 1.f, gim1)
                                                : (pm > 0.f ? powf(pm, gamma_neg - 1.f) : 0.f);
            d_neg = (w_m1 * log_one_m * gamma_neg - w_neg / one_m) * dpm;
          }
        }
        gr[k] = d_neg + tr[k] * (d_pos - d_neg);
      }
    }
    values[r] = -val;
  }
}

// ordinal.kl_rows: KL(q || softmax(z)) = q_log_q - sum_k q_k log p_k; grad p * q_sum - q. With
// `target`, q [C, C], q_log_q [C], q_sum [C] are per-class tables (row target[b]); else per row.
void kl_rows(const float* z, const int64_t* target, const float* q, const float* q_log_q, const float* q_sum,
             int64_t C, int64_t r0, int64_t r1, float* values, float* grad) {
  std::vector<float> buf(C);
  float* e = buf.data();
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const int64_t row = target ? target[r] : r;
    const float* qr = q + row * C;
    const float m = row_max(zr, C);
    float* out = grad ? grad + r * C : e;
    const float s = exp_shifted(zr, m, out, C);
    const float shift = m + logf(s);  // log p_k = z_k - shift
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t k = 0; k < C; ++k) dot += qr[k] * (zr[k] - shift);
    values[r] = q_log_q[row] - dot;
    if (!grad) continue;
    const float scale = q_sum[row] / s;
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) out[k] = out[k] * scale - qr[k];
  }
}

// ordinal_heads._binary_rows for CORAL/CORN: sum_k w_k softplus(sign_k x_k), sign_k = -1 where
// y > k, +1 where y <= k; `conditional` (CORN) drops the tasks k > y. grad w sign sigmoid(sign x).
void binary_rows(const float* x, const int64_t* y, const float* weights, int conditional, int64_t K, int64_t r0,
                 int64_t r1, float* values, float* grad) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * K;
    const int64_t yr = y[r];
    float* gr = grad ? grad + r * K : nullptr;
    float val = 0.f;
#pragma omp simd reduction(+ : val)
    for (int64_t k = 0; k < K; ++k) {
      const float sign = k < yr ? -1.f : 1.f;
      const float w = (conditional && k > yr) ? 0.f : (weights ? weights[k] : 1.f);
      const SoftplusSigmoid q = softplus_sigmoid(sign * xr[k]);
      val += w == 0.f ? 0.f : w * q.sp;
      if (gr) gr[k] = w * sign * q.s;
    }
    values[r] = val;
  }
}

// The batch kappa losses (and MCE), first pass: p = softmax(z) into `p`, and per row (where `WT`
// is not null) obs_b = sum_i p_bi W[i, y_b] (WT: W transposed, row y_b) and pm_b = p_b . m, and
// (where `mce` is not null) the per-class squared error (1/C) sum_i w_i (p_bi - 1[i = y_b])^2.
void kappa_stats(const float* z, const int64_t* y, const float* WT, const float* m, const float* class_w, int64_t C,
                 int64_t r0, int64_t r1, float* p, float* obs, float* pm, float* mce) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* zr = z + r * C;
    const int64_t yr = y[r];
    float* pr = p + r * C;
    const float mx = row_max(zr, C);
    const float inv = 1.f / exp_shifted(zr, mx, pr, C);
    float o = 0.f, a = 0.f, sq = 0.f;
    if (WT) {
      const float* wr = WT + yr * C;
#pragma omp simd reduction(+ : o, a)
      for (int64_t k = 0; k < C; ++k) {
        const float pk = pr[k] * inv;
        pr[k] = pk;
        o += pk * wr[k];
        a += pk * m[k];
      }
      obs[r] = o;
      pm[r] = a;
    } else {
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) pr[k] *= inv;
    }
    if (!mce) continue;
#pragma omp simd reduction(+ : sq)
    for (int64_t k = 0; k < C; ++k) {
      const float err = k == yr ? pr[k] - 1.f : pr[k];
      sq += (class_w ? class_w[k] : 1.f) * err * err;
    }
    mce[r] = sq / static_cast<float>(C);
  }
}

// Second pass, in place on p: grad = p * (g - sum_i p_i g_i) with
// g_i = a_wk (W[i, y] - ratio m_i) + a_mce (2 / C) w_i (p_i - 1[i = y]).
void kappa_grad(float* p, const int64_t* y, const float* WT, const float* m, float a_wk, float ratio, float a_mce,
                const float* class_w, int64_t C, int64_t r0, int64_t r1) {
  const float two_c = 2.f / static_cast<float>(C);
  for (int64_t r = r0; r < r1; ++r) {
    float* pr = p + r * C;
    const int64_t yr = y[r];
    const float* wr = WT ? WT + yr * C : nullptr;  // null: no kappa term (a_wk = 0)
    float pg = 0.f;
#pragma omp simd reduction(+ : pg)
    for (int64_t k = 0; k < C; ++k) {
      const float err = k == yr ? pr[k] - 1.f : pr[k];
      const float g = (wr ? a_wk * (wr[k] - ratio * m[k]) : 0.f) + a_mce * two_c * (class_w ? class_w[k] : 1.f) * err;
      pg += pr[k] * g;
    }
#pragma omp simd
    for (int64_t k = 0; k < C; ++k) {
      const float err = k == yr ? pr[k] - 1.f : pr[k];
      const float g = (wr ? a_wk * (wr[k] - ratio * m[k]) : 0.f) + a_mce * two_c * (class_w ? class_w[k] : 1.f) * err;
      pr[k] = pr[k] * (g - pg);
    }
  }
}

}  // extern "C"
