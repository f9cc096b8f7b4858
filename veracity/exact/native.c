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
