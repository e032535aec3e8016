"""The fused element-wise kernels of a training step, each with its NumPy twin.

A step needs, besides its GEMMs, only these element-wise passes:

* ``bias_act``   S_k += b_k, then Z_k = f_k(S_k)                  (forward, per layer)
* ``act_grad``   D ⊙= f'(S)                                       (the ⊙ f_k'(S_k) of the Δ recursion)
* ``ce``, ``hinge``, ``mse``   one pass over Y that writes ∂L/∂Y straight into Δ_L, plus each
                 column's loss and whether its argmax hit the label (one thread per column);
                 ``squared_error`` the same on real targets (no hit)
* ``sgd``        v ← momentum·v + g + weight_decay·θ;  θ ← θ − lr·v   (over the flat buffer)

and, only when per-example gradient norms are asked for (the gradient noise scale):

* ``sample_sq``  s_n (+)= ‖Δ_k[:,n]‖² (‖Z_{k-1}[:,n]‖² + 1)           (per layer)

Each kernel has two forms with the same semantics:

* the **twin**, array-module code (``xp`` is NumPy, CuPy or an array-API namespace)
  that writes only into buffers it is given (``out=``), so a step allocates nothing.
  The CPU runs it, and the CPU tests check it against the float64 oracle;
* the **compiled** form: one CUDA kernel of ``fused.cu`` (:data:`CUDA_SOURCE`), built with
  NVRTC through ``cupy.RawModule`` the first time it is used (:mod:`.launch`).

Which runs is the backend's choice (:meth:`gpumlp.backend.Backend.kernel`), by
``$GPUMLP_FUSED`` (:func:`fused_mode`): ``auto`` (the default) runs the compiled kernels on
CuPy, each (kernel, dtype) checked against its twin at its first launch in the process
(:mod:`gpumlp.kernels.check`); ``1`` runs them unchecked; ``0`` runs the twins, one CuPy kernel
per call.  CPU CI builds ``fused.cu`` as host C++ and runs every instance through the
launchers against the twins (``tests/test_cuda_host.py``), and compiles it with nvcc.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import launch, twins
from .source import CUDA_SOURCE, TYPES, instantiations
from .twins import LossScratch

if TYPE_CHECKING:                         # the backend and the activations import this package
    from ..activations import Activation
    from ..backend import Backend

__all__ = ["Kernel", "bias_act", "act_grad", "LOSS_KERNELS", "TARGET_LOSS_KERNELS", "SGD_KERNEL", "SAMPLE_SQ_KERNEL",
           "LossScratch", "CUDA_SOURCE", "fused_mode", "instantiations"]

_MODES = {"auto": "auto", "": "auto", "1": "on", "true": "on", "yes": "on", "on": "on",
          "0": "off", "false": "off", "no": "off", "off": "off"}


def fused_mode(value: bool | str | None = None) -> str:
    """``"auto"``, ``"on"`` or ``"off"``: ``value``, or ``$GPUMLP_FUSED`` when it is None
    (unset means ``auto``).  ``auto`` runs the compiled kernels behind a first-launch check
    against their twins, ``on`` (``1``, ``true``, ``yes``) runs them unchecked, ``off``
    (``0``, ``false``, ``no``) runs the twins.  Anything else is a ValueError."""
    source = "fused"
    if value is None:
        value, source = os.environ.get("GPUMLP_FUSED", "auto"), "$GPUMLP_FUSED"
    if isinstance(value, bool):
        return "on" if value else "off"
    mode = _MODES.get(str(value).strip().lower())
    if mode is None:
        raise ValueError(f"{source} must be auto, 1 (compiled kernels, unchecked) or 0 (the twins); got {value!r}")
    return mode


class Kernel:
    """One fused unit: a ``name`` (it counts as one kernel), the ``twin`` function
    ``twin(xp, *args)``, and the CUDA template ``cuda`` it compiles to (None when the
    unit does no work, as ``f'`` of the identity), with ``launch(cupy, kernel)`` binding
    its launcher.  ``host``, where given, is a NumPy-only spelling of the twin with the
    same arguments and results that plain NumPy runs instead, where NumPy has a faster
    way (tests hold it to the twin).

    ``outputs`` are the positions of the arguments the kernel writes (its results), and
    ``scratch(backend, args)`` returns ``args`` with the twin's scratch arguments, which the
    compiled form does not need and callers on the fused path pass as None, allocated.
    ``variant(args)`` gives the values of the template's other parameters (``{M}``, ``{D}``,
    ``{B}``, ``{F}``) that a call selects, in the template's order."""

    def __init__(self, name: str, twin: Callable[..., Any], cuda: str | None = None,
                 launch: Callable[..., Any] | None = None, host: Callable[..., Any] | None = None,
                 outputs: Sequence[int] = (), scratch: Callable[[Any, tuple], tuple] | None = None,
                 variant: Callable[[tuple], tuple] | None = None) -> None:
        self.name, self.twin, self.cuda, self.launch, self.host = name, twin, cuda, launch, host
        self.outputs, self.scratch = outputs, scratch or (lambda backend, args: args)
        self.variant = variant or (lambda args: ())

    def template(self, values: Sequence[int]) -> str:
        """``cuda`` with its parameters other than ``{T}`` set, in order, to ``values`` (a
        :meth:`variant`): the template the launcher compiles for ``T``."""
        name = cast(str, self.cuda)       # only a kernel with a CUDA template is compiled
        for value in values:
            at = name.index("{", name.index("{T}") + 3)
            name = name[:at] + str(int(value)) + name[name.index("}", at) + 1:]
        return name

    def instance(self, args: tuple, dtype: Any) -> str:
        """The name expression of the instance a call with ``args`` at ``dtype`` launches."""
        return self.template(self.variant(args)).replace("{T}", TYPES[np.dtype(dtype).name])

    def lend(self, backend: Backend, twin: Callable[..., Any]) -> Callable[..., None]:
        """``twin`` (which takes the kernel's arguments and needs its scratch) for callers that
        pass no scratch, as the fused path's do: the scratch is made on ``backend`` once per
        shape of the call's arguments, and lent after."""
        lent: dict = {}

        def run(*args):
            key = tuple(getattr(a, "shape", a is None) for a in args)
            scratch = lent.get(key)
            if scratch is None:
                filled = self.scratch(backend, args)
                scratch = lent[key] = {i: filled[i] for i, a in enumerate(args) if a is None}
            twin(*(scratch.get(i, a) for i, a in enumerate(args)))
        return run

    def __repr__(self):
        return f"<gpumlp kernel {self.name}>"


def _nothing(*args):
    """The identity's f' = 1: nothing to do, no kernel."""


# -- a layer: forward S += b, Z = f(S); backward D ⊙= f'(S) ---------------------------------
def bias_act(f: Activation, bias: bool) -> Kernel:
    """The forward kernel of a layer with activation ``f``: ``k(S, b, Z)``; Z is S for the identity."""
    def twin(xp, S, b, Z):
        if bias:
            xp.add(S, b, out=S)                     # S_k = W_k Z_{k-1} + b_k
        f.forward(xp, S, Z)                         # Z_k = f_k(S_k)

    if f.identity and not bias:
        return Kernel("linear", _nothing)
    name = "bias" if f.identity else ("bias+" if bias else "") + f.name
    return Kernel(name, twin, f"bias_act<{{T}}, {f.code}, {int(bias)}>", launch.bias_act, outputs=(0, 2))


def act_grad(f: Activation) -> Kernel:
    """``k(S, Z, D, mask, tmp)``: D ⊙= f'(S), with the twin's scratch ``mask`` or ``tmp``."""
    if f.identity:
        return Kernel("linear'", _nothing)

    def twin(xp, S, Z, D, mask, tmp):
        f.scale(xp, S, Z, D, mask, tmp)

    def scratch(backend, args):
        S, Z, D, mask, tmp = args
        return (S, Z, D, backend.empty(D.shape, backend.dtype("bool")) if mask is None else mask,
                backend.empty(D.shape, D.dtype) if tmp is None else tmp)
    return Kernel(f.name + "'", twin, f"act_grad<{{T}}, {f.code}>", launch.act_grad, outputs=(2,), scratch=scratch)


LOSS_KERNELS = {name: Kernel(name, twin, f"{name}_loss<{{T}}>", launch.label_loss, outputs=(2, 3, 4),
                             scratch=twins.loss_scratch)
                for name, twin in (("ce", twins.ce), ("hinge", twins.hinge), ("mse", twins.mse))}
TARGET_LOSS_KERNELS = {"squared_error": Kernel("squared_error", twins.squared_error, "squared_error_loss<{T}>",
                                               launch.target_loss, outputs=(2, 3), scratch=twins.loss_scratch)}
SGD_KERNEL = Kernel("sgd", twins.sgd, "sgd<{T}, {M}, {D}>", launch.sgd, outputs=(0, 2), scratch=twins.sgd_scratch,
                    variant=lambda args: (args[2] is not None, args[5] != 0))       # momentum, weight decay
SAMPLE_SQ_KERNEL = Kernel("sample_sq", twins.sample_sq, "sample_sq<{T}, {B}, {F}>", launch.sample_sq,
                          host=twins.sample_sq_host, outputs=(4,), scratch=twins.sample_sq_scratch,
                          variant=lambda args: (bool(args[2]), bool(args[3])))       # bias, first layer
