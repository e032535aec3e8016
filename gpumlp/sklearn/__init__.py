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

Importing this package without scikit-learn raises an ImportError naming the extra.
"""
try:
    import sklearn  # noqa: F401
except ImportError as e:
    raise ImportError(f"gpumlp.sklearn needs scikit-learn ({e}); pip install -e '.[sklearn]' "
                      "(in the gpumlp checkout)") from e

from .classifier import MLPClassifier
from .regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
