/* Fused CPU kernels for the exact op set (used by ops_native.NativeBackend).
 *
 * Each kernel computes, in one pass per row, exactly the integers that ops_numpy computes with
 * int64 arithmetic: values are integers held in doubles below 2**53, so every product, sum,
 * multiply by a power of two and floor here is exact, and floor(n / d) equals the integer
 * floor division for |n| < 2**53 (see ops_torch). Compiled with -ffp-contract=off, although no
 * result would change under contraction, since every product is exact before it is added.
 * -fno-trapping-math lets floor() vectorize; it changes no value, only FP exception flags.
 * GEMMs stay in torch (float32 on int8 values, exact). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BITS 12
#define RECIP_SHIFT 17
#define QMAX 127
#define NORM_BITS 15
#define NORM_STD_SHIFT 4
#define I16_MAX 32767.0
#define MASKED (-32768.0)

static inline int bitlen(double v) {
    int e = 0;
    if (v > 0) frexp(v, &e);
    return e;
}

static inline double maxd(double a, double b) { return a > b ? a : b; }
static inline double mind(double a, double b) { return a < b ? a : b; }
static inline double clampd(double v, double lim) { return mind(maxd(v, -lim), lim); }

/* floor(n / d) for d > 0 and exact n, d with |n| + d < 2**53: a multiply by the reciprocal,
 * then one correction step (the estimate is off by at most one; q * d is exact). */
static inline double fdiv(double n, double d, double inv) {
    double q = floor(n * inv);
    q -= (double)(q * d > n);
    return q + (double)((q + 1) * d <= n);
}

static double isqrt(double n) {
    double r = floor(sqrt(n));
    if (r * r > n) r -= 1;
    if ((r + 1) * (r + 1) <= n) r += 1;
    return r;
}

/* Per-row int8 quantization of x (optionally times per-column smoothing multipliers). */
void vq_quantize_rows(const float *x, const double *smooth, int64_t rows, int64_t k, float *q,
                      float *ams_out, int32_t *e_out, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        const float *xr = x + m * k;
        float *qr = q + m * k;
        double amax = 0;
        if (smooth) {
#pragma omp simd reduction(max : amax)
            for (int64_t j = 0; j < k; j++) amax = maxd(amax, fabs((double)xr[j] * smooth[j]));
        } else {
#pragma omp simd reduction(max : amax)
            for (int64_t j = 0; j < k; j++) amax = maxd(amax, fabs((double)xr[j]));
        }
        int e = bitlen(amax) - ROW_BITS;
        if (e < 0) e = 0;
        const double half = e > 0 ? ldexp(1.0, e - 1) : 0.0, sc = ldexp(1.0, -e);
        const double ams = floor((amax + half) * sc);
        const double inv = ams > 0 ? floor((double)(QMAX << RECIP_SHIFT) / ams) : 0.0;
        const double rnd = (double)(1 << (RECIP_SHIFT - 1)), down = ldexp(1.0, -RECIP_SHIFT);
        if (smooth) {
#pragma omp simd
            for (int64_t j = 0; j < k; j++)
                qr[j] = (float)floor((floor(((double)xr[j] * smooth[j] + half) * sc) * inv + rnd) * down);
        } else {
#pragma omp simd
            for (int64_t j = 0; j < k; j++)
                qr[j] = (float)floor((floor(((double)xr[j] + half) * sc) * inv + rnd) * down);
        }
        ams_out[m] = (float)ams;
        e_out[m] = e;
    }
}

/* y = clamp(floor(acc * rowf[m] * colf[n] + 0.5) + bias[n]); acc float32 or float64. */
void vq_requant(const float *acc32, const float *acc32b, const double *acc64, const double *rowf,
                const double *colf, const double *bias, int64_t rows, int64_t n, double lim, float *y,
                int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        const double r = rowf[m];
        float *yr = y + m * n;
        if (acc64) {
            const double *a = acc64 + m * n;
#pragma omp simd
            for (int64_t j = 0; j < n; j++) yr[j] = (float)clampd(floor(a[j] * r * colf[j] + 0.5) + bias[j], lim);
        } else if (acc32b) {  /* two K-chunks, each exact in float32, summed exactly in double */
            const float *a = acc32 + m * n, *b = acc32b + m * n;
#pragma omp simd
            for (int64_t j = 0; j < n; j++)
                yr[j] = (float)clampd(floor(((double)a[j] + (double)b[j]) * r * colf[j] + 0.5) + bias[j], lim);
        } else {
            const float *a = acc32 + m * n;
#pragma omp simd
            for (int64_t j = 0; j < n; j++)
                yr[j] = (float)clampd(floor((double)a[j] * r * colf[j] + 0.5) + bias[j], lim);
        }
    }
}

/* Attention scores, mask and softmax numerators for rows of t keys.
 * acc [bh, t, t]; rowf [bh, t]; colf [bh, t]; valid [b, t]; outputs z, p [bh, t, t], psum [bh, t]. */
void vq_scores_softmax(const float *acc, const double *rowf, const double *colf, const float *valid,
                       int64_t bh, int64_t heads, int64_t t, int causal, const float *lut, int64_t lut_size,
                       float *z, float *p, float *psum, int nt) {
    const double den = (double)QMAX * QMAX, den2 = 2.0 * den, inv2 = 1.0 / den2;
    const double umax = (double)(lut_size - 1);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t row = 0; row < bh * t; row++) {
        const int64_t g = row / t, i = row % t, b = g / heads;
        const float *ar = acc + row * t, *vr = valid + b * t;
        const double *cr = colf + g * t;
        float *zr = z + row * t, *pr = p + row * t;
        const double r = rowf[row];
        double zmax = MASKED;
#pragma omp simd reduction(max : zmax)
        for (int64_t j = 0; j < t; j++) {
            double v = clampd(fdiv((double)ar[j] * r * cr[j] + den, den2, inv2), I16_MAX);
            int masked = (vr[j] == 0) | (causal & (j > i));
            v = masked ? MASKED : v;
            zr[j] = (float)v;
            zmax = maxd(zmax, v);
        }
        double s = 0;
        for (int64_t j = 0; j < t; j++) {
            double u = zr[j] == MASKED ? umax : mind(zmax - zr[j], umax);
            float pv = lut[(int64_t)u];
            pr[j] = pv;
            s += pv;
        }
        psum[row] = (float)s;
    }
}

/* Attention context: out = clamp(floor((2 acc colf + 127 S) / (254 S))); acc [bh, t, d]. */
void vq_context(const float *acc, const double *colf, const float *psum, int64_t bh, int64_t t,
                int64_t d, double lim, float *out, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t row = 0; row < bh * t; row++) {
        int64_t g = row / t;
        double den = (double)psum[row] * QMAX, den2 = 2.0 * den, inv2 = 1.0 / den2;
#pragma omp simd
        for (int64_t j = 0; j < d; j++) {
            double v = fdiv((double)acc[row * d + j] * colf[g * d + j] * 2.0 + den, den2, inv2);
            out[row * d + j] = (float)clampd(v, lim);
        }
    }
}

/* Integer LayerNorm per row of h values; gamma2 = 2 * gamma (fixed point), beta fixed point. */
void vq_layernorm(const float *x, const double *gamma2, const double *beta, int64_t rows, int64_t h,
                  double lim, float *out, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        const float *xr = x + m * h;
        float *orow = out + m * h;
        double s = 0;
        for (int64_t j = 0; j < h; j++) s += xr[j];
        double mu = floor((2.0 * s + h) / (2.0 * h)), amax = 0;
        for (int64_t j = 0; j < h; j++) {
            double d = fabs((double)xr[j] - mu);
            amax = d > amax ? d : amax;
        }
        int e = bitlen(amax) - NORM_BITS;
        if (e < 0) e = 0;
        double half = e > 0 ? ldexp(1.0, e - 1) : 0.0, sc = ldexp(1.0, -e), var = 0;
        for (int64_t j = 0; j < h; j++) {
            double ds = floor(((double)xr[j] - mu + half) * sc);
            var += ds * ds;
        }
        double dn = isqrt(floor(var * (double)(1 << (2 * NORM_STD_SHIFT)) / (double)h));
        if (dn < 1) dn = 1;
        double dn2 = 2.0 * dn, inv2 = 1.0 / dn2;
        for (int64_t j = 0; j < h; j++) {
            double ds = floor(((double)xr[j] - mu + half) * sc);
            double v = fdiv(ds * gamma2[j] + dn, dn2, inv2) + beta[j];
            orow[j] = (float)clampd(v, lim);
        }
    }
}

/* Table lookup over the int16 range: out = lut[x + 32768]. */
void vq_lookup16(const float *x, const float *lut, int64_t n, float *out, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = lut[(int64_t)x[i] + 32768];
}

/* Exact training (exact/integer.py, training/): integers held in int64, products that may pass 64 bits in
 * __int128. Signed >> is arithmetic (floor) with gcc and clang, as in NumPy and the referees;
 * values that may be negative are scaled by multiplying, never by << (undefined in C). */

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC target("prefer-vector-width=512") /* the int16 dot products: twice the lanes where the CPU has them */
#endif

static inline int64_t bitlen64(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

/* ops_numpy.quantize_rows on one row: q, the rescaled max and the shift. */
static void vt_quant_row(const int64_t *x, int64_t k, int16_t *q, int64_t *ams_out, int64_t *e_out) {
    uint64_t amax = 0;
    for (int64_t j = 0; j < k; j++) {
        uint64_t a = x[j] < 0 ? 0 - (uint64_t)x[j] : (uint64_t)x[j];
        if (a > amax) amax = a;
    }
    int64_t b = bitlen64(amax);
    int64_t e = b > ROW_BITS ? b - ROW_BITS : 0;
    int64_t half = ((int64_t)1 << e) >> 1;
    int64_t ams = ((int64_t)amax + half) >> e;
    int64_t inv = ams > 0 ? ((int64_t)QMAX << RECIP_SHIFT) / ams : 0;
    for (int64_t j = 0; j < k; j++)
        q[j] = (int16_t)((((x[j] + half) >> e) * inv + ((int64_t)1 << (RECIP_SHIFT - 1))) >> RECIP_SHIFT);
    *ams_out = ams;
    *e_out = e;
}

static inline __int128 floor_div128(__int128 n, __int128 d) { /* d > 0 */
    __int128 q = n / d;
    return (n % d != 0 && n < 0) ? q - 1 : q;
}

/* floor(n / (2 * 127**2)), by a constant the compiler turns into a multiply. */
static inline int64_t floor_div_qq(int64_t n) {
    const int64_t d = 2 * QMAX * QMAX;
    int64_t q = n / d;
    return (n % d != 0 && n < 0) ? q - 1 : q;
}

/* out[i, j] from the exact dot product acc of q(x_i) and q(w_j): the rounding rescale. Returns 1
 * if the result does not fit NumPy's int64 bound. */
static inline int vt_rescale(int32_t acc, int64_t ax, int64_t aw, int64_t s, int64_t *out) {
    const __int128 den = (__int128)QMAX * QMAX;
    int64_t num = (int64_t)acc * ax * aw; /* < 2**31 * 2**24 */
    uint64_t mag = (uint64_t)(num < 0 ? -num : num); /* |num| < 2**55: no overflow */
    int64_t nb = bitlen64(mag);
    if (s >= 0 && nb + s + 1 <= 61) { /* floor((num 2**(s+1) + 127**2) / (2 * 127**2)) */
        *out = floor_div_qq(num * ((int64_t)2 << s) + QMAX * QMAX);
        return 0;
    }
    if (s < 0 && -s <= 46 && nb + 1 <= 60) { /* the power of two first, then the constant */
        *out = floor_div_qq((num * 2 + ((int64_t)(QMAX * QMAX) << -s)) >> -s);
        return 0;
    }
    __int128 n2, d2;
    if (s > 60 || s < -60) return 1;
    if (s >= 0) { n2 = (__int128)num * ((__int128)2 << s); d2 = den * 2; } /* no << of negatives (UB) */
    else { n2 = (__int128)num * 2; d2 = (den << -s) * 2; }
    __int128 r = floor_div128(n2 + d2 / 2, d2);
    if (r >= ((__int128)1 << 62) || r <= -((__int128)1 << 62)) return 1; /* as NumPy's bound */
    *out = (int64_t)r;
    return 0;
}

#define VT_JB 256 /* output columns per block: the int32 accumulators stay in L1 */

/* out[i, j] = vt_rescale(dot(q(x)_i, q(w)_j)) from the quantized rows of x (qx [M, K], int8
 * values held in int16, so the products pair into int32 lanes) and of w, either as rows (qw
 * [N, K]: one vectorised dot product per output, for long contractions) or transposed (wt [K, N]:
 * t outer and j inner, vector lanes over the columns, for short contractions and wide outputs). */
static int vt_qmm_core(const int16_t *qx, const int64_t *ax, const int64_t *ex, int64_t m_rows, int64_t k,
                       const int16_t *qw, const int16_t *wt, const int64_t *aw, const int64_t *ew, int64_t n_rows,
                       int64_t shift, int64_t *out, int nt) {
    int bad = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : bad)
    for (int64_t i = 0; i < m_rows; i++) {
        const int16_t *a = qx + i * k;
        int32_t acc[VT_JB]; /* |acc| <= k * 127**2 < 2**31 for k below 133,000 */
        for (int64_t j0 = 0; j0 < n_rows; j0 += VT_JB) {
            const int64_t jn = n_rows - j0 < VT_JB ? n_rows - j0 : VT_JB;
            if (wt) {
                for (int64_t j = 0; j < jn; j++) acc[j] = 0;
                for (int64_t t = 0; t < k; t++) {
                    const int32_t av = a[t];
                    if (av == 0) continue;
                    const int16_t *b = wt + t * n_rows + j0;
#pragma omp simd
                    for (int64_t j = 0; j < jn; j++) acc[j] += av * (int32_t)b[j];
                }
            } else {
                for (int64_t j = 0; j < jn; j++) {
                    const int16_t *b = qw + (j0 + j) * k;
                    int32_t d = 0;
#pragma omp simd reduction(+ : d)
                    for (int64_t t = 0; t < k; t++) d += (int32_t)a[t] * (int32_t)b[t];
                    acc[j] = d;
                }
            }
            for (int64_t j = 0; j < jn; j++)
                bad |= vt_rescale(acc[j], ax[i], aw[j0 + j], ex[i] + ew[j0 + j] + shift, out + i * n_rows + j0 + j);
        }
    }
    return bad;
}

/* train.qmatmul: out[m, n] = round_half_up(dot(q(x_m), q(w_n)) * ax_m * aw_n * 2**(ex_m + ew_n +
 * shift) / 127**2) for x [M, K] and w [N, K] (contiguous int64). Either side may come quantized
 * already (x NULL: qx [M, K], ax, ex; w NULL: wt [K, N] transposed, aw, ew), as frozen features
 * are; quantized values are int8 held in int16. Returns 0, or 1 if a result does not fit int64
 * (the caller then computes in Python integers and reports it). */
int vt_qmatmul_q(const int64_t *x, const int16_t *qx_in, const int64_t *ax_in, const int64_t *ex_in, int64_t m_rows,
                 int64_t k, const int64_t *w, const int16_t *wt_in, const int64_t *aw_in, const int64_t *ew_in,
                 int64_t n_rows, int64_t shift, int64_t *out, int nt) {
    if (k > 133143) return 1; /* the int32 accumulator's bound: NumPy answers */
    const int columns = !w || (k < 256 && n_rows >= 32); /* which loop form (the same integers) */
    size_t nq = (size_t)(x ? m_rows * k : 0) + (size_t)(w ? (columns ? 2 : 1) * n_rows * k : 0);
    int16_t *qx = (int16_t *)malloc(sizeof(int16_t) * nq + 2);
    int64_t *sc = (int64_t *)malloc(sizeof(int64_t) * 2 * (size_t)(m_rows + n_rows) + 8);
    if (!qx || !sc) { free(qx); free(sc); return 2; }
    int64_t *ax = sc, *ex = sc + m_rows, *aw = sc + 2 * m_rows, *ew = sc + 2 * m_rows + n_rows;
    const int16_t *qxs = qx_in, *qws = 0, *wts = wt_in;
    if (x) {
        for (int64_t i = 0; i < m_rows; i++) vt_quant_row(x + i * k, k, qx + i * k, ax + i, ex + i);
        qxs = qx;
    } else {
        ax = (int64_t *)ax_in;
        ex = (int64_t *)ex_in;
    }
    if (w) {
        int16_t *qw = qx + (x ? m_rows * k : 0);
        for (int64_t j = 0; j < n_rows; j++) vt_quant_row(w + j * k, k, qw + j * k, aw + j, ew + j);
        qws = qw;
        wts = 0;
        if (columns) {
            int16_t *wt = qw + n_rows * k;
            for (int64_t j = 0; j < n_rows; j++)
                for (int64_t t = 0; t < k; t++) wt[t * n_rows + j] = qw[j * k + t];
            wts = wt;
        }
    } else {
        aw = (int64_t *)aw_in;
        ew = (int64_t *)ew_in;
    }
    int bad = vt_qmm_core(qxs, ax, ex, m_rows, k, qws, wts, aw, ew, n_rows, shift, out, nt);
    free(qx);
    free(sc);
    return bad;
}

/* floor(n / d) for d > 0: by a reciprocal and one correction where |n| < 2**50 (exact: q * d is
 * then exact), else in 128 bits. */
static inline int64_t fdiv_rec(__int128 n, int64_t d, double inv) {
    if (n > -((__int128)1 << 50) && n < ((__int128)1 << 50)) {
        int64_t m = (int64_t)n, q = (int64_t)floor((double)m * inv);
        if ((__int128)q * d > m) q -= 1;
        else if ((__int128)(q + 1) * d <= m) q += 1;
        return q;
    }
    return (int64_t)floor_div128(n, d);
}

static inline int64_t isqrt64(int64_t n) { /* n >= 0, n < 2**62 */
    int64_t r = (int64_t)sqrt((double)n);
    while (r * r > n) r--;
    while ((r + 1) * (r + 1) <= n) r++;
    return r;
}

/* train.update on n elements: the summed gradient's batch mean, clipped, then SGD or momentum
 * (opt 1, 2: v = ((v mu) >> 10) + g; w -= (v lr) >> 16) or Adam (opt 3), from w, v, s into wo,
 * vo, so (so only for Adam). Returns 1 if a weight or moment has reached 2**46, or a step or
 * batch mean 2**62 (the run diverged: the caller discards the outputs, as NumPy refuses). */
int vt_update(const int64_t *w, const int64_t *v, const int64_t *s, const int64_t *g, int64_t n, int64_t batch,
              int64_t clip, int64_t opt, int64_t mu, int64_t b1, int64_t b2, int64_t lr, int64_t eps, int64_t *wo,
              int64_t *vo, int64_t *so, int nt) {
    const int64_t lim = (int64_t)1 << 46;
    const int64_t glim = (int64_t)1 << 49;
    int bad = 0, big = 0;
#pragma omp parallel for simd num_threads(nt) schedule(static) reduction(| : bad, big)
    for (int64_t i = 0; i < n; i++) {
        bad |= w[i] >= lim || w[i] <= -lim || v[i] >= lim || v[i] <= -lim || s[i] >= lim || s[i] <= -lim;
        big |= g[i] >= glim || g[i] <= -glim;
    }
    if (bad) return 1;
    const double binv = 1.0 / (double)(2 * batch);
    if (opt != 3 && !big) { /* SGD and momentum, vectorised: the batch mean's quotient estimated in
                             * double (|2g + batch| < 2**51) and corrected in integers */
        const int64_t d = 2 * batch;
#pragma omp parallel for simd num_threads(nt) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            int64_t n2 = 2 * g[i] + batch, q = (int64_t)((double)n2 * binv), r = n2 - q * d;
            q += (r >= d) - (r < 0);
            int64_t gm = q > clip ? clip : (q < -clip ? -clip : q);
            int64_t vi = ((v[i] * mu) >> 10) + gm;
            vo[i] = vi;
            wo[i] = w[i] - ((vi * lr) >> 16);
        }
        return 0;
    }
    const __int128 top = (__int128)1 << 62; /* NumPy's rounding division refuses results this large */
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : bad)
    for (int64_t i = 0; i < n; i++) {
        int64_t gq = fdiv_rec(2 * (__int128)g[i] + batch, 2 * batch, binv); /* the quotient fits int64 */
        bad |= gq >= top || gq <= -top;
        int64_t gm = gq > clip ? clip : (gq < -clip ? -clip : (int64_t)gq);
        if (opt == 3) {
            int64_t vi = (v[i] * b1 + gm * (1024 - b1)) >> 10;
            int64_t si = (s[i] * b2 + gm * gm * (1024 - b2)) >> 10;
            /* round(v lr 2**20 / ((isqrt(s) + eps) 2**16)): the common 2**16 taken out of both */
            int64_t den = isqrt64(si) + eps;
            __int128 num = (__int128)vi * lr * 32 + den, step;
            if (num > -((__int128)1 << 50) && num < ((__int128)1 << 50))
                step = fdiv_rec(num, 2 * den, 1.0 / (double)(2 * den));
            else
                step = floor_div128(num, 2 * (__int128)den);
            bad |= step >= top || step <= -top;
            vo[i] = vi;
            so[i] = si;
            wo[i] = w[i] - (int64_t)(bad ? 0 : step);
        } else {
            int64_t vi = ((v[i] * mu) >> 10) + gm;
            vo[i] = vi;
            wo[i] = w[i] - ((vi * lr) >> 16);
        }
    }
    return bad; /* 1: the run diverged (the outputs are discarded) */
}

/* finetune.layernorm on rows of h int64 values: the op set's LayerNorm, keeping the centred
 * values shifted to NORM_BITS (ds), the shift (e) and D = isqrt(mean(ds^2) 2**8) for the backward. */
void vt_layernorm(const int64_t *x, int64_t rows, int64_t h, const int64_t *gamma, const int64_t *beta, int64_t *out,
                  int64_t *ds, int64_t *e_out, int64_t *den_out, int nt) {
    const int64_t act_max = ((int64_t)1 << 23) - 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *xr = x + r * h;
        int64_t *dr = ds + r * h, *orow = out + r * h;
        __int128 sum = 0;
        for (int64_t j = 0; j < h; j++) sum += xr[j];
        int64_t mu = (int64_t)floor_div128(2 * sum + h, 2 * (__int128)h);
        uint64_t amax = 0;
        for (int64_t j = 0; j < h; j++) {
            int64_t d = xr[j] - mu;
            uint64_t a = d < 0 ? 0 - (uint64_t)d : (uint64_t)d;
            if (a > amax) amax = a;
        }
        int64_t b = bitlen64(amax), e = b > NORM_BITS ? b - NORM_BITS : 0, half = ((int64_t)1 << e) >> 1;
        __int128 var = 0;
        for (int64_t j = 0; j < h; j++) {
            dr[j] = (xr[j] - mu + half) >> e;
            var += (__int128)dr[j] * dr[j];
        }
        int64_t den = isqrt64((int64_t)floor_div128(var << (2 * NORM_STD_SHIFT), h));
        if (den < 1) den = 1;
        const double inv = 1.0 / (double)(2 * den);
        for (int64_t j = 0; j < h; j++) {
            int64_t v = fdiv_rec(2 * (__int128)dr[j] * gamma[j] + den, 2 * den, inv) + beta[j];
            orow[j] = v > act_max ? act_max : (v < -act_max ? -act_max : v);
        }
        e_out[r] = e;
        den_out[r] = den;
    }
}

/* finetune.layernorm_backward: dx = (g - mean(g) - xhat mean(g xhat)) / sigma per row, with
 * g = round(dz gamma / 2**16), xhat = round(ds 2**16 / D), sigma = D 2**e / 2**16. */
void vt_layernorm_backward(const int64_t *dz, int64_t rows, int64_t h, const int64_t *gamma, const int64_t *ds,
                           const int64_t *e_in, const int64_t *den_in, int64_t *dx, int64_t *scratch, int nt) {
    const int64_t sh = 12 + NORM_STD_SHIFT; /* ACT_FRAC + NORM_STD_SHIFT */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *dzr = dz + r * h, *dr = ds + r * h;
        int64_t *g = scratch + r * 2 * h, *xh = scratch + r * 2 * h + h;
        int64_t den = den_in[r], e = e_in[r];
        const double inv = 1.0 / (double)(2 * den);
        __int128 s1 = 0, s2 = 0;
        for (int64_t j = 0; j < h; j++) {
            __int128 gn = 2 * (__int128)dzr[j] * gamma[j] + ((__int128)1 << sh);
            g[j] = (int64_t)(gn >> (sh + 1)); /* floor division by 2**17 */
            xh[j] = fdiv_rec((__int128)dr[j] * ((__int128)1 << (sh + 1)) + den, 2 * den, inv);
            s1 += g[j];
            s2 += (__int128)g[j] * xh[j];
        }
        int64_t m1 = (int64_t)floor_div128(2 * s1 + h, 2 * (__int128)h);
        int64_t m2 = (int64_t)floor_div128(2 * s2 + ((__int128)h << 12), (__int128)h << 13);
        int64_t pos = 12 + NORM_STD_SHIFT - e;
        for (int64_t j = 0; j < h; j++) {
            __int128 t = (__int128)g[j] - m1 - ((2 * (__int128)xh[j] * m2 + ((__int128)1 << 12)) >> 13);
            if (pos >= 0) {
                dx[r * h + j] = fdiv_rec(t * ((__int128)2 << pos) + den, 2 * den, inv);
            } else {
                __int128 d2 = ((__int128)den << -pos) * 2;
                dx[r * h + j] = (int64_t)floor_div128(t * 2 + d2 / 2, d2);
            }
        }
    }
}

/* train.exp_rows then train.loss_grad on rows of c logits: the softmax numerators from the exp
 * table and d(cross-entropy)/d(logits) = round(p 2**12 / sum(p)) - 2**12 at the label. */
void vt_loss_grad(const int64_t *z, const int64_t *labels, int64_t rows, int64_t c, const int64_t *table,
                  int64_t size, int64_t *p, int64_t *g) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *zr = z + r * c;
        int64_t top = zr[0], sum = 0;
        for (int64_t j = 1; j < c; j++) top = zr[j] > top ? zr[j] : top;
        for (int64_t j = 0; j < c; j++) {
            int64_t u = (int64_t)(((__int128)(top - zr[j]) * 94548) >> 20); /* LOG2E in 2**16, to EXP_FRAC */
            p[r * c + j] = table[u < size - 1 ? u : size - 1];
            sum += p[r * c + j];
        }
        for (int64_t j = 0; j < c; j++)
            g[r * c + j] = (int64_t)floor_div128((__int128)p[r * c + j] * 8192 + sum, 2 * (__int128)sum) -
                           (j == labels[r] ? 4096 : 0);
    }
}

/* The block-quantized linear (exact/blockq.py; ops_native.block_linear_native): a GGUF matrix as
 * stored times activations quantized per block of 32 to int16, the same integers as
 * blockq.block_linear. Each per-block dot is an int32 sum of 32 products |q| <= 128, |qx| <= 32767
 * (below 2**28). It is weighted as (a dot) d, or dot (a d), whichever factor pair fits int32
 * (the packer picks: a dot < 2**30 for 4-bit quants, a d < 2**31 for 8-bit), plus m (a sx)
 * (|a sx| < 2**26), each an exact int32 x int32 -> int64 product, summed with wrapping int64
 * adds: acc equals NumPy's int64 einsum modulo 2**64, hence outright (check_range bounds it
 * below 2**62); the order of the sums changes nothing. The activations' quantization and the
 * final rounding follow blockq's formulas in integers (floor divisions by a reciprocal, then a
 * correction). Rows are independent: any thread count gives the same integers.
 *
 * Packed weights (ops_native.pack_blocks), per group g of BQ_ROWS = 16 output rows and block b
 * of 32 columns: the 512 words U[j, r, h] = q[16 g + r, 32 b + 2 j + h] (pair j, row r), so a
 * vector of W words (BQ_W: 32 with AVX-512, else 16) holds pair j of W / 2 rows, and vpmaddwd
 * (vpdpwssd) with (qx[2j], qx[2j+1]) broadcast gives those rows' partial dots, 16 at once with
 * AVX-512: no horizontal sums. 4-bit quants (0..15; Q4_0's -8..7 stored + 8 with m = -8 d) take
 * chunks of W uint16: word i of chunk c is U[4Wc+i] | U[4Wc+W+i] << 4 | U[4Wc+2W+i] << 8 |
 * U[4Wc+3W+i] << 12 (a shift and a mask give each vector); 8-bit quants are U as int8. Each
 * (group, block) is one record: its quants (256 or 512 bytes), then d [16] and (where the matrix
 * has one) m [16], int32, so a matrix is one stream to read. Rows past N are zero. Several
 * activation rows (prefill) read 4-bit quants unpacked once per group into a per-thread buffer
 * of words. */
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define BQ_QX 32767
#define BQ_ROWS 16
#define BQ_NIB 0  /* weight kinds: 4-bit packed, int8, or 4-bit unpacked to int16 (a per-thread buffer) */
#define BQ_BYTE 1
#define BQ_WORD 2

static inline int64_t bq_floor_qx(int64_t v) { /* without a branch: signs are data */
    const int64_t q = v / BQ_QX;
    return q - (q * BQ_QX > v);
}

/* blockq.quantize_blocks on one row: qx, and per block a and a * sum(qx); the row's e. Returns 1
 * if |x| reaches 2**36 (the double arithmetic below is then not exact; NumPy answers). */
static int bq_quant_row(const int64_t *x, int64_t k, int16_t *qx, int32_t *a_out, int32_t *asx_out, int64_t *e_out) {
    uint64_t rmax = 0;
    for (int64_t j = 0; j < k; j++) {
        uint64_t v = x[j] < 0 ? 0 - (uint64_t)x[j] : (uint64_t)x[j];
        rmax = v > rmax ? v : rmax;
    }
    if (rmax >> 36) return 1;
    int64_t e = bitlen64(rmax) - 6;
    e = e > 0 ? e : 0;
    for (int64_t b = 0; b < k / 32; b++) {
        const int64_t *xb = x + 32 * b;
        int16_t *qb = qx + 32 * b;
        int64_t amax = 0;
        for (int i = 0; i < 32; i++) {
            int64_t v = xb[i] < 0 ? -xb[i] : xb[i];
            amax = v > amax ? v : amax;
        }
        const int64_t a = (amax + ((int64_t)1 << e) - 1) >> e; /* ceil(amax / 2**e) <= 64 */
        int32_t sx = 0;
        if (a == 0) {
            for (int i = 0; i < 32; i++) qb[i] = 0;
        } else { /* floor((2 QX x + a 2**e) / (2 a 2**e)): all below 2**53, exact in doubles */
            const double half = (double)(a << e), den = 2 * half, inv = 1.0 / den;
            for (int i = 0; i < 32; i++) {
                const double nn = 2.0 * BQ_QX * (double)xb[i] + half;
                double q = floor(nn * inv);
                q -= (double)(q * den > nn);
                q += (double)((q + 1) * den <= nn);
                qb[i] = (int16_t)q;
                sx += (int32_t)q;
            }
        }
        a_out[b] = (int32_t)a;
        asx_out[b] = (int32_t)a * sx;
    }
    *e_out = e;
    return 0;
}

/* y = floor((2 num + den) / (2 den)), num = acc 2**max(-shift, 0), den = QX 2**max(shift, 0), as
 * NumPy computes it in wrapping int64 (-63 <= shift <= 46), clipped to +-out_max. */
static inline int64_t bq_round(uint64_t acc, int64_t shift, int64_t out_max) {
    const uint64_t num = shift < 0 ? acc << -shift : acc;
    const int64_t pos = shift > 0 ? shift : 0;
    const int64_t u = (int64_t)(2 * num + ((uint64_t)BQ_QX << pos));
    const int64_t y = bq_floor_qx(u >> (pos + 1)); /* floor(floor(u / 2**(pos+1)) / QX) */
    return y > out_max ? out_max : (y < -out_max ? -out_max : y);
}

/* The layout's vector width in words: 32 where the kernels use AVX-512, else 16 (the packer asks). */
#if defined(__AVX512BW__)
#define BQ_W 32
#else
#define BQ_W 16
#endif
int bq_vector_words(void) { return BQ_W; }

/* Word idx (0..511) of a block of 4-bit quants: (p >> 4 v) & 15 of the chunk's uint16 p. */
static inline int bq_nib(const uint8_t *w, int idx) {
    const int c = idx / (4 * BQ_W), v = (idx / BQ_W) & 3, i = idx % BQ_W, at = 2 * (c * BQ_W + i);
    return ((w[at] | (w[at + 1] << 8)) >> (4 * v)) & 15;
}

#if defined(__AVX512BW__)
static inline __m512i bq_dp(__m512i acc, __m512i w, int32_t x) { /* acc + the pairs' products */
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(x));
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(w, _mm512_set1_epi32(x)));
#endif
}

/* One block's int32 dots for the group's 16 rows. */
static inline __attribute__((always_inline)) __m512i bq_dots(const void *w, int kind, const int32_t *xp) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, w0, w1, w2, w3;
    const __m512i mask = _mm512_set1_epi16(15);
    for (int c = 0; c < 4; c++) {
        if (kind == BQ_NIB) {
            const __m512i p = _mm512_loadu_si512((const uint8_t *)w + 64 * c);
            w0 = _mm512_and_si512(p, mask);
            w1 = _mm512_and_si512(_mm512_srli_epi16(p, 4), mask);
            w2 = _mm512_and_si512(_mm512_srli_epi16(p, 8), mask);
            w3 = _mm512_srli_epi16(p, 12);
        } else if (kind == BQ_BYTE) {
            const __m256i *p = (const __m256i *)((const int8_t *)w + 128 * c);
            w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p));
            w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p + 1));
            w2 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p + 2));
            w3 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p + 3));
        } else {
            const int16_t *p = (const int16_t *)w + 128 * c;
            w0 = _mm512_load_si512(p);
            w1 = _mm512_load_si512(p + 32);
            w2 = _mm512_load_si512(p + 64);
            w3 = _mm512_load_si512(p + 96);
        }
        a0 = bq_dp(a0, w0, xp[4 * c]);
        a1 = bq_dp(a1, w1, xp[4 * c + 1]);
        a2 = bq_dp(a2, w2, xp[4 * c + 2]);
        a3 = bq_dp(a3, w3, xp[4 * c + 3]);
    }
    return _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
}

/* acc (rows 2i in e, 2i+1 in o) += a d dot + m a sx for 16 rows. */
static inline void bq_weigh(__m512i s, const int32_t *d, const int32_t *m, int32_t a, int32_t asx, int scale_dot,
                            __m512i *e, __m512i *o) {
    __m512i dv = _mm512_loadu_si512(d);
    const __m512i av = _mm512_set1_epi32(a);
    if (scale_dot) s = _mm512_mullo_epi32(s, av);
    else dv = _mm512_mullo_epi32(dv, av);
    *e = _mm512_add_epi64(*e, _mm512_mul_epi32(s, dv));
    *o = _mm512_add_epi64(*o, _mm512_mul_epi32(_mm512_srli_epi64(s, 32), _mm512_srli_epi64(dv, 32)));
    if (m) {
        const __m512i mv = _mm512_loadu_si512(m), xv = _mm512_set1_epi32(asx);
        *e = _mm512_add_epi64(*e, _mm512_mul_epi32(mv, xv));
        *o = _mm512_add_epi64(*o, _mm512_mul_epi32(_mm512_srli_epi64(mv, 32), xv));
    }
}
#elif defined(__AVX2__)
/* One block's int32 dots for the group's rows 0-7 (s[0]) and 8-15 (s[1]). */
static inline __attribute__((always_inline)) void bq_dots(const void *w, int kind, const int32_t *xp, __m256i s[2]) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0, w0, w1, w2, w3;
    const __m256i mask = _mm256_set1_epi16(15);
    for (int c = 0; c < 8; c++) {
        if (kind == BQ_NIB) {
            const __m256i p = _mm256_loadu_si256((const __m256i *)((const uint8_t *)w + 32 * c));
            w0 = _mm256_and_si256(p, mask);
            w1 = _mm256_and_si256(_mm256_srli_epi16(p, 4), mask);
            w2 = _mm256_and_si256(_mm256_srli_epi16(p, 8), mask);
            w3 = _mm256_srli_epi16(p, 12);
        } else if (kind == BQ_BYTE) {
            const __m128i *p = (const __m128i *)((const int8_t *)w + 64 * c);
            w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p));
            w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p + 1));
            w2 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p + 2));
            w3 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p + 3));
        } else {
            const __m256i *p = (const __m256i *)((const int16_t *)w + 64 * c);
            w0 = _mm256_load_si256(p);
            w1 = _mm256_load_si256(p + 1);
            w2 = _mm256_load_si256(p + 2);
            w3 = _mm256_load_si256(p + 3);
        }
        const __m256i x0 = _mm256_set1_epi32(xp[2 * c]), x1 = _mm256_set1_epi32(xp[2 * c + 1]);
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(w0, x0));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(w1, x0));
        b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(w2, x1));
        b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(w3, x1));
    }
    s[0] = _mm256_add_epi32(a0, b0);
    s[1] = _mm256_add_epi32(a1, b1);
}

/* acc (rows 2i in e, 2i+1 in o) += a d dot + m a sx for 8 rows. */
static inline void bq_weigh(__m256i s, const int32_t *d, const int32_t *m, int32_t a, int32_t asx, int scale_dot,
                            __m256i *e, __m256i *o) {
    __m256i dv = _mm256_loadu_si256((const __m256i *)d);
    const __m256i av = _mm256_set1_epi32(a);
    if (scale_dot) s = _mm256_mullo_epi32(s, av);
    else dv = _mm256_mullo_epi32(dv, av);
    *e = _mm256_add_epi64(*e, _mm256_mul_epi32(s, dv));
    *o = _mm256_add_epi64(*o, _mm256_mul_epi32(_mm256_srli_epi64(s, 32), _mm256_srli_epi64(dv, 32)));
    if (m) {
        const __m256i mv = _mm256_loadu_si256((const __m256i *)m), xv = _mm256_set1_epi32(asx);
        *e = _mm256_add_epi64(*e, _mm256_mul_epi32(mv, xv));
        *o = _mm256_add_epi64(*o, _mm256_mul_epi32(_mm256_srli_epi64(mv, 32), xv));
    }
}

static inline void bq_store(__m256i e, __m256i o, int64_t *acc) { /* rows 0..7 in order */
    const __m256i lo = _mm256_unpacklo_epi64(e, o), hi = _mm256_unpackhi_epi64(e, o);
    _mm256_storeu_si256((__m256i *)acc, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(acc + 4), _mm256_permute2x128_si256(lo, hi, 0x31));
}
#endif

/* acc[16] for one activation row and one group: the sum over blocks (quants at w, every stride
 * bytes; d and m at sc, every sstride bytes). */
static inline __attribute__((always_inline)) void bq_row(const void *w, int kind, int64_t stride, const uint8_t *sc,
                                                         int64_t sstride, int has_m, int scale_dot, int64_t nb,
                                                         const int16_t *qx, const int32_t *a, const int32_t *asx,
                                                         int64_t *acc) {
#if defined(__AVX512BW__)
    __m512i e = _mm512_setzero_si512(), o = e;
    for (int64_t b = 0; b < nb; b++) {
        const int32_t *d = (const int32_t *)(sc + b * sstride);
        const __m512i s = bq_dots((const uint8_t *)w + b * stride, kind, (const int32_t *)(qx + 32 * b));
        bq_weigh(s, d, has_m ? d + 16 : 0, a[b], asx[b], scale_dot, &e, &o);
    }
    _mm512_storeu_si512(acc, _mm512_permutex2var_epi64(e, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), o));
    _mm512_storeu_si512(acc + 8, _mm512_permutex2var_epi64(e, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), o));
#elif defined(__AVX2__)
    __m256i e0 = _mm256_setzero_si256(), o0 = e0, e1 = e0, o1 = e0, s[2];
    for (int64_t b = 0; b < nb; b++) {
        const int32_t *d = (const int32_t *)(sc + b * sstride);
        bq_dots((const uint8_t *)w + b * stride, kind, (const int32_t *)(qx + 32 * b), s);
        bq_weigh(s[0], d, has_m ? d + 16 : 0, a[b], asx[b], scale_dot, &e0, &o0);
        bq_weigh(s[1], d + 8, has_m ? d + 24 : 0, a[b], asx[b], scale_dot, &e1, &o1);
    }
    bq_store(e0, o0, acc);
    bq_store(e1, o1, acc + 8);
#else
    uint64_t u[BQ_ROWS] = {0};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = (const uint8_t *)w + b * stride;
        const int32_t *d = (const int32_t *)(sc + b * sstride);
        const int16_t *xb = qx + 32 * b;
        for (int r = 0; r < BQ_ROWS; r++) {
            int32_t s = 0;
            for (int i = 0; i < 32; i++) {
                const int idx = ((i >> 1) * 16 + r) * 2 + (i & 1);
                const int q = kind == BQ_NIB ? bq_nib(wb, idx)
                            : kind == BQ_BYTE ? ((const int8_t *)wb)[idx] : ((const int16_t *)wb)[idx];
                s += q * xb[i];
            }
            const int64_t dw = d[r];
            u[r] += scale_dot ? (uint64_t)((int64_t)(a[b] * s) * dw) : (uint64_t)((int64_t)s * (a[b] * dw));
            if (has_m) u[r] += (uint64_t)((int64_t)d[16 + r] * asx[b]);
        }
    }
    for (int r = 0; r < BQ_ROWS; r++) acc[r] = (int64_t)u[r];
#endif
}

/* The words of nb blocks of 4-bit quants (the BQ_WORD kind), from records of rs bytes. */
static void bq_unpack(const uint8_t *rec, int64_t nb, int64_t rs, int16_t *out) {
#if defined(__AVX512BW__)
    const __m512i mask = _mm512_set1_epi16(15);
    for (int64_t c = 0; c < nb * 4; c++) {
        const __m512i p = _mm512_loadu_si512(rec + (c >> 2) * rs + 64 * (c & 3));
        int16_t *o = out + 128 * c;
        _mm512_store_si512(o, _mm512_and_si512(p, mask));
        _mm512_store_si512(o + 32, _mm512_and_si512(_mm512_srli_epi16(p, 4), mask));
        _mm512_store_si512(o + 64, _mm512_and_si512(_mm512_srli_epi16(p, 8), mask));
        _mm512_store_si512(o + 96, _mm512_srli_epi16(p, 12));
    }
#elif defined(__AVX2__)
    const __m256i mask = _mm256_set1_epi16(15);
    for (int64_t c = 0; c < nb * 8; c++) {
        const __m256i p = _mm256_loadu_si256((const __m256i *)(rec + (c >> 3) * rs + 32 * (c & 7)));
        __m256i *o = (__m256i *)(out + 64 * c);
        _mm256_store_si256(o, _mm256_and_si256(p, mask));
        _mm256_store_si256(o + 1, _mm256_and_si256(_mm256_srli_epi16(p, 4), mask));
        _mm256_store_si256(o + 2, _mm256_and_si256(_mm256_srli_epi16(p, 8), mask));
        _mm256_store_si256(o + 3, _mm256_srli_epi16(p, 12));
    }
#else
    for (int64_t i = 0; i < nb * 512; i++) out[i] = (int16_t)bq_nib(rec + (i >> 9) * rs, (int)(i & 511));
#endif
}

/* One call's operands (bq_linear's arguments, and the quantized activations). */
typedef struct {
    const uint8_t *rec;
    const int32_t *sc; /* per activation row, a [nb] then a sx [nb] */
    const int64_t *x, *ex;
    int16_t *qx;
    int64_t t_rows, k, n, base_shift, out_max, *y;
    int kind, has_m, scale_dot;
} bq_call;

/* Rows t0..t1 of the activations quantized; 1 if one is outside the kernel's range. */
static int bq_quant_span(const bq_call *c, int64_t t0, int64_t t1) {
    const int64_t k = c->k, nb = k / 32;
    int bad = 0;
    for (int64_t t = t0; t < t1; t++) {
        int32_t *sc = (int32_t *)c->sc + 2 * t * nb;
        int64_t *e = (int64_t *)c->ex + t;
        bad |= bq_quant_row(c->x + t * k, k, c->qx + t * k, sc, sc + nb, e);
        bad |= c->base_shift - *e < -63 || c->base_shift - *e > 46;
    }
    return bad;
}

/* Output groups g0..g1 (16 rows each) for every activation row. */
static void bq_group_span(const bq_call *c, int64_t g0, int64_t g1) {
    const int64_t nb = c->k / 32, n = c->n, qbytes = c->kind == BQ_NIB ? 256 : 512;
    const int64_t rs = qbytes + (c->has_m ? 128 : 64); /* record bytes */
    /* 4-bit quants for several rows: unpack each group's words once, for all of them */
    int16_t *wb = c->kind == BQ_NIB && c->t_rows > 1 ? (int16_t *)aligned_alloc(64, (size_t)(nb * 1024)) : 0;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *rg = c->rec + g * nb * rs;
        const int64_t rows = n - g * BQ_ROWS < BQ_ROWS ? n - g * BQ_ROWS : BQ_ROWS;
        if (wb) bq_unpack(rg, nb, rs, wb);
        for (int64_t t = 0; t < c->t_rows; t++) {
            int64_t acc[BQ_ROWS];
            const int16_t *xt = c->qx + t * c->k;
            const int32_t *at = c->sc + 2 * t * nb, *st = at + nb;
            const uint8_t *sc = rg + qbytes;
            const int hm = c->has_m, sd = c->scale_dot;
            if (wb) bq_row(wb, BQ_WORD, 1024, sc, rs, hm, sd, nb, xt, at, st, acc);
            else if (c->kind == BQ_NIB) bq_row(rg, BQ_NIB, rs, sc, rs, hm, sd, nb, xt, at, st, acc);
            else bq_row(rg, BQ_BYTE, rs, sc, rs, hm, sd, nb, xt, at, st, acc);
            for (int64_t r = 0; r < rows; r++)
                c->y[t * n + g * BQ_ROWS + r] = bq_round((uint64_t)acc[r], c->base_shift - c->ex[t], c->out_max);
        }
    }
    free(wb);
}

/* y [T, N] = blockq.block_linear of x [T, K] (int64) and the packed matrix (records of kind
 * BQ_NIB or BQ_BYTE quants, with m or without), base_shift = 24 + frac_in - frac_out. Returns 0;
 * 1 where an input is outside the kernel's range (|x| >= 2**36, or a rounding shift outside
 * -63..46: the caller asks NumPy); 2 without memory. One thread runs without OpenMP (whose
 * parallel region costs a microsecond even with one thread); more split the rows (quantization),
 * then the output groups, evenly. */
int bq_linear(const int64_t *x, int64_t t_rows, int64_t k, const uint8_t *rec, int64_t n, int kind, int has_m,
              int scale_dot, int64_t base_shift, int64_t out_max, int64_t *y, int nt) {
    const int64_t nb = k / 32, groups = (n + BQ_ROWS - 1) / BQ_ROWS;
    int64_t *ex = (int64_t *)malloc((size_t)t_rows * (8 + 2 * k + 8 * nb) + 64); /* e, qx, a and a sx */
    if (!ex) return 2;
    const bq_call c = {rec, (const int32_t *)((int16_t *)(ex + t_rows) + t_rows * k), x, ex,
                       (int16_t *)(ex + t_rows), t_rows, k, n, base_shift, out_max, y, kind, has_m, scale_dot};
    int bad = 0;
#ifdef _OPENMP
    if (nt > 1 && t_rows > 1) {
#pragma omp parallel num_threads(nt) reduction(| : bad)
        {
            const int64_t i = omp_get_thread_num(), p = omp_get_num_threads();
            bad |= bq_quant_span(&c, t_rows * i / p, t_rows * (i + 1) / p);
        }
    } else
#endif
        bad = bq_quant_span(&c, 0, t_rows);
    if (!bad) {
#ifdef _OPENMP
        if (nt > 1) {
#pragma omp parallel num_threads(nt)
            {
                const int64_t i = omp_get_thread_num(), p = omp_get_num_threads();
                bq_group_span(&c, groups * i / p, groups * (i + 1) / p);
            }
        } else
#endif
            bq_group_span(&c, 0, groups);
    }
    free(ex);
    return bad;
}

/* Trace digests (exact.trace) of tensors grown by appended rows, a step's KV caches: SHA-256 on the
 * x86 SHA extensions; without them vh_grown_digests declines and trace.grown_digest (hashlib) answers. */
#define VH_PEAKS 48
#define VH_STAGE 64

typedef struct { /* SHA-256 part way: the state, the bytes of a block not yet compressed, bytes fed */
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
} vh_ctx;

/* A grown tensor's hashing state (trace.Growth): its rows, its whole chunks and their Merkle peaks
 * (popcount(whole) of them, the largest first), and the open chunk's hash so far. */
typedef struct {
    int64_t rows, whole;
    vh_ctx open;
    uint8_t peaks[VH_PEAKS][32];
} vh_growth;

int64_t vh_growth_bytes(void) { return (int64_t)sizeof(vh_growth); }

#if defined(__SHA__) && defined(__SSE4_1__)
#include <immintrin.h>
#define VH_SHA 1

static const uint32_t VH_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

/* The compression function over n 64-byte blocks (the SHA extensions' ABEF/CDGH state layout). */
static void vh_blocks(uint32_t h[8], const uint8_t *p, size_t n) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);      /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B); /* EFGH */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                          /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                               /* CDGH */
    for (; n; n--, p += 64) {
        const __m128i abef = s0, cdgh = s1;
        __m128i w[4];
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) { /* four rounds a group */
            if (g < 4) {
                w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), swap);
            } else {
                __m128i m = _mm_add_epi32(_mm_sha256msg1_epu32(w[g % 4], w[(g + 1) % 4]),
                                          _mm_alignr_epi8(w[(g + 3) % 4], w[(g + 2) % 4], 4));
                w[g % 4] = _mm_sha256msg2_epu32(m, w[(g + 3) % 4]);
            }
            __m128i m = _mm_add_epi32(w[g % 4], _mm_loadu_si128((const __m128i *)(VH_K + 4 * g)));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
    }
    t = _mm_shuffle_epi32(s0, 0x1B);  /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1); /* DCHG */
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(t, s1, 0xF0));      /* DCBA */
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(s1, t, 8)); /* HGFE */
}

static void vh_init(vh_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->len = 0;
}

static void vh_update(vh_ctx *c, const uint8_t *p, size_t n) {
    size_t have = c->len % 64;
    c->len += n;
    if (have) {
        size_t take = n < 64 - have ? n : 64 - have;
        memcpy(c->buf + have, p, take);
        p += take;
        n -= take;
        if (have + take < 64) return;
        vh_blocks(c->h, c->buf, 1);
    }
    if (n >= 64) vh_blocks(c->h, p, n / 64);
    memcpy(c->buf, p + n / 64 * 64, n % 64);
}

/* The digest of what ``c`` was fed (``c`` unchanged). */
static void vh_final(const vh_ctx *c, uint8_t out[32]) {
    static const uint8_t pad[64] = {0x80};
    vh_ctx d = *c;
    uint8_t bits[8];
    for (int i = 0; i < 8; i++) bits[i] = (uint8_t)((c->len * 8) >> (56 - 8 * i));
    vh_update(&d, pad, 1 + (119 - c->len % 64) % 64);
    vh_update(&d, bits, 8);
    for (int i = 0; i < 8; i++) {
        uint32_t v = __builtin_bswap32(d.h[i]);
        memcpy(out + 4 * i, &v, 4);
    }
}

/* merkle.node: sha256(0x01 || left || right); ``out`` may be either input. */
static void vh_node(const uint8_t *left, const uint8_t *right, uint8_t *out) {
    vh_ctx c;
    uint8_t b[65] = {1};
    memcpy(b + 1, left, 32);
    memcpy(b + 33, right, 32);
    vh_init(&c);
    vh_update(&c, b, sizeof b);
    vh_final(&c, out);
}

static void vh_open(vh_ctx *c) {
    static const uint8_t tag = 3;
    vh_init(c);
    vh_update(c, &tag, 1);
}

/* Values as big-endian integers of ``size`` bytes (a two's complement cast, as NumPy's astype). */
static void vh_pack(const int64_t *x, int64_t n, int64_t size, uint8_t *out) {
    for (int64_t j = 0; j < n; j++) {
        uint64_t v = (uint64_t)x[j];
        if (size == 8) v = __builtin_bswap64(v);
        else if (size == 4) v = __builtin_bswap32((uint32_t)v);
        else if (size == 2) v = __builtin_bswap16((uint16_t)v);
        memcpy(out + j * size, &v, (size_t)size);
    }
}

/* trace.grown_digest of x [rows, cols] (int64) as ``size``-byte integers, ``per`` rows a chunk. */
static void vh_grown(const int64_t *x, int64_t rows, int64_t cols, int64_t size, int64_t per,
                     const vh_growth *prev, vh_growth *g, const uint8_t *header, int64_t hlen, uint8_t *out) {
    uint8_t stage[VH_STAGE * 8], root[32];
    if (prev && prev->rows <= rows) { /* its used peaks only */
        memcpy(g, prev, offsetof(vh_growth, peaks) + 32 * (size_t)__builtin_popcountll((uint64_t)prev->whole));
    } else {
        g->rows = g->whole = 0;
        vh_open(&g->open);
    }
    for (; g->rows < rows; g->rows++) {
        for (int64_t j = 0; j < cols; j += VH_STAGE) {
            int64_t n = cols - j < VH_STAGE ? cols - j : VH_STAGE;
            vh_pack(x + g->rows * cols + j, n, size, stage);
            vh_update(&g->open, stage, (size_t)(n * size));
        }
        if ((g->rows + 1) % per == 0) { /* a whole chunk: its leaf joins the peaks */
            int k = __builtin_popcountll((uint64_t)g->whole);
            vh_final(&g->open, g->peaks[k]);
            for (uint64_t w = (uint64_t)g->whole; w & 1; w >>= 1, k--)
                vh_node(g->peaks[k - 1], g->peaks[k], g->peaks[k - 1]);
            g->whole++;
            vh_open(&g->open);
        }
    }
    int k = __builtin_popcountll((uint64_t)g->whole);
    if (rows % per || k == 0) {
        vh_final(&g->open, root);
    } else {
        memcpy(root, g->peaks[--k], 32);
    }
    while (k-- > 0) vh_node(g->peaks[k], root, root);
    vh_ctx c;
    vh_init(&c);
    vh_update(&c, header, (size_t)hlen);
    vh_update(&c, root, 32);
    vh_final(&c, out);
}
#endif

/* trace.grown_digest of ``count`` tensors of one shape and dtype: items [count][3] are each one's
 * address (int64, C order), rows and the address of its previous growth (or 0); writes each one's
 * growth and digest. Returns 1 (nothing written) without the SHA extensions. */
int vh_grown_digests(int64_t count, const int64_t *items, int64_t cols, int64_t size, int64_t per,
                     const uint8_t *header, int64_t hlen, vh_growth *growths, uint8_t *digests, int nt) {
#ifdef VH_SHA
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && count > 1)
    for (int64_t i = 0; i < count; i++) {
        const int64_t *it = items + 3 * i;
        vh_grown((const int64_t *)(intptr_t)it[0], it[1], cols, size, per, (const vh_growth *)(intptr_t)it[2],
                 growths + i, header, hlen, digests + 32 * i);
    }
    return 0;
#else
    (void)count, (void)items, (void)cols, (void)size, (void)per, (void)header, (void)hlen, (void)growths,
        (void)digests, (void)nt;
    return 1;
#endif
}
