"""scikit-learn's MLPRegressor, trained by gpumlp."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..checks import positive_int
from ..train import TrainState
from .base import MLPAdapter


class MLPRegressor(RegressorMixin, MLPAdapter):
    """Multilayer perceptron regressor trained by gpumlp, with scikit-learn's interface.

    X is N × d0; y is (N,) or N × k real targets.  The network is ``gpumlp.MLP([d0,
    *hidden_layer_sizes, k])`` with a linear output, trained by :func:`gpumlp.train.fit`
    on ``loss="squared_error"``: ½ the mean over samples and outputs of (Y − T)², the
    loss scikit-learn's MLPRegressor minimises (plus the same L2 penalty ``alpha``).
    The other parameters mean what they mean for :class:`MLPClassifier`, defaults
    included (device='cpu' and dtype='float64', where the command line takes 'auto' and
    float32: see there why); ``learning_rate_init='auto'`` is 0.003.  ``loss_curve_`` holds fit's per-epoch
    training loss (without the penalty).
    """

    _loss = "squared_error"

    def __init__(self, hidden_layer_sizes: Sequence[int] = (100,), activation: str = "relu", *, alpha: float = 1e-4,
                 batch_size: int = 32, learning_rate_init: float | str = "auto", momentum: float = 0.9,
                 max_iter: int = 30, random_state: int | np.random.RandomState | None = None,
                 device: str = "cpu", dtype: str = "float64", verbose: bool = False, micro_batch: int | None = None):
        self.micro_batch = micro_batch
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True            # y may be N × k
        return tags

    @property
    def loss(self) -> str:
        return self._loss

    @property
    def margin(self) -> float:
        return 1.0

    def _targets(self, y):
        """y (N,) or N × k as gpumlp's k × N targets."""
        y = np.asarray(y, np.float64)
        return (y.reshape(-1, 1) if y.ndim == 1 else y).T

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train a new network on X (n_samples × n_features) and targets y for ``max_iter`` epochs."""
        epochs = positive_int(self.max_iter, "max_iter")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True,
                             reset=True)
        T = self._targets(y)
        init_seed, shuffle_seed = self._seeds()
        net, optimizer = self._build(X.shape[1], T.shape[0], init_seed)
        state = TrainState(shuffle_seed)
        history = self._train(net, optimizer, state, X, T, epochs)
        self._y_ndim, self.net_, self._optimizer, self._state = y.ndim, net, optimizer, state
        self.loss_curve_ = [h["loss"] for h in history]
        self.loss_, self.n_iter_ = self.loss_curve_[-1], len(history)
        return self

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over X and y, continuing the network, SGD's momentum and the shuffling
        generator of the earlier calls (fit for k epochs, then partial_fit on the same data,
        trains exactly as fit for k + 1 epochs)."""
        first = not hasattr(self, "net_")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True, y_numeric=True,
                             reset=first)
        T = self._targets(y)
        if first:
            init_seed, shuffle_seed = self._seeds()
            net, optimizer = self._build(X.shape[1], T.shape[0], init_seed)
            state, curve = TrainState(shuffle_seed), []
        else:
            net, optimizer, state, curve = self.net_, self._optimizer, self._state, self.loss_curve_
            if T.shape[0] != net.sizes[-1]:
                raise ValueError(f"y has {T.shape[0]} targets per sample; the network was fitted on {net.sizes[-1]}")
        history = self._train(net, optimizer, state, X, T, state.epoch + 1)
        self._y_ndim, self.net_, self._optimizer, self._state = y.ndim, net, optimizer, state
        self.loss_curve_ = curve + [history[0]["loss"]]
        self.loss_, self.n_iter_ = self.loss_curve_[-1], 1
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The network's output for each row of X: shape (N,) for 1-D targets, else N × k."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        Y = self.net_.outputs(X.T).T
        return Y.ravel() if self._y_ndim == 1 else Y
