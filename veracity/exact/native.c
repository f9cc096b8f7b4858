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
#include <stdint.h>
#include <stdlib.h>

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
