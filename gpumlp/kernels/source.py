"""The CUDA source of the compiled kernels (``fused.cu`` beside this file) and every instance
of it the library can launch.

The activation switch in the source is generated from :data:`gpumlp.activations.ACTIVATIONS`
(each activation's ``code``, ``cuda`` and ``cuda_grad``) and kept checked in, so that nvcc and
editors read the file as it is.  ``python -m gpumlp.kernels.source`` rewrites that block after
an activation changes; a test regenerates it and compares it with the file.
"""
from importlib import resources
from typing import Any

from ..activations import ACTIVATIONS

__all__ = ["CUDA_SOURCE", "instantiations", "activation_block", "with_activation_block", "TYPES"]

BEGIN, END = "// BEGIN GENERATED BLOCK\n", "// END GENERATED BLOCK\n"
TYPES = {"float32": "float", "float64": "double"}     # NumPy dtype name -> the kernels' T


def _read():
    return resources.files(__package__).joinpath("fused.cu").read_text(encoding="utf-8")


def activation_block(activations: Any = None) -> str:
    """The generated lines between the markers: gm_act and gm_act_grad, one branch per code."""
    table = sorted((activations or ACTIVATIONS).values(), key=lambda f: f.code)
    names = ", ".join(f"{f.code} {f.name}" for f in table)
    lines = ["// from gpumlp.activations by `python -m gpumlp.kernels.source`; do not edit by hand.",
             f"// ACT: {names}",
             "template<typename T, int ACT> __device__ __forceinline__ T gm_act(T s) {"]
    lines += [f"    if (ACT == {f.code}) return {f.cuda};" for f in table]
    lines += ["    return s;", "}", "",
              "template<typename T, int ACT> __device__ __forceinline__ T gm_act_grad(T s, T z) {"]
    lines += [f"    if (ACT == {f.code}) return {f.cuda_grad};" for f in table]
    lines += ["    return T(1);", "}"]
    return "\n".join(lines) + "\n"


def with_activation_block(text: str, activations: Any = None) -> str:
    """``text`` with the block between the markers replaced by :func:`activation_block`."""
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + activation_block(activations) + text[stop:]


def instantiations() -> list[str]:
    """Every template instance the library can launch, as CUDA name expressions."""
    names = []
    for t in TYPES.values():
        for f in sorted(ACTIVATIONS.values(), key=lambda f: f.code):
            names += [f"bias_act<{t}, {f.code}, {bias}>" for bias in (0, 1) if not f.identity or bias]
            if not f.identity:
                names.append(f"act_grad<{t}, {f.code}>")
        names += [f"{loss}_loss<{t}>" for loss in ("ce", "hinge", "mse", "squared_error")]
        names += [f"sgd<{t}, {m}, {d}>" for m in (0, 1) for d in (0, 1)]
        names += [f"sample_sq<{t}, {b}, {first}>" for b in (0, 1) for first in (0, 1)]
    return names


CUDA_SOURCE = _read()


if __name__ == "__main__":           # rewrite the generated block of fused.cu in the source tree
    import pathlib
    path = pathlib.Path(__file__).with_name("fused.cu")
    new = with_activation_block(path.read_text(encoding="utf-8"))
    path.write_text(new, encoding="utf-8")
    print(f"wrote the activation block of {path}")
