"""A scikit-learn estimator over gpumlp: :class:`MLPClassifier` (the ``sklearn`` extra).

scikit-learn puts one sample per **row** (X is N × d0); gpumlp puts one per column.
The estimator checks X the scikit-learn way (``validate_data``: dtype, NaN, sparse,
``n_features_in_``, feature names) and hands ``X.T``, a free view, to gpumlp, whose
own check and device transfer then store it once in the layout its steps use.
Training is :func:`gpumlp.train.fit` itself, so the column-major MLP, its kernels and
its device path stay the one core; this module adds only what scikit-learn means by
its parameters:

* ``alpha`` is scikit-learn's L2 penalty 0.5·alpha·Σ_k‖W_k‖²/n on the weights of a
  batch of n samples (never the biases), i.e. alpha·W_k/n added to dW_k before the
  step.  It is *not* ``gpumlp.SGD``'s ``weight_decay``, which decays the biases too and
  does not divide by n; the gradient hook :class:`gpumlp.optim.L2Penalty` adds the
  penalty's gradient, n being the whole batch's, before a plain :class:`gpumlp.SGD` step.
* ``partial_fit`` is one more epoch of ``fit`` on the given data, with the same network,
  optimizer and :class:`gpumlp.train.TrainState`, so SGD's momentum and the shuffling
  generator carry over from call to call (and from a ``fit`` before).
* ``random_state`` as scikit-learn takes it: an int seeds both the initial weights
  and the shuffling exactly as ``gpumlp.MLP(seed=...)`` and ``fit(seed=...)`` do.

Importing this module without scikit-learn raises an ImportError naming the extra.
"""
try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:
    raise ImportError(f"gpumlp.sklearn needs scikit-learn ({e}); pip install 'gpumlp[sklearn]'") from e

import numbers

import numpy as np

from ._checks import number, positive_int
from .activations import ACTIVATIONS
from .losses import get_loss, softmax
from .model import MLP
from .optim import SGD, L2Penalty
from .train import TrainState
from .train import fit as _fit

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's names for activations, beside gpumlp's own (which are accepted too)
_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid"}


def _optimizer(lr, momentum, alpha):
    """Plain SGD on the loss plus scikit-learn's L2 penalty, as a gradient hook."""
    return SGD(lr, momentum=momentum, hooks=[L2Penalty(alpha)])


def _alpha(optimizer):
    return next(h.alpha for h in optimizer.hooks if isinstance(h, L2Penalty))


class _MLPAdapter(BaseEstimator):
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
        if not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be a positive int or a sequence of them; "
                             f"got {self.hidden_layer_sizes!r}")
        activation = _ACTIVATIONS.get(self.activation, self.activation)
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of scikit-learn's {', '.join(sorted(_ACTIVATIONS))}, tanh, "
                             f"relu or gpumlp's {', '.join(sorted(ACTIVATIONS))}; got {self.activation!r}")
        net = MLP([n_features, *hidden, n_classes], activation=activation, output="linear",
                  dtype=self.dtype, device=self.device, seed=seed)
        entry = get_loss(self.loss)
        if entry.kind != ("targets" if isinstance(self, RegressorMixin) else "labels"):
            raise ValueError(f"loss must be one of ce, hinge, mse for a classifier; got {self.loss!r}")
        lr = entry.lr if _is_auto(self.learning_rate_init) else self.learning_rate_init
        return net, _optimizer(number(lr, "learning_rate_init", lambda v: v > 0, "a finite number > 0 or 'auto'"),
                               self.momentum, self.alpha)

    def _train(self, net, optimizer, state, X, codes, epochs):
        """gpumlp's fit on X.T (d0 × N), continuing ``state`` up to ``epochs`` in all; returns
        the history of the epochs it ran."""
        n = X.shape[0]
        if _is_auto(self.batch_size):
            batch_size = min(200, n)
        else:
            batch_size = positive_int(self.batch_size, "batch_size")
        return _fit(net, X.T, codes, optimizer, loss=self.loss, margin=self.margin, epochs=epochs,
                    batch_size=batch_size, state=state, progress=False, log=print if self.verbose else None,
                    micro_batch=self.micro_batch)

    # -- scikit-learn's layout of the parameters -------------------------------------
    @property
    def coefs_(self):
        """Weights as scikit-learn lays them out: W_k.T (d_{k-1} × d_k), NumPy copies."""
        check_is_fitted(self)
        return [w.T for w in self.net_.get_params()[0]]

    @property
    def intercepts_(self):
        """Biases as scikit-learn lays them out: b_k as a vector of length d_k."""
        check_is_fitted(self)
        return [b.ravel() for b in self.net_.get_params()[1]]

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
                "alpha": _alpha(optimizer), "optimizer": optimizer.state_dict(net)}
        return state

    def __setstate__(self, state):
        """Rebuild the network on ``device`` (a GPU-trained model loads on a CPU with device='cpu')."""
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        if saved is not None:
            net = MLP(saved["sizes"], activation=saved["activation"], output=saved["output"], bias=saved["bias"],
                      dtype=saved["dtype"], device=self.device)
            net.set_params(saved["W"], saved["b"])
            optimizer = _optimizer(saved["lr"], saved["momentum"], saved["alpha"])
            optimizer.load_state_dict(net, saved["optimizer"])
            self.net_, self._optimizer = net, optimizer


class MLPClassifier(ClassifierMixin, _MLPAdapter):
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

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="ce", margin=1.0, alpha=1e-4,
                 batch_size=32, learning_rate_init="auto", momentum=0.9, max_iter=30, random_state=None,
                 device="cpu", dtype="float64", verbose=False, micro_batch=None):
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
    def fit(self, X, y):
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

    def partial_fit(self, X, y, classes=None):
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

    def predict(self, X):
        """The class of each row of X: ``classes_[argmax_j Y_j]``."""
        X = self._check_X(X)
        return self.classes_[self.net_.predict(X.T)]

    def _has_proba(self):
        """Probabilities are softmax(Y) for the losses trained on it (ce and hinge), not for mse."""
        return self.loss != "mse"

    @available_if(_has_proba)
    def predict_proba(self, X):
        """softmax of the network's output, one row per sample, columns in ``classes_`` order."""
        return softmax(np, self._outputs(self._check_X(X))).T

    @available_if(_has_proba)
    def predict_log_proba(self, X):
        """log of :meth:`predict_proba`, computed as Y − logsumexp(Y) so that it stays finite."""
        Y = self._outputs(self._check_X(X))
        Y = Y - Y.max(axis=0, keepdims=True)
        return (Y - np.log(np.exp(Y).sum(axis=0, keepdims=True))).T

def _is_auto(value):
    return isinstance(value, str) and value == "auto"


class MLPRegressor(RegressorMixin, _MLPAdapter):
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

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=1e-4, batch_size=32,
                 learning_rate_init="auto", momentum=0.9, max_iter=30, random_state=None,
                 device="cpu", dtype="float64", verbose=False, micro_batch=None):
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
    def loss(self):
        return self._loss

    @property
    def margin(self):
        return 1.0

    def _targets(self, y):
        """y (N,) or N × k as gpumlp's k × N targets."""
        y = np.asarray(y, np.float64)
        return (y.reshape(-1, 1) if y.ndim == 1 else y).T

    def fit(self, X, y):
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

    def partial_fit(self, X, y):
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

    def predict(self, X):
        """The network's output for each row of X: shape (N,) for 1-D targets, else N × k."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        Y = self.net_.outputs(X.T).T
        return Y.ravel() if self._y_ndim == 1 else Y
