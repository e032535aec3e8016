"""A host build of gpumlp's CUDA source: a stand-in for ``cupy.RawModule`` that compiles the
kernels as C++ (g++, through ``shim.h``) and runs every (block, thread) pair of a launch one
after another on the CPU, checking each launch as a careful GPU would not.

The kernels of ``gpumlp/kernels/fused.cu`` are grid-stride loops where no thread reads what
another writes, so running the pairs in any order computes what a GPU computes (up to the
rounding of the two math libraries' exp, log and tanh).  :class:`HostModule` takes the
arguments ``cupy.RawModule`` takes (``code``, ``options``, ``name_expressions``), and its
functions are called as a CuPy ``RawKernel`` is: ``fn(grid, block, args)``.

What a launch checks (each failure a :class:`LaunchError` naming the kernel and the argument):

* the grid and block: at most 1024 threads a block, grid.x in [1, 2^31 - 1], grid.y and z at
  most 65535; these kernels use only x, so y and z must be 1; no dynamic shared memory;
* the arguments, as CuPy would pass them: their count, each array's dtype against its pointee
  and its layout against ``gpumlp.kernels.launch.LAYOUTS`` (``"C"``: C-contiguous;
  ``"strided"``: any strides), each scalar's C type (CuPy passes a NumPy scalar as its dtype, a
  Python float as a double, a Python int as a long long and a Python bool as a bool:
  ``cupy/_core/_scalar.pyx``, ``numpy_dtype_from_pyscalar``), and nothing else is accepted;
* out-of-bounds writes: the kernel runs on a copy of each buffer's memory extent with 64 bytes
  of guard on both sides (signalling-NaN patterns for float and double, fixed patterns
  otherwise: see ``_GUARD_WORDS``), and the guards must be intact after the launch; so must
  the bytes inside a strided array's extent that are not its elements;
* ``const`` pointers: what they point to must be unchanged (unless the buffer is also passed
  as a non-const argument: arguments that share memory share one guarded copy, so aliasing
  is kept);
* races: the launch runs three times, on independent copies, with the (block, thread) pairs
  in three orders (ascending block-major, fully reversed, and thread-major, i.e. every
  block's thread 0 first), and the three results must agree byte for byte.

Then the results are written back into the caller's arrays.  Every name expression launched is
recorded, in :data:`LAUNCHED` and in the module's ``launched``.

The source is compiled as given (written verbatim to a file that a generated translation unit
``#include``s after ``shim.h``), once per process for each (source, names, shim, compiler
flags): the builds are cached in memory and in a temporary directory removed at exit.
"""
import atexit
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

import numpy as np

__all__ = [
    "GUARD_BYTES",
    "LAUNCHED",
    "OPTION_MAP",
    "ORDERS",
    "CompileError",
    "HostFunction",
    "HostModule",
    "HostModuleError",
    "LaunchError",
    "SymbolNotFound",
    "compiler",
    "unavailable_reason",
]

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.h")
GUARD_BYTES = 64
ORDERS = ("ascending", "reversed", "thread-major")
BASE_FLAGS = ("-O2", "-shared", "-fPIC")
OPTION_MAP = {"--std=c++14": "-std=c++14", "-std=c++14": "-std=c++14",
              "--fmad=false": "-ffp-contract=off", "-fmad=false": "-ffp-contract=off"}
MAX_THREADS = 1024
MAX_GRID_X = 2 ** 31 - 1
MAX_GRID_YZ = 65535

LAUNCHED = set()          # every name expression launched by any HostModule in this process

# The C types a kernel parameter may have, and the NumPy dtype CuPy passes for each.
C_TYPES = {
    "float": np.dtype(np.float32), "double": np.dtype(np.float64),
    "int": np.dtype(np.int32), "signed int": np.dtype(np.int32), "unsigned int": np.dtype(np.uint32),
    "unsigned": np.dtype(np.uint32),
    "long long": np.dtype(np.int64), "long long int": np.dtype(np.int64), "signed long long": np.dtype(np.int64),
    "long": np.dtype(np.int64), "long int": np.dtype(np.int64),
    "unsigned long long": np.dtype(np.uint64), "unsigned long long int": np.dtype(np.uint64),
    "short": np.dtype(np.int16), "unsigned short": np.dtype(np.uint16),
    "signed char": np.dtype(np.int8), "unsigned char": np.dtype(np.uint8), "char": np.dtype(np.int8),
    "bool": np.dtype(np.bool_),
}
# The guards' contents: a signalling NaN for float and double (arithmetic on one gives a quiet
# NaN, so a kernel that reads a guard and writes the result back is caught too); for int64 a
# word whose low half is 0, so that a kernel reading a label past the end and truncating it to
# int, as the loss kernels do, indexes row 0 instead of crashing the process; a byte otherwise.
# Each guard (before and after each buffer) carries its own tag in the pattern, so a kernel
# that copies one buffer's guard into another's (relu of a signalling NaN returns it as it is)
# is caught as well.
_GUARD_WORDS = {np.dtype(np.float32): (np.uint32, 0x7FA00000, 0),
                np.dtype(np.float64): (np.uint64, 0x7FF4000000000000, 0),
                np.dtype(np.int64): (np.uint64, 0x5A5A5A5A00000000, 32)}     # (word, base, tag shift)
_GUARD_BYTE = 0x80


class HostModuleError(RuntimeError):
    """The host build could not do what CuPy would have done (or CuPy would have refused too)."""


class CompileError(HostModuleError):
    """The source (with the shim) did not compile as host C++, or an option has no host meaning."""


class SymbolNotFound(HostModuleError):
    """``get_function`` of a name that is not one of the module's name expressions (CuPy:
    ``CUDADriverError: CUDA_ERROR_NOT_FOUND: named symbol not found``)."""


class LaunchError(AssertionError):
    """A launch broke a rule a GPU would not check (or would crash on)."""


# -- the toolchain ----------------------------------------------------------------------------
def compiler():
    """The C++ compiler the host build uses ($CXX, else g++, c++ or clang++), or None."""
    for name in ([os.environ["CXX"]] if os.environ.get("CXX") else []) + ["g++", "c++", "clang++"]:
        path = shutil.which(name)
        if path:
            return path
    return None


def unavailable_reason():
    """Why the host build cannot run here (None when it can)."""
    if compiler() is None:
        return "no C++ compiler (g++, c++ or clang++, or $CXX) is installed: the CUDA source was not run on the host"
    return None


# -- parsing the source -------------------------------------------------------------------------
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_KERNEL = re.compile(r"(?:template\s*<(?P<tparams>[^>]*)>\s*)?__global__\s+void\s+(?P<name>\w+)\s*"
                     r"\((?P<params>[^)]*)\)")


def _split_top(text, sep=","):
    """``text`` split at ``sep`` outside <>, () and []."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    tail = "".join(cur).strip()
    if tail or parts:
        parts.append(tail)
    return [p for p in parts if p]


class _Param:
    """One kernel parameter after template substitution: its C type, name, and what it is."""

    def __init__(self, ctype, name):
        self.ctype, self.name = ctype, name
        self.pointer = "*" in ctype
        bare = re.sub(r"\b(__restrict__|__restrict|restrict|volatile)\b", " ", ctype)
        if self.pointer:
            if ctype.count("*") != 1:
                raise CompileError(f"parameter {name}: only single pointers are supported, got {ctype!r}")
            left, _ = bare.split("*")
            self.const = bool(re.search(r"\bconst\b", left))     # (T* const p: the pointer is const)
            base = re.sub(r"\bconst\b", " ", left)
        else:
            self.const = False
            base = re.sub(r"\bconst\b", " ", bare)
        base = " ".join(base.split())
        if base not in C_TYPES:
            raise CompileError(f"parameter {name}: C type {base!r} has no NumPy counterpart in the host build")
        self.dtype = C_TYPES[base]

    def __repr__(self):
        return f"{self.ctype} {self.name}"


def _kernels(code):
    """{name: (template parameter names (with their kinds), [(C type, name) of each parameter])}."""
    found = {}
    for m in _KERNEL.finditer(_COMMENTS.sub(" ", code)):
        tparams = []
        for tp in _split_top(m.group("tparams") or ""):
            words = tp.replace("=", " = ").split()
            if "=" in words:
                raise CompileError(f"kernel {m.group('name')}: default template arguments are not supported")
            kind, pname = " ".join(words[:-1]), words[-1]
            tparams.append((kind, pname))
        params = []
        for p in _split_top(m.group("params")):
            pm = re.match(r"(?P<type>.*?[\s*&])(?P<name>\w+)\s*$", p, re.DOTALL)
            if pm is None:
                raise CompileError(f"kernel {m.group('name')}: cannot parse parameter {p!r}")
            params.append((" ".join(pm.group("type").split()), pm.group("name")))
        found[m.group("name")] = (tparams if m.group("tparams") is not None else None, params)
    return found


def _instance(kernels, expr):
    """(base name, [_Param]) of the name expression ``expr`` (``name`` or ``name<args>``)."""
    m = re.fullmatch(r"\s*(\w+)\s*(?:<(.*)>)?\s*", expr, re.DOTALL)
    if m is None:
        raise CompileError(f"cannot parse the name expression {expr!r}")
    base, targs = m.group(1), m.group(2)
    if base not in kernels:
        raise CompileError(f"name expression {expr!r}: no __global__ function {base!r} in the source")
    tparams, params = kernels[base]
    targs = _split_top(targs) if targs is not None else []
    if (tparams or []) and len(targs) != len(tparams):
        raise CompileError(f"name expression {expr!r}: {base} takes {len(tparams)} template arguments, "
                           f"got {len(targs)}")
    if not tparams and targs:
        raise CompileError(f"name expression {expr!r}: {base} is not a template")
    subst = {pname: arg for (kind, pname), arg in zip(tparams or [], targs, strict=False)
             if kind in ("typename", "class")}
    out = []
    for ctype, name in params:
        for pname, arg in subst.items():
            ctype = re.sub(rf"\b{re.escape(pname)}\b", arg, ctype)
        out.append(_Param(ctype, name))
    return base, out


# -- building -----------------------------------------------------------------------------------
_DRIVER = r"""
// ---- generated by tests/hostcuda: one entry per name expression ----
namespace gm_host {
template<typename F> static void run_grid(unsigned int gx, unsigned int bx, int order, F&& one) {
    gridDim.x = gx; gridDim.y = 1u; gridDim.z = 1u;
    blockDim.x = bx; blockDim.y = 1u; blockDim.z = 1u;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0u;
    if (order == 0) {                                       // ascending, block-major
        for (unsigned int b = 0; b < gx; ++b)
            for (unsigned int t = 0; t < bx; ++t) { blockIdx.x = b; threadIdx.x = t; one(); }
    } else if (order == 1) {                                // fully reversed
        for (unsigned int b = gx; b-- > 0;)
            for (unsigned int t = bx; t-- > 0;) { blockIdx.x = b; threadIdx.x = t; one(); }
    } else {                                                // thread-major: every block's thread 0 first
        for (unsigned int t = 0; t < bx; ++t)
            for (unsigned int b = 0; b < gx; ++b) { blockIdx.x = b; threadIdx.x = t; one(); }
    }
}
}  // namespace gm_host
"""


def _entry(index, expr, params):
    usings = "".join(f"    using A{i} = {p.ctype};\n" for i, p in enumerate(params))
    call = ", ".join(f"*(A{i}*)args[{i}]" for i in range(len(params)))
    return (f"// {expr}\n"
            f"extern \"C\" int gm_entry_{index}(void** args, unsigned int gx, unsigned int bx, int order) {{\n"
            f"{usings}"
            f"    gm_host::run_grid(gx, bx, order, [&]() {{ {expr}({call}); }});\n"
            f"    return 0;\n"
            f"}}\n")


def _flags(options):
    flags = []
    for opt in options:
        if opt not in OPTION_MAP:
            raise CompileError(f"option {opt!r} has no host meaning here (known: {', '.join(sorted(OPTION_MAP))})")
        if OPTION_MAP[opt] not in flags:
            flags.append(OPTION_MAP[opt])
    if not any(f.startswith("-std=") for f in flags):
        flags.append("-std=c++14")
    return flags + list(BASE_FLAGS)


_builds = {}              # hash -> ctypes.CDLL
_build_lock = threading.Lock()
_key_locks = {}
_build_dir = None


def _tempdir():
    global _build_dir
    with _build_lock:
        if _build_dir is None:
            _build_dir = tempfile.mkdtemp(prefix="gpumlp-hostcuda-")
            atexit.register(shutil.rmtree, _build_dir, True)
    return _build_dir


def _build(code, names, flags, entries):
    """The loaded library for this (code, names, flags, shim), compiled at most once per process."""
    with open(SHIM, "rb") as fh:
        shim = fh.read()
    cxx = compiler()
    if cxx is None:
        raise CompileError(unavailable_reason())
    key = hashlib.sha256(repr((code, tuple(names), tuple(flags), cxx)).encode() + b"\0" + shim +
                         b"\0" + entries.encode()).hexdigest()[:24]
    with _build_lock:                   # one build per key; different keys build side by side
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        lib = _builds.get(key)
        if lib is not None:
            return lib
        where = os.path.join(_tempdir(), key)
        os.makedirs(where, exist_ok=True)
        src = os.path.join(where, "kernels.cu")
        with open(src, "w", encoding="utf-8", newline="") as fh:
            fh.write(code)                      # the source exactly as given
        tu = os.path.join(where, "host.cpp")
        with open(tu, "w", encoding="utf-8") as fh:
            fh.write(f'#include "{SHIM}"\n#include "{src}"\n{entries}')
        so = os.path.join(where, "host.so")
        cmd = [cxx] + flags + ["-o", so, tu]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise CompileError(f"the host build failed ({' '.join(cmd)}):\n{run.stderr[-6000:]}")
        lib = _builds[key] = ctypes.CDLL(so)
        return lib


# -- the module ---------------------------------------------------------------------------------
class HostModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` on the CPU."""

    def __init__(self, code=None, options=(), name_expressions=(), *, layouts=None, backend="nvrtc", **unsupported):
        if unsupported:
            raise TypeError(f"HostModule does not support {', '.join(sorted(unsupported))}")
        if code is None:
            raise TypeError("HostModule needs code= (path= is not supported)")
        if backend != "nvrtc":
            raise CompileError(f"backend={backend!r}: only NVRTC's name expressions are emulated")
        self.code, self.options = code, tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self._layouts = layouts            # None: gpumlp.kernels.launch.LAYOUTS, read at each launch
        self.launched = set()
        kernels = _kernels(code)
        if not kernels:
            raise CompileError("no __global__ function found in the source")
        self._signatures = {}
        parts = [_DRIVER]
        for i, expr in enumerate(self.name_expressions):
            base, params = _instance(kernels, expr)
            self._signatures[expr] = (base, params, f"gm_entry_{i}")
            parts.append(_entry(i, expr, params))
        self._lib = _build(code, self.name_expressions, _flags(self.options), "\n".join(parts))
        self._functions = {}

    def get_function(self, name):
        if name not in self._signatures:
            raise SymbolNotFound(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name!r} is not one of the "
                                 f"module's name expressions (CuPy needs the exact expression given)")
        fn = self._functions.get(name)
        if fn is None:
            base, params, entry = self._signatures[name]
            c = getattr(self._lib, entry)
            c.argtypes = (ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
            c.restype = ctypes.c_int
            fn = self._functions[name] = HostFunction(self, name, base, params, c)
        return fn

    def layouts(self):
        if self._layouts is not None:
            return self._layouts
        from gpumlp.kernels import launch
        return launch.LAYOUTS


def _byte_bounds(a):
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:                                  # NumPy < 2
        byte_bounds = np.byte_bounds
    if a.size == 0:
        return a.ctypes.data, a.ctypes.data
    return byte_bounds(a)


def _memory(address, nbytes):
    """The caller's memory [address, address + nbytes) as a uint8 array (no copy)."""
    if nbytes == 0:
        return np.zeros(0, np.uint8)
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(address))


def _scalar_dtype(x):
    """The dtype CuPy passes a scalar argument as (cupy/_core/_scalar.pyx), or None."""
    t = type(x)
    if t is bool:
        return np.dtype(np.bool_)
    if t is float:
        return np.dtype(np.float64)
    if t is complex:
        return np.dtype(np.complex128)
    if t is int:
        return np.dtype(np.uint64) if x >= 2 ** 63 else np.dtype(np.int64)
    if isinstance(x, np.generic):
        return x.dtype
    return None


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"a {type(x).__name__} of {x.dtype} {x.shape}"
    if isinstance(x, np.generic):
        return f"numpy.{type(x).__name__} {x!r}"
    return f"a Python {type(x).__name__} {x!r}"


class _Group:
    """Arguments whose memory overlaps: one guarded copy of their joint extent."""

    def __init__(self, lo, hi):
        self.lo, self.hi, self.members = lo, hi, []     # members: argument positions

    @property
    def extent(self):
        return self.hi - self.lo


class HostFunction:
    """One kernel instance; call it as a CuPy RawKernel: ``fn(grid, block, args)``."""

    def __init__(self, module, name, base, params, c):
        self.module, self.name, self.base, self.params, self._c = module, name, base, params, c

    def __repr__(self):
        return f"<host kernel {self.name}>"

    def _fail(self, why):
        raise LaunchError(f"{self.name}: {why}")

    # -- the checks before the launch ---------------------------------------------------------
    def _dims(self, what, value, limits):
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
            self._fail(f"{what} must be a tuple of 1 to 3 ints, got {value!r}")
        dims = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                self._fail(f"{what} must hold ints, got {value!r}")
            dims.append(int(v))
        dims += [1] * (3 - len(dims))
        for axis, v, (low, high) in zip("xyz", dims, limits, strict=True):
            if not low <= v <= high:
                self._fail(f"{what}.{axis} = {v} is outside [{low}, {high}]")
        return dims

    def _check_launch(self, grid, block, shared_mem):
        g = self._dims("grid", grid, ((1, MAX_GRID_X), (1, MAX_GRID_YZ), (1, MAX_GRID_YZ)))
        b = self._dims("block", block, ((1, MAX_THREADS), (1, MAX_THREADS), (1, 64)))
        if b[0] * b[1] * b[2] > MAX_THREADS:
            self._fail(f"a block of {b[0] * b[1] * b[2]} threads ({tuple(block)}): at most {MAX_THREADS}")
        if g[1] != 1 or g[2] != 1 or b[1] != 1 or b[2] != 1:
            self._fail(f"grid {tuple(g)} and block {tuple(b)}: these kernels use only x, so y and z must be 1")
        if shared_mem:
            self._fail(f"shared_mem={shared_mem}: the host build has no shared memory")
        return g[0], b[0]

    def _check_args(self, args):
        if not isinstance(args, (tuple, list)):
            self._fail(f"args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            self._fail(f"{len(args)} arguments for {len(self.params)} parameters ({', '.join(map(repr, self.params))})")
        layouts = self.module.layouts()
        if self.base not in layouts:
            self._fail(f"no layout declared for {self.base} in gpumlp.kernels.launch.LAYOUTS")
        layout = tuple(layouts[self.base])
        pointers = [i for i, p in enumerate(self.params) if p.pointer]
        if len(layout) != len(pointers):
            self._fail(f"LAYOUTS[{self.base!r}] has {len(layout)} entries for {len(pointers)} pointer parameters")
        values = []
        for i, (p, a) in enumerate(zip(self.params, args, strict=True)):
            where = f"argument {i} ({p!r})"
            if p.pointer:
                if not isinstance(a, np.ndarray):
                    self._fail(f"{where} must be an array, got {_describe(a)}")
                if a.dtype != p.dtype:
                    self._fail(f"{where} points to {p.dtype} but got {_describe(a)}")
                lay = layout[pointers.index(i)]
                if lay == "C":
                    if not a.flags.c_contiguous:
                        self._fail(f"{where} must be C-contiguous (LAYOUTS), got strides {a.strides} "
                                   f"for shape {a.shape}")
                elif lay != "strided":
                    self._fail(f"LAYOUTS[{self.base!r}] entry {lay!r} is neither 'C' nor 'strided'")
                if a.ctypes.data % a.dtype.itemsize:
                    self._fail(f"{where} is not aligned to its element size")
                values.append(a.view(np.ndarray))
            else:
                dt = _scalar_dtype(a)
                if dt is None:
                    self._fail(f"{where}: CuPy cannot pass {_describe(a)} as a kernel argument")
                if dt != p.dtype:
                    self._fail(f"{where} is {p.dtype} in C, but {_describe(a)} is passed as {dt} "
                               f"(CuPy passes a Python float as a double and a Python int as a long long)")
                values.append(np.array(a, dtype=dt))
        return values

    # -- guarded copies -------------------------------------------------------------------------
    def _groups(self, values):
        spans = sorted((_byte_bounds(a) + (i,)) for i, a in enumerate(values) if self.params[i].pointer)
        groups = []
        for lo, hi, i in spans:
            if groups and lo < groups[-1].hi and hi > lo:
                groups[-1].hi = max(groups[-1].hi, hi)
            else:
                groups.append(_Group(lo, hi))
            groups[-1].members.append(i)
        for g in groups:
            g.members.sort()
        return groups

    @staticmethod
    def _guard_pattern(dtype, nbytes, tag):
        """The guard of ``nbytes`` for a buffer of ``dtype``; ``tag`` (1 to 127) tells the guards apart."""
        word = _GUARD_WORDS.get(dtype)
        if word is None:
            return np.full(nbytes, _GUARD_BYTE | tag, np.uint8)
        kind, base, shift = word
        return np.resize(np.array([base | (tag << shift)], kind).view(np.uint8), nbytes)

    @staticmethod
    def _tags(index):
        """The tags of group ``index``'s guards, before and after."""
        return 1 + (2 * index) % 126, 2 + (2 * index) % 126

    def _guarded(self, index, group, values):
        """A fresh copy of the group's memory between its guards."""
        dtype = values[group.members[0]].dtype
        before, after = self._tags(index)
        n = GUARD_BYTES + group.extent + GUARD_BYTES
        raw = np.empty(n + 64, np.uint8)
        base = raw.ctypes.data
        start = (group.lo - (base + GUARD_BYTES)) % 64        # base + start + GUARD ≡ lo (mod 64)
        buf = raw[start:start + n]
        buf[:GUARD_BYTES] = self._guard_pattern(dtype, GUARD_BYTES, before)
        buf[GUARD_BYTES + group.extent:] = self._guard_pattern(dtype, GUARD_BYTES, after)
        buf[GUARD_BYTES:GUARD_BYTES + group.extent] = _memory(group.lo, group.extent)
        return buf

    def _run(self, order, gx, bx, values, groups):
        bufs, addresses = [], [0] * len(values)
        for index, g in enumerate(groups):
            buf = self._guarded(index, g, values)
            bufs.append(buf)
            for i in g.members:
                addresses[i] = buf.ctypes.data + GUARD_BYTES + (values[i].ctypes.data - g.lo)
        slots = []          # what args[i] points to: the pointer value, or the scalar itself
        for i, (p, v) in enumerate(zip(self.params, values, strict=True)):
            slots.append(np.array([addresses[i]], np.uintp) if p.pointer else v)
        argv = np.array([s.ctypes.data for s in slots], np.uintp)
        self._c(argv.ctypes.data, gx, bx, order)
        return bufs

    def _check_guards(self, bufs, groups, values, order):
        for index, (buf, g) in enumerate(zip(bufs, groups, strict=True)):
            dtype = values[g.members[0]].dtype
            for side, part, tag in (("before", buf[:GUARD_BYTES], self._tags(index)[0]),
                                    ("after", buf[GUARD_BYTES + g.extent:], self._tags(index)[1])):
                pattern = self._guard_pattern(dtype, GUARD_BYTES, tag)
                if not np.array_equal(part, pattern):
                    bad = np.flatnonzero(part != pattern)
                    size = values[g.members[0]].itemsize
                    where = (f"element start - {(GUARD_BYTES - 1 - bad[-1]) // size + 1}" if side == "before"
                             else f"element end + {bad[0] // size}")
                    self._fail(f"wrote out of bounds of argument {self._names(g)}: {where} "
                               f"({ORDERS[order]} thread order)")

    def _names(self, g):
        return " / ".join(f"{i} ({self.params[i]!r})" for i in g.members)

    def _covered(self, g, values):
        """A mask of the group's extent: the bytes that belong to an element of a member."""
        mask = np.zeros(g.extent, bool)
        for i in g.members:
            a = values[i]
            if a.size == 0:
                continue
            view = np.lib.stride_tricks.as_strided(mask[a.ctypes.data - g.lo:], shape=a.shape + (a.itemsize,),
                                                   strides=a.strides + (1,), writeable=True)
            view[...] = True
        return mask

    def _check_inside(self, bufs, groups, values):
        for buf, g in zip(bufs, groups, strict=True):
            inside = buf[GUARD_BYTES:GUARD_BYTES + g.extent]
            before = _memory(g.lo, g.extent)
            if all(self.params[i].const for i in g.members):
                if not np.array_equal(inside, before):
                    self._fail(f"changed the const argument {self._names(g)}")
            elif any(not (values[i].flags.c_contiguous or values[i].flags.f_contiguous) for i in g.members):
                gaps = ~self._covered(g, values)
                if not np.array_equal(inside[gaps], before[gaps]):
                    self._fail(f"wrote between the elements of the strided argument {self._names(g)}")

    # -- the launch -------------------------------------------------------------------------------
    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        if enable_cooperative_groups:
            self._fail("cooperative groups cannot run on the host")
        gx, bx = self._check_launch(grid, block, shared_mem)
        values = self._check_args(args)
        groups = self._groups(values)
        first = self._run(0, gx, bx, values, groups)
        self._check_guards(first, groups, values, 0)
        self._check_inside(first, groups, values)
        for order in range(1, len(ORDERS)):
            other = self._run(order, gx, bx, values, groups)
            self._check_guards(other, groups, values, order)
            for a, b, g in zip(first, other, groups, strict=True):
                if not np.array_equal(a, b):
                    at = np.flatnonzero(a != b)[0] - GUARD_BYTES
                    self._fail(f"the {ORDERS[0]} and {ORDERS[order]} thread orders wrote different bytes into "
                               f"argument {self._names(g)} (first at byte {at}): threads race")
            del other
        for buf, g in zip(first, groups, strict=True):               # write the results back
            for i in g.members:
                if self.params[i].const:
                    continue
                a = values[i]
                if a.size:
                    np.copyto(a, np.ndarray(a.shape, a.dtype, buffer=buf, offset=GUARD_BYTES + (a.ctypes.data - g.lo),
                                            strides=a.strides))
        self.module.launched.add(self.name)
        LAUNCHED.add(self.name)
