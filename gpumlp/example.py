"""Exercise 2 of the homework, computed by the library: one forward pass, the error
signals, the gradients and one SGD step on the 2-3-1 ReLU network."""
from typing import Any

import numpy as np

from . import losses
from .backend import to_numpy
from .model import MLP
from .optim import SGD

X = np.array([[0.75, 0.2, -0.75, 0.2],
              [0.8, 0.05, 0.8, -0.05]])
W1 = np.array([[0.6, 0.01],
               [0.7, 0.43],
               [0.0, 0.88]])
W2 = np.array([[0.02, 0.03, 0.09]])
y = np.array([[1.0, 1.0, -1.0, -1.0]])
LR = 0.5


def exercise2(device: str = "cpu", dtype: str = "float64") -> dict[str, Any]:
    """Every quantity the homework prints, in its order, as NumPy arrays or floats."""
    net = MLP([2, 3, 1], activation="relu", output="linear", bias=False, dtype=dtype, device=device)
    net.set_params([W1, W2])
    Y = net.forward(X)
    loss, dY = losses.mse(Y, y, reduction="mean")
    net.backward(dY)
    out = {"S_1": net.S[0], "Z_1": net.Z[1], "Y_out": Y, "L": loss,
           "Delta_out": net.deltas[1], "Delta_1": net.deltas[0],
           "dL/dW_2": net.dW[1], "dL/dW_1": net.dW[0]}
    out = {k: to_numpy(v) for k, v in out.items()}      # copies, before the step changes them
    SGD(lr=LR).step(net)
    out["W_1 (updated)"], out["W_2 (updated)"] = (to_numpy(w) for w in net.W)
    out["L (after the step)"] = to_numpy(losses.mse(net.forward(X), y)[0])
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def walkthrough(values: dict[str, Any]) -> str:
    """The values of :func:`exercise2` as text, 4 decimals, in the homework's order."""
    lines = ["Exercise 2: 2-3-1 ReLU network, no bias, L = ½‖Y − y‖²_F / N, SGD lr = 0.5", ""]
    for name, v in values.items():
        if np.ndim(v) == 0:
            lines.append(f"{name} = {v:.4f}")
        else:
            lines.append(f"{name} =")
            lines += ["    " + "  ".join(f"{x:8.4f}" for x in row) for row in np.atleast_2d(v)]
        lines.append("")
    return "\n".join(lines).replace("-0.0000", " 0.0000")
