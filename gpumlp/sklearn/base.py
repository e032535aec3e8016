"""What the classifier and the regressor share: seeds, building the network and its
optimizer, training through :func:`gpumlp.train.fit`, scikit-learn's layout of the
parameters, and pickling.  (Names here are the package's own, not part of gpumlp's API.)"""
from __future__ import annotations

import numbers
from typing import Any, cast

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..activations import ACTIVATIONS
from ..checks import number, positive_int
from ..losses import get_loss
from ..model import MLP
from ..optim import SGD, L2Penalty
from ..train import fit as gpumlp_fit

# scikit-learn's names for activations, beside gpumlp's own (which are accepted too)
SKLEARN_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid"}
# learning_rate_init='auto': the command line's rates for the classifier's losses (tuned on the digits),
# and one for regression on real targets
AUTO_LR = {"ce": 0.1, "hinge": 0.01, "mse": 0.02, "squared_error": 0.003}


def make_optimizer(lr: float, momentum: float, alpha: float) -> SGD:
    """Plain SGD on the loss plus scikit-learn's L2 penalty, as a gradient hook."""
    return SGD(lr, momentum=momentum, hooks=[L2Penalty(alpha)])


def penalty_of(optimizer: SGD) -> float:
    return next(h.alpha for h in optimizer.hooks if isinstance(h, L2Penalty))


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == "auto"


class MLPAdapter(BaseEstimator):
    """What the classifier and the regressor share: seeds, building the network and its
    optimizer, training through gpumlp's fit, scikit-learn's layout of the parameters,
    and pickling."""

    def _seeds(self):
        """(initial-weights seed, shuffle seed): the int itself for an int random_state, so
        that the estimator reproduces gpumlp's own ``MLP(seed=s)`` and ``fit(seed=s)``; two
        draws from the RandomState (NumPy's global one for None) otherwise."""
        seed = self.random_state
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            return int(seed), int(seed)
        return tuple(int(s) for s in check_random_state(seed).randint(2**31, size=2))

    def _build(self, n_features, n_classes, seed):
        """A new network and optimizer from the parameters, checked here (scikit-learn
        builds estimators without checking; gpumlp's constructors check the rest)."""
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        if not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and int(h) >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be a positive int or a sequence of them; "
                             f"got {self.hidden_layer_sizes!r}")
        activation = SKLEARN_ACTIVATIONS.get(self.activation, self.activation)
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            names = ", ".join(sorted(SKLEARN_ACTIVATIONS))
            raise ValueError(f"activation must be one of scikit-learn's {names}, tanh, "
                             f"relu or gpumlp's {', '.join(sorted(ACTIVATIONS))}; got {self.activation!r}")
        net = MLP([n_features, *hidden, n_classes], activation=activation, output="linear",
                  dtype=self.dtype, device=self.device, seed=seed)
        entry = get_loss(self.loss)
        if entry.kind != ("targets" if isinstance(self, RegressorMixin) else "labels"):
            raise ValueError(f"loss must be one of ce, hinge, mse for a classifier; got {self.loss!r}")
        lr = AUTO_LR[entry.name] if is_auto(self.learning_rate_init) else self.learning_rate_init
        return net, make_optimizer(number(lr, "learning_rate_init", lambda v: v > 0, "a finite number > 0 or 'auto'"),
                               self.momentum, self.alpha)

    def _train(self, net, optimizer, state, X, codes, epochs):
        """gpumlp's fit on X.T (d0 × N), continuing ``state`` up to ``epochs`` in all; returns
        the history of the epochs it ran."""
        n = X.shape[0]
        if is_auto(self.batch_size):
            batch_size = min(200, n)
        else:
            batch_size = positive_int(self.batch_size, "batch_size")
        return gpumlp_fit(net, X.T, codes, optimizer, loss=self.loss, margin=self.margin, epochs=epochs,
                    batch_size=batch_size, state=state, progress=False, log=print if self.verbose else None,
                    micro_batch=self.micro_batch)

    # -- scikit-learn's layout of the parameters -------------------------------------
    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weights as scikit-learn lays them out: W_k.T (d_{k-1} × d_k), NumPy copies."""
        check_is_fitted(self)
        return [w.T for w in self.net_.get_params()[0]]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Biases as scikit-learn lays them out: b_k as a vector of length d_k."""
        check_is_fitted(self)
        biases = cast("list[np.ndarray]", self.net_.get_params()[1])      # the estimator's nets have biases
        return [b.ravel() for b in biases]

    # -- pickling: scikit-learn copies estimators this way (gpumlp's files never do) --
    def __getstate__(self):
        """The estimator with its network as host arrays (a device array or a bound kernel
        does not pickle) and SGD's momentum, so that partial_fit resumes exactly.  The
        TrainState (the shuffling generator) pickles as it is."""
        state = dict(super().__getstate__())
        net, optimizer = state.pop("net_", None), state.pop("_optimizer", None)
        if net is not None:
            W, b = net.get_params()
            state["_net_state"] = {
                "sizes": list(net.sizes), "activation": net.activation, "output": net.output, "bias": net.bias,
                "dtype": net.dtype, "W": W, "b": b, "lr": optimizer.lr, "momentum": optimizer.momentum,
                "alpha": penalty_of(optimizer), "optimizer": optimizer.state_dict(net)}
        return state

    def __setstate__(self, state):
        """Rebuild the network on ``device`` (a GPU-trained model loads on a CPU with device='cpu')."""
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        if saved is not None:
            net = MLP(saved["sizes"], activation=saved["activation"], output=saved["output"], bias=saved["bias"],
                      dtype=saved["dtype"], device=self.device)
            net.set_params(saved["W"], saved["b"])
            optimizer = make_optimizer(saved["lr"], saved["momentum"], saved["alpha"])
            optimizer.load_state_dict(net, saved["optimizer"])
            self.net_, self._optimizer = net, optimizer
