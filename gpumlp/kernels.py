"""The fused element-wise kernels of a training step, each with its NumPy twin.

A step needs, besides its GEMMs, only these element-wise passes:

* ``bias_act``   S_k += b_k, then Z_k = f_k(S_k)                  (forward, per layer)
* ``act_grad``   D ⊙= f'(S)                                       (the ⊙ f_k'(S_k) of the Δ recursion)
* ``ce``, ``hinge``, ``mse``   one pass over Y that writes ∂L/∂Y straight into Δ_L, plus each
                 column's loss and whether its argmax hit the label (one thread per column)
* ``sgd``        v ← momentum·v + g + weight_decay·θ;  θ ← θ − lr·v   (over the flat buffer)

and, only when per-example gradient norms are asked for (the gradient noise scale):

* ``sample_sq``  s_n (+)= ‖Δ_k[:,n]‖² (‖Z_{k-1}[:,n]‖² + 1)           (per layer; twin only)

Each kernel has two forms with the same semantics:

* the **twin**, array-module code (``xp`` is NumPy, CuPy or an array-API namespace)
  that writes only into buffers it is given (``out=``), so a step allocates nothing.
  The CPU runs it, and the CPU tests check it against the float64 oracle;
* the **compiled** form: one CUDA kernel from :data:`CUDA_SOURCE`, built with
  NVRTC through ``cupy.RawModule`` the first time it is used.

Which runs is the backend's choice (:meth:`gpumlp.backend.Backend.kernel`).  The
compiled kernels are used only on CuPy and only when ``GPUMLP_FUSED=1``: they have
not yet passed the ``gpu`` tests on a real card, and until that run is recorded in
the repository they stay off, and a GPU runs the twins, one CuPy kernel per call.
CPU CI compiles :data:`CUDA_SOURCE` with nvcc for sm_90 (``tests/test_kernels.py``).
"""
import os

import numpy as np

__all__ = ["Kernel", "bias_act", "act_grad", "LOSS_KERNELS", "TARGET_LOSS_KERNELS", "SGD_KERNEL", "SAMPLE_SQ_KERNEL", "LossScratch",
           "CUDA_SOURCE",
           "fused_enabled", "instantiations"]

THREADS = 256


def fused_enabled():
    """True when ``$GPUMLP_FUSED`` asks for the compiled kernels (``1``, ``true``, ``on``)."""
    return os.environ.get("GPUMLP_FUSED", "0").strip().lower() in ("1", "true", "yes", "on")


class Kernel:
    """One fused unit: a ``name`` (it counts as one kernel), the ``twin`` function
    ``twin(xp, *args)``, and the CUDA template ``cuda`` it compiles to (None when the
    unit does no work, as ``f'`` of the identity).  ``host``, where given, is a
    NumPy-only spelling of the twin with the same arguments and results that plain
    NumPy runs instead, where NumPy has a faster way (tests hold it to the twin)."""

    def __init__(self, name, twin, cuda=None, launch=None, host=None):
        self.name, self.twin, self.cuda, self.launch, self.host = name, twin, cuda, launch, host

    def __repr__(self):
        return f"<gpumlp kernel {self.name}>"


def _nothing(*args):
    """The identity's f' = 1: nothing to do, no kernel."""


# -- a layer: forward S += b, Z = f(S); backward D ⊙= f'(S) ---------------------------------
def bias_act(f, bias):
    """The forward kernel of a layer with activation ``f``: ``k(S, b, Z)``; Z is S for the identity."""
    def twin(xp, S, b, Z):
        if bias:
            xp.add(S, b, out=S)                     # S_k = W_k Z_{k-1} + b_k
        f.forward(xp, S, Z)                         # Z_k = f_k(S_k)

    if f.identity and not bias:
        return Kernel("linear", _nothing)
    name = "bias" if f.identity else ("bias+" if bias else "") + f.name
    return Kernel(name, twin, f"bias_act<{{T}}, {f.code}, {int(bias)}>", _launch_bias_act)


def act_grad(f):
    """``k(S, Z, D, mask, tmp)``: D ⊙= f'(S), with the twin's scratch ``mask`` or ``tmp``."""
    if f.identity:
        return Kernel("linear'", _nothing)

    def twin(xp, S, Z, D, mask, tmp):
        f.scale(xp, S, Z, D, mask, tmp)
    return Kernel(f.name + "'", twin, f"act_grad<{{T}}, {f.code}>", _launch_act_grad)


# -- the losses: ∂L/∂Y into Δ_L, per-column loss and hit ------------------------------------
# Arguments: Y (K × n), labels (n,), D (K × n, receives ∂L/∂Y), loss (n,), hit (n, bool),
# inv_norm (1 / the normaliser), margin, and the twin's scratch ``s`` (see LossScratch).

def _shifted(xp, Y, D, s):
    """D = Y − m, with s.m the column max."""
    xp.max(Y, axis=0, keepdims=True, out=s.m)
    xp.subtract(Y, s.m, out=D)


def _softmax_from_shifted(xp, D, s):
    """D = exp(D) / Σ exp(D) = p, keeping s.sum = Σ exp(Y − m)."""
    xp.exp(D, out=D)
    xp.sum(D, axis=0, keepdims=True, out=s.sum)
    xp.divide(D, s.sum, out=D)


def _one_hot(xp, labels, s):
    xp.equal(s.rows, labels[None, :], out=s.onehot)


def _hits(xp, Y, labels, hit, s):
    xp.argmax(Y, axis=0, out=s.argmax)
    xp.equal(s.argmax, labels, out=hit)


def _ce_twin(xp, Y, labels, D, loss, hit, inv_norm, margin, s):
    """L_n = log Σ_j exp(Y_jn) − Y_{y_n n} (shifted by the column max); ∂L/∂Y = (p − onehot) / N."""
    _one_hot(xp, labels, s)
    _shifted(xp, Y, D, s)
    xp.multiply(labels, Y.shape[1], out=s.at)                    # the flat index of (y_n, n)
    xp.add(s.at, s.cols, out=s.at)
    xp.take(xp.reshape(D, (-1,)), s.at, out=s.py[0, :])          # Y_y − m, exactly (a gather, as the kernel reads it)
    _softmax_from_shifted(xp, D, s)
    xp.log(s.sum, out=s.sum)
    xp.subtract(s.sum, s.py, out=s.sum)                          # −log p_y = log Σ exp(Y − m) − (Y_y − m)
    xp.multiply(s.sum[0, :], inv_norm, out=loss)
    xp.subtract(D, s.onehot, out=D)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def _hinge_twin(xp, Y, labels, D, loss, hit, inv_norm, margin, s):
    """Exercise 3: L_n = Σ_{j≠y} max(0, p_j − p_y + C).  With a_j = 1 where that hinge is
    active, ∂L/∂p = a − onehot·Σa =: G and ∂L/∂Y = p ⊙ (G − Σ_k p_k G_k)."""
    _shifted(xp, Y, D, s)
    _softmax_from_shifted(xp, D, s)                              # D = p
    _one_hot(xp, labels, s)
    xp.multiply(D, s.onehot, out=s.a)
    xp.sum(s.a, axis=0, keepdims=True, out=s.py)                 # p_y
    xp.subtract(D, s.py, out=s.a)
    xp.add(s.a, margin, out=s.a)                                 # M = p_j − p_y + C
    xp.greater_equal(s.a, 0, out=s.b)
    xp.subtract(s.b, s.onehot, out=s.b)                          # a: M_y = C >= 0, so the label row drops out
    xp.multiply(s.a, s.b, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, inv_norm, out=loss)
    xp.sum(s.b, axis=0, keepdims=True, out=s.sum)                # Σ_j a_j
    xp.multiply(s.onehot, s.sum, out=s.a)
    xp.subtract(s.b, s.a, out=s.a)                               # G
    xp.multiply(D, s.a, out=s.b)
    xp.sum(s.b, axis=0, keepdims=True, out=s.sum)                # Σ_k p_k G_k
    xp.subtract(s.a, s.sum, out=s.a)
    xp.multiply(D, s.a, out=D)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def _mse_twin(xp, Y, labels, D, loss, hit, inv_norm, margin, s):
    """L_n = ½ Σ_k (Y_kn − onehot_kn)²; ∂L/∂Y = (Y − onehot) / N."""
    _one_hot(xp, labels, s)
    xp.subtract(Y, s.onehot, out=D)
    xp.multiply(D, D, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, 0.5 * inv_norm, out=loss)
    xp.multiply(D, inv_norm, out=D)
    _hits(xp, Y, labels, hit, s)


def _squared_error_twin(xp, Y, TT, D, loss, hit, inv_norm, margin, s):
    """A loss on real targets (regression): L_n = ½ Σ_k (Y_kn − T_kn)² / K, the mean over the K
    outputs as scikit-learn's squared error; ∂L/∂Y = (Y − T) / K.  ``TT`` holds the targets
    one column per row (n × K, the training data's stored layout), so T is ``TT.T``.  No hit."""
    K = Y.shape[0]
    xp.subtract(Y, TT.T, out=D)
    xp.multiply(D, D, out=s.a)
    xp.sum(s.a, axis=0, out=loss)
    xp.multiply(loss, 0.5 * inv_norm / K, out=loss)
    xp.multiply(D, inv_norm / K, out=D)


class LossScratch:
    """The loss twins' scratch for K classes and n columns (the compiled kernels need none)."""

    def __init__(self, backend, K, n, dtype):
        xp, new = backend.xp, backend.empty
        self.rows = xp.reshape(backend.arange(K), (K, 1))          # the row index of each class
        self.onehot, self.a, self.b = (new((K, n), dtype) for _ in range(3))
        self.m, self.sum, self.py = (new((1, n), dtype) for _ in range(3))
        self.argmax, self.at = new((n,), backend.dtype("int64")), new((n,), backend.dtype("int64"))
        self.cols = backend.arange(n)                                 # the column index of each sample


# -- SGD over the flat buffer ---------------------------------------------------------------
def _sgd_twin(xp, p, g, v, lr, momentum, weight_decay, tmp):
    """θ ← θ − lr·v,  v ← momentum·v + g + weight_decay·θ (v is g without momentum).

    On the host the buffer is walked in chunks of ``tmp``'s length, so the products
    need no temporary the size of the parameters (and each chunk stays in cache)."""
    c = tmp.shape[0]
    for i in range(0, p.shape[0], c):
        j = min(i + c, p.shape[0])
        ps, t = p[i:j], tmp[:j - i]
        d = g[i:j]
        if weight_decay:
            xp.multiply(ps, weight_decay, out=t)
            xp.add(t, d, out=t)
            d = t
        if v is not None:
            vs = v[i:j]
            xp.multiply(vs, momentum, out=vs)
            xp.add(vs, d, out=vs)
            d = vs
        xp.multiply(d, lr, out=t)
        xp.subtract(ps, t, out=ps)


# -- per-example gradient norms -------------------------------------------------------------
def _sample_sq_twin(xp, D, Z, bias, first, out, tmp, dn, zn):
    """Layer k's share of each column's squared gradient norm: column n's term of
    dW_k = Δ_k Z_{k-1}^T is the outer product Δ_k[:,n] Z_{k-1}[:,n]^T, whose squared
    Frobenius norm is ‖Δ_k[:,n]‖² ‖Z_{k-1}[:,n]‖²; its term of db_k is Δ_k[:,n].  So
    out = (or += unless ``first``) dn ⊙ (zn + bias), dn and zn the column sums of squares.
    ``tmp`` is scratch with at least max(d_k, d_{k-1}) rows."""
    t = tmp[:D.shape[0], :]
    xp.multiply(D, D, out=t)
    xp.sum(t, axis=0, out=dn)
    t = tmp[:Z.shape[0], :]
    xp.multiply(Z, Z, out=t)
    xp.sum(t, axis=0, out=zn)
    _sample_sq_combine(xp, bias, first, out, dn, zn)


def _sample_sq_combine(xp, bias, first, out, dn, zn):
    """out (+)= dn ⊙ (zn + bias), from the column sums of squares dn of Δ and zn of Z."""
    if bias:
        xp.add(zn, 1.0, out=zn)
    if first:
        xp.multiply(dn, zn, out=out)
    else:
        xp.multiply(dn, zn, out=dn)
        xp.add(out, dn, out=out)


def _sample_sq_host(D, Z, bias, first, out, tmp, dn, zn):
    """The twin on NumPy, with einsum's fused multiply-and-sum: no pass through ``tmp``,
    and Z_0 (an F-contiguous view of the data) read in place."""
    np.einsum("ij,ij->j", D, D, out=dn)
    np.einsum("ij,ij->j", Z, Z, out=zn)
    _sample_sq_combine(np, bias, first, out, dn, zn)


# -- CUDA -------------------------------------------------------------------------------
CUDA_SOURCE = r"""
// gpumlp's fused kernels. T is float or double; arrays are C-contiguous.
// Grid-stride loops; one thread per element, or per column for the losses.
#define GRID_LOOP(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float  gm_tanh(float x)  { return tanhf(x); }
__device__ __forceinline__ double gm_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float  gm_exp(float x)   { return expf(x); }
__device__ __forceinline__ double gm_exp(double x)  { return exp(x); }
__device__ __forceinline__ float  gm_log(float x)   { return logf(x); }
__device__ __forceinline__ double gm_log(double x)  { return log(x); }

// ACT: 0 linear, 1 relu, 2 leaky_relu (slope 0.01), 3 tanh, 4 sigmoid
template<typename T, int ACT> __device__ __forceinline__ T gm_act(T s) {
    if (ACT == 1) return (s > T(0) || s != s) ? s : T(0);    // NaN stays NaN, as in numpy.maximum
    if (ACT == 2) { T a = s * T(0.01); return s > a ? s : a; }
    if (ACT == 3) return gm_tanh(s);
    if (ACT == 4) return (gm_tanh(s * T(0.5)) + T(1)) * T(0.5);
    return s;
}

template<typename T, int ACT> __device__ __forceinline__ T gm_act_grad(T s, T z) {
    if (ACT == 1) return s > T(0) ? T(1) : T(0);
    if (ACT == 2) return (s > T(0) ? T(1) : T(0)) * T(1 - 0.01) + T(0.01);
    if (ACT == 3) return T(1) - z * z;
    if (ACT == 4) return (T(1) - z) * z;
    return T(1);
}

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

// The column's max and argmax (the first one, as numpy.argmax), and Σ exp(Y − max).
template<typename T>
__device__ __forceinline__ void gm_column(const T* Y, long long c, int K, long long n,
                                          T& m, int& am, T& sum) {
    m = Y[c]; am = 0;
    for (int k = 1; k < K; ++k) { T y = Y[k * n + c]; if (y > m) { m = y; am = k; } }
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
            if (v > m) { m = v; am = k; }
            T r = v - (k == y ? T(1) : T(0));
            D[k * n + c] = r * inv_norm;
            total += r * r;
        }
        loss[c] = total * (T(0.5) * inv_norm);
        hit[c] = am == y;
    }
}

// v = momentum v + g + wd p;  p -= lr v   (v is g + wd p without momentum)
template<typename T, int MOMENTUM>
__global__ void sgd(T* p, const T* g, T* v, long long n, T lr, T momentum, T wd) {
    GRID_LOOP(i, n) {
        T d = g[i];
        if (wd != T(0)) d = p[i] * wd + d;
        if (MOMENTUM) { d = v[i] * momentum + d; v[i] = d; }
        p[i] = p[i] - d * lr;
    }
}
"""

_TYPES = {"float32": "float", "float64": "double"}


def instantiations():
    """Every template instance the library can launch, as CUDA name expressions."""
    names = []
    for t in _TYPES.values():
        for code in range(5):                       # the activations' ``code``
            names += [f"bias_act<{t}, {code}, {bias}>" for bias in (0, 1) if code or bias]
            if code:
                names.append(f"act_grad<{t}, {code}>")
        names += [f"{loss}_loss<{t}>" for loss in ("ce", "hinge", "mse")]
        names += [f"sgd<{t}, {m}>" for m in (0, 1)]
    return names


_modules = {}


def _function(cupy, template, dtype):
    """The compiled kernel for ``template`` at ``dtype`` (one NVRTC build per process; after
    the first launch, one dictionary look-up)."""
    fn = _modules.get((template, dtype))
    if fn is None:
        module = _modules.get("module")
        if module is None:
            module = _modules["module"] = cupy.RawModule(code=CUDA_SOURCE, options=("--std=c++14", "--fmad=false"),
                                                         name_expressions=instantiations())
        fn = _modules[(template, dtype)] = module.get_function(template.format(T=_TYPES[np.dtype(dtype).name]))
    return fn


def _grid(n):
    return (max(1, min((n + THREADS - 1) // THREADS, 65535)),), (THREADS,)


def _launch_bias_act(cupy, kernel):
    def run(S, b, Z):
        fn = _function(cupy, kernel.cuda, S.dtype)
        total = S.size
        fn(*_grid(total), (S, S if b is None else b, Z, np.int64(S.shape[1]), np.int64(total)))
    return run


def _launch_act_grad(cupy, kernel):
    def run(S, Z, D, mask=None, tmp=None):
        fn = _function(cupy, kernel.cuda, D.dtype)
        fn(*_grid(D.size), (S, Z, D, np.int64(D.size)))
    return run


def _launch_loss(cupy, kernel):
    def run(Y, labels, D, loss, hit, inv_norm, margin, s=None):
        fn = _function(cupy, kernel.cuda, Y.dtype)
        K, n = Y.shape
        scalar = Y.dtype.type
        fn(*_grid(n), (Y, labels, D, loss, hit, np.int32(K), np.int64(n), scalar(inv_norm), scalar(margin)))
    return run


def _launch_sgd(cupy, kernel):
    def run(p, g, v, lr, momentum, weight_decay, tmp=None):
        scalar = p.dtype.type
        fn = _function(cupy, kernel.cuda.replace("{M}", "1" if v is not None else "0"), p.dtype)
        fn(*_grid(p.size), (p, g, p if v is None else v, np.int64(p.size), scalar(lr), scalar(momentum),
                            scalar(weight_decay)))
    return run


LOSS_KERNELS = {name: Kernel(name, twin, f"{name}_loss<{{T}}>", _launch_loss)
                for name, twin in (("ce", _ce_twin), ("hinge", _hinge_twin), ("mse", _mse_twin))}
SGD_KERNEL = Kernel("sgd", _sgd_twin, "sgd<{T}, {M}>", _launch_sgd)
# regression: no compiled form yet (a new kernel stays off until it has run on a GPU)
TARGET_LOSS_KERNELS = {"squared_error": Kernel("squared_error", _squared_error_twin)}
# No compiled form yet: it runs only when per-example norms are asked for, and a new kernel
# would stay off until it has run on a GPU; its twin is two CuPy kernels per array.
SAMPLE_SQ_KERNEL = Kernel("sample_sq", _sample_sq_twin, host=_sample_sq_host)
