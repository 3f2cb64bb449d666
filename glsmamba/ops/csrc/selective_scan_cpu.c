/* Fused CPU selective scan (Mamba S6), forward and backward, float32, C99 + OpenMP.
 *
 * Built on first use by glsmamba/ops/scan_fused.py with the system C compiler and loaded
 * with ctypes; no Python or torch headers. The caller prepares the inputs:
 *
 *   u, delta (batch, KD, L)   delta' = softplus(delta + bias) (or delta + bias) is
 *                             formed per channel row inside the kernel
 *   bias   (KD,) or NULL
 *   A      (KD, N)
 *   Bt, Ct (batch, K, L, N)   B and C transposed so that the state index is contiguous
 *   D      (KD,) or NULL
 *
 * Recurrence per channel c of path k = c / (KD / K):
 *   h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t,  y_t = sum_n C_tn h_tn + D u_t.
 *
 * exp is evaluated as 2**(dt A log2 e) by a vectorisable polynomial (relative error
 * < 2e-8 before rounding) with the exponent clamped at -64, as the chunked backend does:
 * decays below 2**-64 contribute nothing visible and would only create denormals.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

#define LOG2E 1.4426950408889634f
#define MIN_LOG2 (-64.0f)
#define MAX_LOG2 (127.0f)
#define SEGMENT 128 /* backward: states of one segment are recomputed and kept here */

/* -fopenmp defines _OPENMP; the -fopenmp-simd fallback build passes -DGLSMAMBA_OMP_SIMD */
#if defined(_OPENMP) || defined(GLSMAMBA_OMP_SIMD)
#define SIMD_SUM1(a) _Pragma("omp simd reduction(+:acc)")
#define SIMD_SUM2 _Pragma("omp simd reduction(+:du_acc, ddt_acc)")
#else
#define SIMD_SUM1(a)
#define SIMD_SUM2
#endif

static inline float exp2_clamped(float z) {
    z = z < MIN_LOG2 ? MIN_LOG2 : z;
    z = z > MAX_LOG2 ? MAX_LOG2 : z;
    const float shifter = 12582912.0f; /* 1.5 * 2**23: adding it rounds to an integer */
    float r = (z + shifter) - shifter;
    float f = z - r; /* in [-0.5, 0.5] */
    float p = 1.5469740278e-04f;
    p = p * f + 1.3400441714e-03f;
    p = p * f + 9.6180255770e-03f;
    p = p * f + 5.5503271903e-02f;
    p = p * f + 2.4022651214e-01f;
    p = p * f + 6.9314720672e-01f;
    p = p * f + 1.0f;
    int32_t bits = ((int32_t)r + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static unsigned int enter_flush_denormals(void) {
#ifdef HAVE_MXCSR
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040); /* FTZ | DAZ */
    return old;
#else
    return 0;
#endif
}

static void leave_flush_denormals(unsigned int old) {
#ifdef HAVE_MXCSR
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int glsmamba_scan_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Short float vectors (GCC/Clang vector extension) for N % VW == 0 (N = 16): 8 lanes with
 * AVX, else 4 (SSE2, NEON). The names say 8 but mean VW. */
#if defined(__GNUC__)
#define HAVE_VEC8 1
#if defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif
typedef float vf8 __attribute__((vector_size(4 * VW)));
typedef int32_t vi8 __attribute__((vector_size(4 * VW)));

static inline vf8 splat8(float x) { return (vf8){0} + x; }

static inline vf8 load8(const float *p) {
    vf8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, vf8 v) { memcpy(p, &v, sizeof v); }

static inline vf8 select8(vi8 mask, vf8 a, vf8 b) { /* mask ? a : b */
    vi8 ai, bi;
    memcpy(&ai, &a, sizeof ai);
    memcpy(&bi, &b, sizeof bi);
    vi8 r = (mask & ai) | (~mask & bi);
    vf8 out;
    memcpy(&out, &r, sizeof out);
    return out;
}

static inline vf8 exp2_clamped8(vf8 z) {
    z = select8(z < splat8(MIN_LOG2), splat8(MIN_LOG2), z);
    z = select8(z > splat8(MAX_LOG2), splat8(MAX_LOG2), z);
    const vf8 shifter = splat8(12582912.0f);
    vf8 r = (z + shifter) - shifter;
    vf8 f = z - r;
    vf8 p = splat8(1.5469740278e-04f);
    p = p * f + 1.3400441714e-03f;
    p = p * f + 9.6180255770e-03f;
    p = p * f + 5.5503271903e-02f;
    p = p * f + 2.4022651214e-01f;
    p = p * f + 6.9314720672e-01f;
    p = p * f + 1.0f;
    vi8 bits = (__builtin_convertvector(r, vi8) + 127) << 23;
    vf8 scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sum8(vf8 v) {
#if VW == 8
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
#else
    return (v[0] + v[2]) + (v[1] + v[3]);
#endif
}

#define MAX_VEC (64 / VW) /* N up to 64 on the vector path */

static void forward_channel_vec(const float *u, const float *dt, const float *A2, const float *Bt,
                                const float *Ct, float d, float *y, int64_t L, int64_t N) {
    const int64_t nv = N / VW;
    vf8 h[MAX_VEC], a2[MAX_VEC];
    for (int64_t j = 0; j < nv; j++) {
        h[j] = splat8(0.0f);
        a2[j] = load8(A2 + VW * j);
    }
    for (int64_t t = 0; t < L; t++) {
        const float step = dt[t], drive = step * u[t];
        const float *b = Bt + t * N, *c = Ct + t * N;
        vf8 acc = splat8(0.0f);
        for (int64_t j = 0; j < nv; j++) {
            h[j] = exp2_clamped8(a2[j] * step) * h[j] + load8(b + VW * j) * drive;
            acc += load8(c + VW * j) * h[j];
        }
        y[t] = sum8(acc) + d * u[t];
    }
}
#endif

/* delta' = softplus(delta + bias) (or delta + bias) for one channel row. */
static void prepare_row(const float *delta, float bias, int softplus, float *dt, int64_t L) {
    int64_t t = 0;
#ifdef HAVE_VEC8
    for (; t + VW <= L; t += VW) {
        vf8 x = load8(delta + t) + bias;
        if (softplus) {
            /* softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|); log1p(e) = 2 atanh(e / (2 + e)) */
            vf8 ax = select8(x < 0.0f, -x, x);
            vf8 e = exp2_clamped8(ax * -LOG2E);
            vf8 q = e / (e + 2.0f), q2 = q * q;
            vf8 p = splat8(1.0f / 13.0f);
            p = p * q2 + 1.0f / 11.0f;
            p = p * q2 + 1.0f / 9.0f;
            p = p * q2 + 1.0f / 7.0f;
            p = p * q2 + 1.0f / 5.0f;
            p = p * q2 + 1.0f / 3.0f;
            p = p * q2 + 1.0f;
            x = select8(x > 0.0f, x, splat8(0.0f)) + 2.0f * q * p;
        }
        store8(dt + t, x);
    }
#endif
    for (; t < L; t++) {
        float x = delta[t] + bias;
        dt[t] = softplus ? (x > 20.0f ? x : log1pf(expf(x))) : x;
    }
}

/* ddelta (gradient of delta') becomes the gradient of delta: times sigmoid(delta + bias)
 * when softplus; returns its sum (the bias gradient of this row) in double. */
static double chain_row(const float *delta, float bias, int softplus, float *ddelta, int64_t L) {
    double total = 0.0;
    int64_t t = 0;
    if (softplus) {
#ifdef HAVE_VEC8
        for (; t + VW <= L; t += VW) {
            vf8 x = load8(delta + t) + bias;
            vf8 ax = select8(x < 0.0f, -x, x);
            vf8 e = exp2_clamped8(ax * -LOG2E);
            vf8 sig = select8(x < 0.0f, e, splat8(1.0f)) / (e + 1.0f);
            vf8 g = load8(ddelta + t) * sig;
            store8(ddelta + t, g);
            for (int i = 0; i < VW; i++) total += g[i];
        }
#endif
        for (; t < L; t++) {
            float x = delta[t] + bias;
            ddelta[t] *= 1.0f / (1.0f + expf(-x));
            total += ddelta[t];
        }
    } else {
        for (; t < L; t++) total += ddelta[t];
    }
    return total;
}

/* One channel forward: y[0..L) from its rows; h is an N-float scratch. */
/* One channel forward: y[0..L) from its rows; h is an N-float scratch. */
static void forward_channel(const float *u, const float *dt, const float *A2, const float *Bt,
                            const float *Ct, float d, float *y, float *h, int64_t L, int64_t N) {
#ifdef HAVE_VEC8
    if (N % VW == 0 && N <= VW * MAX_VEC) {
        forward_channel_vec(u, dt, A2, Bt, Ct, d, y, L, N);
        return;
    }
#endif
    for (int64_t n = 0; n < N; n++) h[n] = 0.0f;
    for (int64_t t = 0; t < L; t++) {
        const float step = dt[t], drive = step * u[t];
        const float *b = Bt + t * N, *c = Ct + t * N;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            float hn = exp2_clamped(step * A2[n]) * h[n] + drive * b[n];
            h[n] = hn;
            acc += c[n] * hn;
        }
        y[t] = acc + d * u[t];
    }
}

void glsmamba_scan_forward(const float *u, const float *delta, const float *A, const float *Bt,
                           const float *Ct, const float *D, const float *bias, int softplus, float *y,
                           int64_t batch, int64_t KD, int64_t K, int64_t L, int64_t N, int threads) {
    const int64_t per_path = KD / K, units = batch * KD;
    /* dynamic chunks of about 4096 steps: a thread that the OS delays on a busy machine
     * does not hold up the others, and short sequences (L = 5) are not scheduled singly */
    const int64_t chunk = L >= 4096 ? 1 : 4096 / L;
    (void)chunk;
    float *A2 = (float *)malloc(sizeof(float) * KD * N);
    for (int64_t i = 0; i < KD * N; i++) A2[i] = A[i] * LOG2E;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        unsigned int csr = enter_flush_denormals();
        float *h = (float *)malloc(sizeof(float) * N);
        float *dt = (float *)malloc(sizeof(float) * L);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, chunk)
#endif
        for (int64_t unit = 0; unit < units; unit++) {
            const int64_t b = unit / KD, c = unit % KD, k = c / per_path;
            const int64_t row = unit * L, bc = (b * K + k) * L * N;
            prepare_row(delta + row, bias ? bias[c] : 0.0f, softplus, dt, L);
            forward_channel(u + row, dt, A2 + c * N, Bt + bc, Ct + bc, D ? D[c] : 0.0f,
                            y + row, h, L, N);
        }
        free(h);
        free(dt);
        leave_flush_denormals(csr);
    }
    (void)threads;
    free(A2);
}

/* Per-thread scratch of the backward pass. */
typedef struct {
    float *h;      /* (SEGMENT + 1, N): state before the segment, then after each step */
    float *decay;  /* (SEGMENT, N) */
    float *starts; /* (L / SEGMENT + 1, N): checkpointed segment-start states */
    float *dh;     /* (N,) adjoint */
    float *dA_seg; /* (N,) float accumulator within a segment */
    double *dA;    /* (KD, N) per-thread dA accumulator */
    double *dD;    /* (KD,) */
} Scratch;

#ifdef HAVE_VEC8
static void backward_channel_vec(const float *u, const float *dt, const float *A, const float *A2,
                                 const float *Bt, const float *Ct, float d, const float *dy,
                                 float *du, float *ddt, float *dBt, float *dCt, double *dA,
                                 double *dD, Scratch *s, int64_t L, int64_t N);
#endif

/* One channel backward. dBt/dCt rows are shared by the channels of the path (the caller
 * makes sure one thread owns them); dA/dD go to the thread's double accumulators. */
static void backward_channel(const float *u, const float *dt, const float *A, const float *A2,
                             const float *Bt, const float *Ct, float d, const float *dy, float *du,
                             float *ddt, float *dBt, float *dCt, double *dA, double *dD,
                             Scratch *s, int64_t L, int64_t N) {
#ifdef HAVE_VEC8
    if (N % VW == 0 && N <= VW * MAX_VEC) {
        backward_channel_vec(u, dt, A, A2, Bt, Ct, d, dy, du, ddt, dBt, dCt, dA, dD, s, L, N);
        return;
    }
#endif
    const int64_t segments = (L + SEGMENT - 1) / SEGMENT;
    float *h = s->h, *decay = s->decay, *dh = s->dh, *dA_seg = s->dA_seg;
    /* pass 1: segment-start states */
    for (int64_t n = 0; n < N; n++) h[n] = 0.0f;
    for (int64_t seg = 0; seg < segments; seg++) {
        memcpy(s->starts + seg * N, h, sizeof(float) * N);
        const int64_t t1 = (seg + 1) * SEGMENT < L ? (seg + 1) * SEGMENT : L;
        for (int64_t t = seg * SEGMENT; t < t1; t++) {
            const float step = dt[t], drive = step * u[t];
            const float *b = Bt + t * N;
            for (int64_t n = 0; n < N; n++) h[n] = exp2_clamped(step * A2[n]) * h[n] + drive * b[n];
        }
    }
    /* pass 2: segments backwards; recompute states and decays, then the adjoint */
    double dD_acc = 0.0;
    for (int64_t n = 0; n < N; n++) dh[n] = 0.0f;
    for (int64_t seg = segments - 1; seg >= 0; seg--) {
        const int64_t t0 = seg * SEGMENT, t1 = (t0 + SEGMENT) < L ? t0 + SEGMENT : L;
        memcpy(h, s->starts + seg * N, sizeof(float) * N);
        for (int64_t t = t0; t < t1; t++) {
            const float step = dt[t], drive = step * u[t];
            const float *b = Bt + t * N;
            const float *prev = h + (t - t0) * N;
            float *next = h + (t - t0 + 1) * N, *dec = decay + (t - t0) * N;
            for (int64_t n = 0; n < N; n++) {
                float a = exp2_clamped(step * A2[n]);
                dec[n] = a;
                next[n] = a * prev[n] + drive * b[n];
            }
        }
        for (int64_t n = 0; n < N; n++) dA_seg[n] = 0.0f;
        for (int64_t t = t1 - 1; t >= t0; t--) {
            const float g = dy[t], step = dt[t], ut = u[t];
            const float *b = Bt + t * N, *c = Ct + t * N;
            const float *prev = h + (t - t0) * N, *cur = h + (t - t0 + 1) * N, *dec = decay + (t - t0) * N;
            float *db = dBt + t * N, *dc = dCt + t * N;
            float du_acc = 0.0f, ddt_acc = 0.0f;
            SIMD_SUM2
            for (int64_t n = 0; n < N; n++) {
                float lam = dh[n] + g * c[n];
                dc[n] += g * cur[n];
                float ah = dec[n] * prev[n];
                du_acc += lam * b[n];
                ddt_acc += lam * (b[n] * ut + A[n] * ah);
                dA_seg[n] += lam * step * ah;
                db[n] += lam * step * ut;
                dh[n] = lam * dec[n];
            }
            du[t] = du_acc * step + g * d;
            ddt[t] = ddt_acc;
            dD_acc += (double)g * ut;
        }
        for (int64_t n = 0; n < N; n++) dA[n] += dA_seg[n];
    }
    *dD += dD_acc;
}

#ifdef HAVE_VEC8
/* backward_channel for N % VW == 0: the same passes on 8-float vectors. */
static void backward_channel_vec(const float *u, const float *dt, const float *A, const float *A2,
                                 const float *Bt, const float *Ct, float d, const float *dy,
                                 float *du, float *ddt, float *dBt, float *dCt, double *dA,
                                 double *dD, Scratch *s, int64_t L, int64_t N) {
    const int64_t segments = (L + SEGMENT - 1) / SEGMENT, nv = N / VW;
    float *hs = s->h, *decay = s->decay;
    vf8 h[MAX_VEC], a2[MAX_VEC], a[MAX_VEC], dh[MAX_VEC], dA_seg[MAX_VEC];
    for (int64_t j = 0; j < nv; j++) {
        h[j] = splat8(0.0f);
        a2[j] = load8(A2 + VW * j);
        a[j] = load8(A + VW * j);
        dh[j] = splat8(0.0f);
    }
    for (int64_t seg = 0; seg < segments; seg++) { /* pass 1: segment-start states */
        for (int64_t j = 0; j < nv; j++) store8(s->starts + seg * N + VW * j, h[j]);
        const int64_t t1 = (seg + 1) * SEGMENT < L ? (seg + 1) * SEGMENT : L;
        for (int64_t t = seg * SEGMENT; t < t1; t++) {
            const float step = dt[t], drive = step * u[t];
            for (int64_t j = 0; j < nv; j++)
                h[j] = exp2_clamped8(a2[j] * step) * h[j] + load8(Bt + t * N + VW * j) * drive;
        }
    }
    double dD_acc = 0.0;
    for (int64_t seg = segments - 1; seg >= 0; seg--) {
        const int64_t t0 = seg * SEGMENT, t1 = (t0 + SEGMENT) < L ? t0 + SEGMENT : L;
        for (int64_t j = 0; j < nv; j++) {
            h[j] = load8(s->starts + seg * N + VW * j);
            store8(hs + VW * j, h[j]);
            dA_seg[j] = splat8(0.0f);
        }
        for (int64_t t = t0; t < t1; t++) { /* recompute states and decays of the segment */
            const float step = dt[t], drive = step * u[t];
            for (int64_t j = 0; j < nv; j++) {
                vf8 dec = exp2_clamped8(a2[j] * step);
                store8(decay + (t - t0) * N + VW * j, dec);
                h[j] = dec * h[j] + load8(Bt + t * N + VW * j) * drive;
                store8(hs + (t - t0 + 1) * N + VW * j, h[j]);
            }
        }
        for (int64_t t = t1 - 1; t >= t0; t--) { /* adjoint */
            const float g = dy[t], step = dt[t], ut = u[t], su = step * ut;
            vf8 du_acc = splat8(0.0f), ddt_acc = splat8(0.0f);
            for (int64_t j = 0; j < nv; j++) {
                const int64_t o = (t - t0) * N + VW * j, bo = t * N + VW * j;
                vf8 b = load8(Bt + bo), dec = load8(decay + o), prev = load8(hs + o);
                vf8 lam = dh[j] + load8(Ct + bo) * g;
                store8(dCt + bo, load8(dCt + bo) + load8(hs + o + N) * g);
                vf8 ah = dec * prev;
                du_acc += lam * b;
                ddt_acc += lam * (b * ut + a[j] * ah);
                dA_seg[j] += lam * ah * step;
                store8(dBt + bo, load8(dBt + bo) + lam * su);
                dh[j] = lam * dec;
            }
            du[t] = sum8(du_acc) * step + g * d;
            ddt[t] = sum8(ddt_acc);
            dD_acc += (double)g * ut;
        }
        for (int64_t j = 0; j < nv; j++)
            for (int i = 0; i < VW; i++) dA[VW * j + i] += dA_seg[j][i];
    }
    *dD += dD_acc;
}
#endif

/* dA and dD are float outputs (KD, N) and (KD,), dD may be NULL when D is NULL.
 * dBt, dCt (batch, K, L, N) are written completely (no need to zero them). */
int glsmamba_scan_backward(const float *u, const float *delta, const float *A, const float *Bt,
                           const float *Ct, const float *D, const float *bias, int softplus,
                           const float *dy, float *du, float *ddelta, float *dA, float *dBt,
                           float *dCt, float *dD, float *dbias, int64_t batch, int64_t KD,
                           int64_t K, int64_t L, int64_t N, int threads) {
    const int64_t per_path = KD / K, blocks = batch * K, path_elems = L * N;
    if (threads < 1) threads = 1;
#ifndef _OPENMP
    threads = 1;
#endif
    /* Channels of one (b, k) block share dB/dC rows: a block is cut into `groups` channel
     * groups, each with its own dB/dC partial, so that there are enough units to keep the
     * threads busy; partials are summed at the end. */
    int64_t groups = 1;
    if (threads > 1 && blocks < 4 * threads) {
        groups = (4 * threads + blocks - 1) / blocks;
        if (groups > per_path) groups = per_path;
    }
    const int64_t units = blocks * groups, total = blocks * path_elems;
    float *part_B = dBt, *part_C = dCt;
    if (groups > 1) {
        part_B = (float *)calloc((size_t)(groups * total), sizeof(float));
        part_C = (float *)calloc((size_t)(groups * total), sizeof(float));
        if (!part_B || !part_C) {
            free(part_B);
            free(part_C);
            return 1;
        }
    } else {
        memset(dBt, 0, sizeof(float) * total);
        memset(dCt, 0, sizeof(float) * total);
    }
    float *A2 = (float *)malloc(sizeof(float) * KD * N);
    double *acc_A = (double *)calloc((size_t)(threads * KD * N), sizeof(double));
    double *acc_D = (double *)calloc((size_t)(threads * KD), sizeof(double));
    double *acc_bias = (double *)calloc((size_t)(threads * KD), sizeof(double));
    for (int64_t i = 0; i < KD * N; i++) A2[i] = A[i] * LOG2E;
    const int64_t segments = (L + SEGMENT - 1) / SEGMENT;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        unsigned int csr = enter_flush_denormals();
        const int tid = thread_id();
        Scratch s;
        s.h = (float *)malloc(sizeof(float) * (SEGMENT + 1) * N);
        s.decay = (float *)malloc(sizeof(float) * SEGMENT * N);
        s.starts = (float *)malloc(sizeof(float) * (segments + 1) * N);
        s.dh = (float *)malloc(sizeof(float) * N);
        s.dA_seg = (float *)malloc(sizeof(float) * N);
        s.dA = acc_A + (int64_t)tid * KD * N;
        s.dD = acc_D + (int64_t)tid * KD;
        float *dt = (float *)malloc(sizeof(float) * L);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t unit = 0; unit < units; unit++) {
            const int64_t block = unit / groups, g = unit % groups;
            const int64_t b = block / K, k = block % K;
            const int64_t c0 = k * per_path + g * per_path / groups;
            const int64_t c1 = k * per_path + (g + 1) * per_path / groups;
            const int64_t bk = block * path_elems;
            float *db = part_B + g * total + bk, *dc = part_C + g * total + bk;
            for (int64_t c = c0; c < c1; c++) {
                const int64_t row = (b * KD + c) * L;
                const float bias_c = bias ? bias[c] : 0.0f;
                prepare_row(delta + row, bias_c, softplus, dt, L);
                backward_channel(u + row, dt, A + c * N, A2 + c * N, Bt + bk, Ct + bk,
                                 D ? D[c] : 0.0f, dy + row, du + row, ddelta + row, db, dc,
                                 s.dA + c * N, s.dD + c, &s, L, N);
                acc_bias[(int64_t)tid * KD + c] += chain_row(delta + row, bias_c, softplus, ddelta + row, L);
            }
        }
        free(s.h);
        free(s.decay);
        free(s.starts);
        free(s.dh);
        free(s.dA_seg);
        free(dt);
        if (groups > 1) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t i = 0; i < total; i++) {
                float sb = 0.0f, sc = 0.0f;
                for (int64_t g = 0; g < groups; g++) {
                    sb += part_B[g * total + i];
                    sc += part_C[g * total + i];
                }
                dBt[i] = sb;
                dCt[i] = sc;
            }
        }
        leave_flush_denormals(csr);
    }
    for (int64_t i = 0; i < KD * N; i++) {
        double sum = 0.0;
        for (int tid = 0; tid < threads; tid++) sum += acc_A[(int64_t)tid * KD * N + i];
        dA[i] = (float)sum;
    }
    if (dD) {
        for (int64_t c = 0; c < KD; c++) {
            double sum = 0.0;
            for (int tid = 0; tid < threads; tid++) sum += acc_D[(int64_t)tid * KD + c];
            dD[c] = (float)sum;
        }
    }
    if (dbias) {
        for (int64_t c = 0; c < KD; c++) {
            double sum = 0.0;
            for (int tid = 0; tid < threads; tid++) sum += acc_bias[(int64_t)tid * KD + c];
            dbias[c] = (float)sum;
        }
    }
    if (groups > 1) {
        free(part_B);
        free(part_C);
    }
    free(A2);
    free(acc_A);
    free(acc_D);
    free(acc_bias);
    return 0;
}
