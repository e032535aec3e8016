"""scikit-learn's MLPClassifier, trained by gpumlp."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..checks import positive_int
from ..losses import softmax
from ..train import TrainState
from .base import MLPAdapter


class MLPClassifier(ClassifierMixin, MLPAdapter):
    """Multilayer perceptron classifier trained by gpumlp, with scikit-learn's interface.

    X is N × d0 (one sample per row), as everywhere in scikit-learn; labels may be any
    values (``classes_`` holds them, sorted).  The network is ``gpumlp.MLP([d0,
    *hidden_layer_sizes, n_classes])`` with a linear output (two outputs for two
    classes), trained by :func:`gpumlp.train.fit` with mini-batch SGD.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Widths of the hidden layers; ``()`` gives a linear model.
    activation : str, default='relu'
        Hidden activation: scikit-learn's 'identity', 'logistic', 'tanh', 'relu', or
        gpumlp's 'linear', 'sigmoid', 'leaky_relu'.
    loss : {'ce', 'hinge', 'mse'}, default='ce'
        Softmax cross-entropy, the multi-class hinge on softmax probabilities, or
        squared error on one-hot targets (see :mod:`gpumlp.losses`).
    margin : float, default=1.0
        The hinge loss's margin C.
    alpha : float, default=1e-4
        scikit-learn's L2 penalty on the weights (not the biases): 0.5·alpha·Σ‖W‖²
        divided by the batch's sample count (see :class:`gpumlp.optim.L2Penalty`).
    batch_size : int or 'auto', default=32
        Samples per SGD step; 'auto' is min(200, n_samples) as in scikit-learn.
    learning_rate_init : float or 'auto', default='auto'
        The constant SGD learning rate; 'auto' is gpumlp's default for the loss
        (ce 0.1, hinge 0.01, mse 0.02).
    momentum : float, default=0.9
        SGD momentum in [0, 1) (``torch.optim.SGD``'s rule, no Nesterov).
    max_iter : int, default=30
        Epochs of ``fit``, as the command line's ``--epochs`` default.  There is no early
        stopping: every epoch runs.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights and the shuffling.  An int s gives exactly
        ``gpumlp.MLP(seed=s)`` trained by ``fit(seed=s)``.
    device : {'cpu', 'gpu', 'auto'}, default='cpu'
        Where the network lives (see :func:`gpumlp.get_backend`).  The command line's
        default is 'auto' (a GPU where there is one); an estimator stays on the CPU
        unless asked, because scikit-learn's tools (cross-validation, grid searches with
        n_jobs, pickling) copy estimators between processes, and its results should not
        change with the machine it runs on.
    dtype : {'float64', 'float32'}, default='float64'
        The network's precision.  float64 by default, as scikit-learn computes on
        float64 input and its estimator checks compare results to tight tolerances;
        the command line trains in float32, the fast choice on a GPU.
    verbose : bool, default=False
        Print each epoch's loss and accuracy.
    micro_batch : int or None, default=None
        Compute each batch in chunks of at most this many samples, their gradients summed:
        the same training (up to the order of sums) in the memory of the chunk.

    Attributes
    ----------
    net_ : gpumlp.MLP
        The trained network (d0 × N inside: ``net_.predict(X.T)``).
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    loss_curve_ : list of float
        Each epoch's mean training loss, as :func:`gpumlp.train.fit` reports it (the data
        loss over the batches as they were seen; without the L2 penalty, which
        scikit-learn's own curve includes).  ``partial_fit`` appends to it.
    loss_ : float
        The last entry of ``loss_curve_``.
    n_iter_ : int
        Epochs run by the last ``fit`` or ``partial_fit`` call.
    coefs_, intercepts_ : lists of ndarray
        The weights and biases in scikit-learn's layout (W_k.T, d_{k-1} × d_k, and b_k as a vector).
    """

    def __init__(self, hidden_layer_sizes: Sequence[int] = (100,), activation: str = "relu", *, loss: str = "ce",
                 margin: float = 1.0, alpha: float = 1e-4, batch_size: int = 32,
                 learning_rate_init: float | str = "auto", momentum: float = 0.9, max_iter: int = 30,
                 random_state: int | np.random.RandomState | None = None,
                 device: str = "cpu", dtype: str = "float64", verbose: bool = False, micro_batch: int | None = None):
        self.micro_batch = micro_batch
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.margin = margin
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    # -- training --------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train a new network on X (n_samples × n_features) and labels y for ``max_iter`` epochs."""
        epochs = positive_int(self.max_iter, "max_iter")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=True)
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; "
                             f"got 1 class ({classes[0]!r})")
        init_seed, shuffle_seed = self._seeds()
        net, optimizer = self._build(X.shape[1], len(classes), init_seed)
        state = TrainState(shuffle_seed)
        history = self._train(net, optimizer, state, X, codes, epochs)
        self.classes_, self.net_, self._optimizer, self._state = classes, net, optimizer, state
        self.loss_curve_ = [h["loss"] for h in history]
        self.loss_, self.n_iter_ = self.loss_curve_[-1], len(history)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over X and y, continuing the network, SGD's momentum and the shuffling
        generator of the earlier calls (so fit for k epochs, then partial_fit on the same
        data, trains exactly as fit for k + 1 epochs).

        ``classes`` (every label of the whole problem) is required on the first call,
        as in scikit-learn, and must then be left out or be the same; y need not
        contain all of them.  After ``fit``, partial_fit continues that network.
        """
        first = not hasattr(self, "net_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit "
                             "(every label of the problem, e.g. np.unique(y_all))")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=first)
        check_classification_targets(y)
        if classes is not None:
            classes = np.unique(classes)
            if len(classes) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes; got classes={classes!r}")
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes!r} is not the same as in the first call to "
                                 f"partial_fit or fit, {self.classes_!r}")
        else:
            classes = self.classes_
        codes = np.searchsorted(classes, y)
        unknown = (codes >= len(classes)) | (classes[np.minimum(codes, len(classes) - 1)] != y)
        if unknown.any():
            raise ValueError(f"y has labels not in classes {classes!r}: {np.unique(y[unknown])!r}")
        if first:
            init_seed, shuffle_seed = self._seeds()
            net, optimizer = self._build(X.shape[1], len(classes), init_seed)
            state, curve = TrainState(shuffle_seed), []
        else:
            net, optimizer, state, curve = self.net_, self._optimizer, self._state, self.loss_curve_
        history = self._train(net, optimizer, state, X, codes, state.epoch + 1)    # fit's epochs: the run's total
        self.classes_, self.net_, self._optimizer, self._state = classes, net, optimizer, state
        self.loss_curve_ = curve + [history[0]["loss"]]
        self.loss_, self.n_iter_ = self.loss_curve_[-1], 1
        return self

    # -- prediction ------------------------------------------------------------------
    def _outputs(self, X):
        """The network's output Y (K × N) for checked X (N × d0), as a NumPy array."""
        return self.net_.outputs(X.T)

    def _check_X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, dtype=(np.float64, np.float32), reset=False)

    def predict(self, X: Any) -> np.ndarray:
        """The class of each row of X: ``classes_[argmax_j Y_j]``."""
        X = self._check_X(X)
        return self.classes_[self.net_.predict(X.T)]

    def _has_proba(self):
        """Probabilities are softmax(Y) for the losses trained on it (ce and hinge), not for mse."""
        return self.loss != "mse"

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """softmax of the network's output, one row per sample, columns in ``classes_`` order."""
        return softmax(np, self._outputs(self._check_X(X))).T

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log of :meth:`predict_proba`, computed as Y − logsumexp(Y) so that it stays finite."""
        Y = self._outputs(self._check_X(X))
        Y = Y - Y.max(axis=0, keepdims=True)
        return (Y - np.log(np.exp(Y).sum(axis=0, keepdims=True))).T
