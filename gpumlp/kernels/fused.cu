// gpumlp's fused kernels, compiled by NVRTC through cupy.RawModule (gpumlp/kernels/launch.py),
// and, in CPU CI, as host C++ through tests/hostcuda/shim.h, run over every (block, thread).
//
// T is float or double.  Arrays are C-contiguous unless a kernel says otherwise (the launchers
// declare each array's layout in launch.LAYOUTS).  Every kernel is a grid-stride loop, one
// thread per element, or per column for the losses and the per-example norms.  No thread reads
// what another thread writes, and there is no shared memory, no __syncthreads, no atomics and no
// warp intrinsic: the host build leaves those undefined, so a kernel that needs one fails to
// build there until it gets a way to be tested without a GPU.
#define GRID_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float  gm_tanh(float x)  { return tanhf(x); }
__device__ __forceinline__ double gm_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float  gm_exp(float x)   { return expf(x); }
__device__ __forceinline__ double gm_exp(double x)  { return exp(x); }
__device__ __forceinline__ float  gm_log(float x)   { return logf(x); }
__device__ __forceinline__ double gm_log(double x)  { return log(x); }

// BEGIN GENERATED BLOCK
// from gpumlp.activations by `python -m gpumlp.kernels.source`; do not edit by hand.
// ACT: 0 linear, 1 relu, 2 leaky_relu, 3 tanh, 4 sigmoid
template<typename T, int ACT> __device__ __forceinline__ T gm_act(T s) {
    if (ACT == 0) return s;
    if (ACT == 1) return (s > T(0) || s != s) ? s : T(0);
    if (ACT == 2) return s > s * T(0.01) ? s : s * T(0.01);
    if (ACT == 3) return gm_tanh(s);
    if (ACT == 4) return (gm_tanh(s * T(0.5)) + T(1)) * T(0.5);
    return s;
}

template<typename T, int ACT> __device__ __forceinline__ T gm_act_grad(T s, T z) {
    if (ACT == 0) return T(1);
    if (ACT == 1) return s > T(0) ? T(1) : T(0);
    if (ACT == 2) return (s > T(0) ? T(1) : T(0)) * T(0.99) + T(0.01);
    if (ACT == 3) return T(1) - z * z;
    if (ACT == 4) return (T(1) - z) * z;
    return T(1);
}
// END GENERATED BLOCK

// S += b (b: one value per row), Z = f(S).  For ACT == 0, Z is S and is not written.
template<typename T, int ACT, int BIAS>
__global__ void bias_act(T* S, const T* b, T* Z, long long cols, long long total) {
    GRID_LOOP(i, total) {
        T s = S[i];
        if (BIAS) { s = s + b[i / cols]; S[i] = s; }
        if (ACT != 0) Z[i] = gm_act<T, ACT>(s);
    }
}

// D *= f'(S)
template<typename T, int ACT>
__global__ void act_grad(const T* S, const T* Z, T* D, long long total) {
    GRID_LOOP(i, total) { D[i] = D[i] * gm_act_grad<T, ACT>(S[i], Z[i]); }
}

// The column's max and argmax as numpy.max and numpy.argmax give them (the first NaN wins
// both: a NaN max makes the whole column NaN, as on the host), and Σ exp(Y − max).
template<typename T>
__device__ __forceinline__ void gm_column(const T* Y, long long c, int K, long long n,
                                          T& m, int& am, T& sum) {
    m = Y[c]; am = 0;
    for (int k = 1; k < K; ++k) {
        T y = Y[k * n + c];
        if (m == m && (y > m || y != y)) { m = y; am = k; }
    }
    sum = T(0);
    for (int k = 0; k < K; ++k) sum += gm_exp(Y[k * n + c] - m);
}

template<typename T>
__global__ void ce_loss(const T* Y, const long long* labels, T* D, T* loss, bool* hit,
                        int K, long long n, T inv_norm, T margin) {
    GRID_LOOP(c, n) {
        T m, sum; int am; gm_column(Y, c, K, n, m, am, sum);
        int y = (int)labels[c];
        for (int k = 0; k < K; ++k) {
            T p = gm_exp(Y[k * n + c] - m) / sum;
            D[k * n + c] = (p - (k == y ? T(1) : T(0))) * inv_norm;
        }
        loss[c] = (gm_log(sum) - (Y[y * n + c] - m)) * inv_norm;
        hit[c] = am == y;
    }
}

template<typename T>
__global__ void hinge_loss(const T* Y, const long long* labels, T* D, T* loss, bool* hit,
                           int K, long long n, T inv_norm, T margin) {
    GRID_LOOP(c, n) {
        T m, sum; int am; gm_column(Y, c, K, n, m, am, sum);
        int y = (int)labels[c];
        T py = gm_exp(Y[y * n + c] - m) / sum;
        T total = T(0), active = T(0);
        for (int k = 0; k < K; ++k) {
            T M = gm_exp(Y[k * n + c] - m) / sum - py + margin;
            T a = (M >= T(0) ? T(1) : T(0)) - (k == y ? T(1) : T(0));
            total += M * a; active += a;
        }
        T pg = T(0);                                    // Σ_k p_k G_k
        for (int k = 0; k < K; ++k) {
            T p = gm_exp(Y[k * n + c] - m) / sum;
            T a = (p - py + margin >= T(0) ? T(1) : T(0)) - (k == y ? T(1) : T(0));
            pg += p * (a - (k == y ? active : T(0)));
        }
        for (int k = 0; k < K; ++k) {
            T p = gm_exp(Y[k * n + c] - m) / sum;
            T a = (p - py + margin >= T(0) ? T(1) : T(0)) - (k == y ? T(1) : T(0));
            D[k * n + c] = p * ((a - (k == y ? active : T(0))) - pg) * inv_norm;
        }
        loss[c] = total * inv_norm;
        hit[c] = am == y;
    }
}

template<typename T>
__global__ void mse_loss(const T* Y, const long long* labels, T* D, T* loss, bool* hit,
                         int K, long long n, T inv_norm, T margin) {
    GRID_LOOP(c, n) {
        int y = (int)labels[c], am = 0;
        T total = T(0), m = Y[c];
        for (int k = 0; k < K; ++k) {
            T v = Y[k * n + c];
            if (m == m && (v > m || v != v)) { m = v; am = k; }
            T r = v - (k == y ? T(1) : T(0));
            D[k * n + c] = r * inv_norm;
            total += r * r;
        }
        loss[c] = total * (T(0.5) * inv_norm);
        hit[c] = am == y;
    }
}

// Regression on real targets: TT holds them one column per row (n × K, C-contiguous).
// D = (Y − T)·scale, loss = Σ_k (Y − T)²·half_scale; scale = inv_norm / K, half_scale = its half.
// No hit.
template<typename T>
__global__ void squared_error_loss(const T* Y, const T* TT, T* D, T* loss,
                                   int K, long long n, T scale, T half_scale) {
    GRID_LOOP(c, n) {
        T total = T(0);
        for (int k = 0; k < K; ++k) {
            T r = Y[k * n + c] - TT[c * K + k];
            D[k * n + c] = r * scale;
            total += r * r;
        }
        loss[c] = total * half_scale;
    }
}

// v = momentum v + g + wd p;  p -= lr v   (v is g + wd p without momentum).  DECAY is whether a
// weight decay was asked for, decided on the caller's value, so a decay that rounds to 0 in T
// still multiplies p as the twin does.
template<typename T, int MOMENTUM, int DECAY>
__global__ void sgd(T* p, const T* g, T* v, long long n, T lr, T momentum, T wd) {
    GRID_LOOP(i, n) {
        T d = g[i];
        if (DECAY) d = p[i] * wd + d;
        if (MOMENTUM) { d = v[i] * momentum + d; v[i] = d; }
        p[i] = p[i] - d * lr;
    }
}

// Layer k's share of each column's squared gradient norm:
// out (= or +=) ‖Δ_k[:,c]‖² (‖Z_{k-1}[:,c]‖² + BIAS).  D is C-contiguous (rows_d × n); Z is read
// through its element strides (zr, zc), since Z_0 is the F-contiguous batch view of the data.
template<typename T, int BIAS, int FIRST>
__global__ void sample_sq(const T* D, const T* Z, T* out, int rows_d, int rows_z, long long n,
                          long long zr, long long zc) {
    GRID_LOOP(c, n) {
        T dn = T(0), zn = T(0);
        for (int i = 0; i < rows_d; ++i) { T v = D[i * n + c]; dn += v * v; }
        for (int j = 0; j < rows_z; ++j) { T v = Z[j * zr + c * zc]; zn += v * v; }
        if (BIAS) zn = zn + T(1);
        out[c] = FIRST ? dn * zn : out[c] + dn * zn;
    }
}
