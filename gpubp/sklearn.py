"""scikit-learn estimators on gpubp: ``MLPClassifier`` and ``MLPRegressor``.

    from gpubp.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(30,), learning_rate_init=0.5, max_iter=30).fit(X, y)
    clf.predict(X_test); clf.predict_proba(X_test); clf.score(X_test, y_test)

They follow scikit-learn's estimator API (``fit``, ``partial_fit``, ``predict``, ``predict_proba``,
``score``, ``get_params``/``set_params``, ``clone``, pickling) and pass its own estimator checks
(``tests/test_sklearn.py``), so they work in ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.
Underneath is one :class:`gpubp.MLP` (``net_``), trained by its ``fit`` on any gpubp backend.

Parameters named as in ``sklearn.neural_network`` mean the same there, with these mappings:

    alpha               scikit-learn's L2 penalty (α/2n)·Σ‖W‖² adds (α/B)·W to the gradient of each batch of B
                        samples; gpubp's weight decay λ adds λW (``v ← μv + ∂C/∂W + λW``), so λ = α/B with B
                        the batch size.  The one difference: when B does not divide n, the shorter last batch
                        of an epoch is decayed by α/B too (scikit-learn: α/len(batch)).  Biases are not decayed
                        (as in scikit-learn).
    momentum            classic momentum, v ← μv + g, W ← W − ηv: scikit-learn's non-Nesterov update
                        (``nesterovs_momentum=False``), which is the only one here.
    learning_rate_init  η, constant (``learning_rate="constant"``, the only schedule here).
    batch_size          "auto" is min(200, n_samples), as in scikit-learn; larger values are clipped to n.
    loss_curve_         per epoch, gpubp's mean per-sample cost of the epoch's batches (the cost named by
                        ``loss``: ½Σ(a − y)² or −Σ[y ln a + (1 − y) ln(1 − a)] over the output units) plus the
                        L2 term (λ/2)·Σ‖W‖² at the epoch's end, the quantity whose gradient SGD follows.
                        ``tol`` and ``n_iter_no_change`` stop training on it as scikit-learn does
                        (or on the validation score with ``early_stopping``).
    coefs_, intercepts_ as scikit-learn lays them out: coefs_[i] is n_i × n_{i+1} (gpubp's W_{i+1}),
                        intercepts_[i] has n_{i+1} entries; NumPy copies of the model's (on any backend).
    random_state        an int is gpubp's seed (initialisation and shuffling): the estimator's weights
                        equal ``gpubp.MLP(..., seed=random_state)``'s after the same fit.  Initialisation is
                        gpubp's (W ~ N(0, 1/fan_in), b ~ N(0, 1)), not scikit-learn's Glorot uniform.

What they cannot do is refused, naming the alternative: every unit is a sigmoid (``activation`` is
"logistic" only), the solver is SGD with momentum (``solver="sgd"`` only: for adam or lbfgs use
``sklearn.neural_network``), no learning-rate schedule, no ``sample_weight``.

The output layer is a sigmoid, so:

- ``MLPClassifier.predict_proba``: for two classes one output unit a, and [1 − a, a]; for K > 2 classes
  K sigmoid units, each trained (with the per-unit cross-entropy, or MSE) as its class against the rest,
  so their outputs are independent and do not sum to 1: predict_proba returns them divided by their
  row's sum, a_k / Σ_j a_j (scikit-learn's softmax output layer gives probabilities that sum to 1 by
  construction; these are one-vs-rest scores made to sum to 1, not a softmax).  The argmax, and so
  ``predict``, is the raw outputs' argmax either way.  For multilabel targets (a 2-D 0/1 indicator y)
  each column is its label's own sigmoid output, not normalised, as in scikit-learn.
- ``MLPRegressor`` maps each target column affinely from the first fit's [min, max] onto [0.1, 0.9]
  (``target_range_`` holds the values that outputs 0 and 1 stand for, min − span/8 and max + span/8),
  learns that, and maps predictions back: they always lie inside ``target_range_``; ``partial_fit`` and
  warm starts refuse targets beyond it.

Inputs: anything scikit-learn takes (NumPy, lists, pandas, with ``feature_names_in_`` from a DataFrame),
and arrays of other libraries exporting DLPack (PyTorch, JAX, CuPy): in host memory seen in place; in GPU
memory taken as they are on the cupy backend (gpubp's own input checks replace scikit-learn's there) and
refused, naming the fix, on the numpy and emulated backends.  Outputs are NumPy arrays.  Pickling keeps
the weights, the momentum buffers and the shuffling state, not the backend: ``backend`` is chosen again
when the estimator is loaded (``"auto"``: CuPy where a GPU answers, else NumPy).
"""
from __future__ import annotations

import numbers
import sys
import warnings
from collections.abc import Mapping

import numpy as np

try:   # absolute imports: "sklearn" below is scikit-learn, never this module (gpubp.sklearn)
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError:                                             # pragma: no cover - scikit-learn is optional
    raise ImportError("gpubp.sklearn needs scikit-learn: pip install 'gpubp[sklearn]'") from None
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .backend import get_backend
from .mlp import MLP
from .validation import InputError, check_dtype, dlpack_device, not_on_host_error

__all__ = ["MLPClassifier", "MLPRegressor"]

#: the regressor's targets are mapped from the first fit's [min, max] onto [MARGIN, 1 − MARGIN]
MARGIN = 0.1

#: scikit-learn's loss names, taken as gpubp's
LOSS_ALIASES = {"log_loss": "cross_entropy", "squared_error": "mse"}


class _MLPEstimator(BaseEstimator):
    """What the classifier and the regressor share: the parameters, fit/partial_fit on a gpubp.MLP,
    pickling.  Subclasses say how y becomes targets in [0, 1] (``_targets``) and outputs become
    predictions.

    hidden_layer_sizes  (100,)       widths of the hidden layers (an int: one layer; (): none)
    loss                "auto"       "cross_entropy" (classifier) / "mse" (regressor); or the other one
    activation, solver  "logistic", "sgd": the only ones (others are refused, naming scikit-learn's)
    learning_rate, nesterovs_momentum  "constant", False: the only ones (likewise)
    alpha               0.0001       L2 penalty, as scikit-learn's: weight decay λ = alpha / batch_size
    batch_size          "auto"       min(200, n_samples)
    learning_rate_init  0.1          η (scikit-learn's 0.001 is its adam default; SGD on sigmoids wants more)
    momentum            0.9          μ, classic momentum
    max_iter            200          epochs at most (partial_fit: one)
    shuffle, random_state            shuffle every epoch; gpubp's seed (int), None, or a RandomState
    tol, n_iter_no_change  1e-4, 10  stop when the loss (or the validation score) has not improved by tol
                                     for more than n_iter_no_change epochs
    early_stopping, validation_fraction  False, 0.1: hold out that share of the data and keep the weights
                                     of the best validation score (accuracy / R²)
    verbose, warm_start              print each epoch's loss; continue from the current weights
    backend             "auto"       gpubp's: "auto" | "numpy" | "emulated" | "cupy", with backend_options
    dtype               "float32"    the model's dtype ("float64" for reproducibility to the last bit)

    Fitted: net_ (the gpubp.MLP), coefs_, intercepts_, n_features_in_, feature_names_in_ (from a
    DataFrame), loss_curve_, n_iter_ (epochs of the last fit), t_ (samples seen), best_loss_,
    validation_scores_, best_validation_score_, n_layers_, n_outputs_, out_activation_ ("logistic"),
    backend_reason_."""

    _default_loss = "mse"

    def __init__(self, hidden_layer_sizes=(100,), loss="auto", activation="logistic", solver="sgd", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.1, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=False, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 backend="auto", dtype="float32", backend_options=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.loss = loss
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.backend_options = backend_options

    # -- parameters: checked at fit, never in __init__ or set_params (scikit-learn's rule) ---------------
    def _checked_params(self) -> dict:
        name, sk = type(self).__name__, f"sklearn.neural_network.{type(self).__name__}"
        if self.activation not in ("logistic", "sigmoid"):
            raise InputError(f"activation={self.activation!r}: gpubp's networks are sigmoid throughout "
                             f"(activation='logistic'), in its equations and its CUDA kernels; for "
                             f"{self.activation!r} units use {sk}(activation={self.activation!r})")
        if self.solver != "sgd":
            raise InputError(f"solver={self.solver!r}: gpubp trains by mini-batch SGD with momentum only "
                             f"(solver='sgd'); for {self.solver!r} use {sk}(solver={self.solver!r}, "
                             f"activation='logistic')")
        if self.learning_rate != "constant":
            raise InputError(f"learning_rate={self.learning_rate!r}: gpubp's SGD runs at a constant rate "
                             f"(learning_rate='constant', learning_rate_init=η); for a schedule use "
                             f"{sk}(solver='sgd', learning_rate={self.learning_rate!r})")
        if self.nesterovs_momentum:
            raise InputError(f"nesterovs_momentum=True: gpubp's momentum is the classic one (v ← μv + ∂C/∂W, "
                             f"W ← W − ηv; nesterovs_momentum=False); for Nesterov's use {sk}(solver='sgd')")
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else hidden
        try:
            hidden = list(hidden)
        except TypeError:
            raise InputError(f"hidden_layer_sizes must be an int or a sequence of ints like (100,) or (64, 32), "
                             f"got {self.hidden_layer_sizes!r}") from None
        if not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0 for h in hidden):
            raise InputError(f"hidden_layer_sizes must hold positive ints, got {self.hidden_layer_sizes!r}")
        loss = self._default_loss if self.loss == "auto" else LOSS_ALIASES.get(self.loss, self.loss)
        if loss == "poisson":
            raise InputError(f"loss='poisson' needs an exponential output layer; gpubp's is a sigmoid: use "
                             f"sklearn.neural_network.MLPRegressor(loss='poisson')")
        if loss not in ("mse", "cross_entropy"):
            raise InputError(f"loss must be 'mse' or 'cross_entropy' (or scikit-learn's 'squared_error', "
                             f"'log_loss'), or 'auto' ({self._default_loss!r} for {name}), got {self.loss!r}")
        checks = [("alpha", self.alpha, 0, True), ("learning_rate_init", self.learning_rate_init, 0, False),
                  ("tol", self.tol, 0, True), ("momentum", self.momentum, 0, True)]
        for pname, v, lo, closed in checks:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) \
                    or v < lo or (v == lo and not closed):
                raise InputError(f"{pname} must be a finite number {'≥' if closed else '>'} {lo}, got {v!r}")
        if self.momentum >= 1:
            raise InputError(f"momentum must be in [0, 1), got {self.momentum!r}")
        for pname, v in (("max_iter", self.max_iter), ("n_iter_no_change", self.n_iter_no_change)):
            if not (v == np.inf and pname == "n_iter_no_change") and (
                    isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1):
                raise InputError(f"{pname} must be a positive int, got {v!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral)
                                              and not isinstance(self.batch_size, bool) and self.batch_size >= 1)):
            raise InputError(f"batch_size must be 'auto' (min(200, n_samples)) or a positive int, got "
                             f"{self.batch_size!r}")
        if isinstance(self.validation_fraction, bool) or not isinstance(self.validation_fraction, numbers.Real) \
                or not 0 < self.validation_fraction < 1:
            raise InputError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if self.backend_options is not None and not isinstance(self.backend_options, Mapping):
            raise InputError(f"backend_options must be a dict like {{'gemm': 'own'}} or None, got "
                             f"{type(self.backend_options).__name__}")
        return {"hidden": [int(h) for h in hidden], "loss": loss, "dtype": check_dtype(self.dtype)}

    def _seed(self):
        """gpubp's seed from random_state: an int as it is, None as None, a RandomState drawn from."""
        rs = self.random_state
        if rs is None or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)):
            return rs if rs is None else int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    # -- inputs ----------------------------------------------------------------------------------------
    def _input(self, X, backend, reset):
        """X checked as scikit-learn checks it (validate_data: n_features_in_, feature_names_in_), or, for
        an array in the memory of a GPU backend (CuPy, or a DLPack tensor there, kept in place), its shape
        only: gpubp's own checks (finite values, the dtype's range) run on it in the MLP."""
        X = backend.from_dlpack(X, "X")                # a PyTorch/JAX tensor: seen in place, or refused
        if self._on_device(X, backend):
            return self._device_X(X, reset)
        return validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))

    @staticmethod
    def _on_device(X, backend) -> bool:
        """Is X an array in a GPU backend's memory (refused, naming the fix, for a host backend)?"""
        if backend.xp is not np and type(X) is backend.xp.ndarray:
            return True
        if type(X).__module__.startswith("cupy"):        # a CuPy array given to the numpy or emulated backend
            raise not_on_host_error(X, "X", dlpack_device(X))
        return False

    def _device_X(self, X, reset):
        """The bookkeeping validate_data does, for a device array that scikit-learn's checks cannot read."""
        if X.ndim != 2:
            raise InputError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if reset:
            self.n_features_in_ = int(X.shape[1])
            self.__dict__.pop("feature_names_in_", None)
        elif X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X

    @staticmethod
    def _host_y(y, backend):
        """y in host memory for scikit-learn's target checks (labels and targets are small): a tensor of
        another library through DLPack, a CuPy array copied back on the cupy backend (refused elsewhere)."""
        if y is None or isinstance(y, np.ndarray):
            return y
        y = backend.from_dlpack(y, "y")
        if type(y).__module__.startswith("cupy"):
            if backend.xp is np:
                raise not_on_host_error(y, "y", dlpack_device(y))
            return y.get()
        return y

    def _data(self, X, y, backend, reset):
        """(X, y) checked: by validate_data (X and y together), or, for X on the device, X's shape by
        :meth:`_device_X` and y by scikit-learn's target checks."""
        X, y = backend.from_dlpack(X, "X"), self._host_y(y, backend)
        if not self._on_device(X, backend):
            return validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32), **self._y_check())
        if y is None:
            raise InputError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        X = self._device_X(X, reset)
        y = validate_data(self, X="no_validation", y=y, **self._y_check())
        if len(y) != len(X):
            raise InputError(f"Found input variables with inconsistent numbers of samples: [{len(X)}, {len(y)}]")
        return X, y

    # -- training ----------------------------------------------------------------------------------------
    def fit(self, X, y):
        """Train from scratch (or, with ``warm_start=True``, from the current weights) for at most
        ``max_iter`` epochs; returns self."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental, classes=None):
        params = self._checked_params()
        first = not hasattr(self, "net_") or (not self.warm_start and not incremental)
        if self.early_stopping and incremental:
            raise InputError("partial_fit does not support early_stopping=True (it is one epoch on the batch "
                             "given); use fit, or set early_stopping=False")
        backend = (get_backend(self.backend, **(self.backend_options or {})) if first
                   else (self.net_.backend, self.net_.backend_reason))
        X, y = self._data(X, y, backend[0], reset=first)
        Y = self._targets(y, params["dtype"], first, classes)
        if first:
            self._new_net(params, X.shape[1], Y.shape[1], backend)
        elif Y.shape[1] != self.net_.sizes[-1]:
            raise InputError(f"y gives {Y.shape[1]} output column(s) but the fitted network has "
                             f"{self.net_.sizes[-1]}; fit again without warm_start to change the targets")
        self._train(X, Y, y, epochs=1 if incremental else self.max_iter, incremental=incremental)
        return self

    def _new_net(self, params, n_in, n_out, backend):
        bk, reason = backend
        sizes = [n_in] + params["hidden"] + [n_out]
        self.net_ = MLP(sizes, loss=params["loss"], backend=bk, dtype=params["dtype"], seed=self._seed())
        self.net_.backend_reason = reason               # the name's reason, not "backend object …"
        if self.verbose:
            print(f"gpubp: backend {reason}", file=sys.stderr)
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_out
        self.out_activation_ = "logistic"
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _train(self, X, Y, y, epochs, incremental):
        """Up to ``epochs`` epochs of net_.fit, stopping (at an epoch's end) as scikit-learn's SGD does."""
        net, n = self.net_, len(X)
        early = self.early_stopping and not incremental
        if early:                                   # scikit-learn's split: stratified for one output column
            stratify = y if self._is_classifier and Y.shape[1] == 1 else None
            rows = np.arange(n)
            train, val = train_test_split(rows, random_state=self._seed(), test_size=self.validation_fraction,
                                          stratify=stratify)
            if len(val) < 2:
                raise InputError("The validation set is too small. Increase 'validation_fraction' or the size of "
                                 "your dataset.")
            take = net.backend.asarray
            X_val, y_val = X[take(val, np.int64)], y[val]
            X, Y = X[take(train, np.int64)], Y[train]
            n = len(train)
        B = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        lmbda = float(self.alpha) / B                # scikit-learn's (α/2n)‖W‖² per batch, as weight decay
        self.n_iter_ = 0
        stopped, best = [], []                      # the epoch training stopped at; the best weights so far

        def epoch_end(epoch, hist):
            loss = hist.loss[-1]
            if lmbda:
                loss += 0.5 * lmbda * sum(float((w.astype(np.float64) ** 2).sum()) for w in net.weights)
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if incremental:
                return None
            if early:
                score = self._score_outputs(self._forward(X_val), y_val)
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                self._no_improvement_count = (self._no_improvement_count + 1
                                              if score < self.best_validation_score_ + self.tol else 0)
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best[:] = [(net.weights, net.biases)]
            else:
                self._no_improvement_count = (self._no_improvement_count + 1
                                              if loss > self.best_loss_ - self.tol else 0)
                self.best_loss_ = min(self.best_loss_, loss)
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if early else "Training loss"
                if self.verbose:
                    print(f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} "
                          f"consecutive epochs. Stopping.")
                stopped.append(epoch)
                return False
            return None

        try:
            net.fit(X, Y, epochs=epochs, batch_size=B, lr=float(self.learning_rate_init), weight_decay=lmbda,
                    momentum=float(self.momentum), shuffle=bool(self.shuffle), progress=False, callback=epoch_end)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early and best:                            # the weights of the best validation score
            bk = net.backend
            for l, (w, b) in enumerate(zip(*best[0]), start=1):
                net.W[l][...] = bk.asarray(w, net.dtype)
                net.b[l][...] = bk.asarray(b, net.dtype)
        if not incremental and not stopped and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                          f"hasn't converged yet.", ConvergenceWarning)

    # -- outputs -----------------------------------------------------------------------------------------
    def _outputs(self, X) -> np.ndarray:
        """a_L for X, as float64 NumPy (n × n_outputs)."""
        check_is_fitted(self)
        return self._forward(self._input(X, self.net_.backend, reset=False))

    def _forward(self, X) -> np.ndarray:
        return self.net_.backend.to_numpy(self.net_.forward(X)).astype(np.float64)

    @property
    def coefs_(self) -> list:
        """coefs_[i]: the n_i × n_{i+1} weights of layer i + 1 (NumPy copies of net_'s W)."""
        check_is_fitted(self, "net_")
        return self.net_.weights

    @property
    def intercepts_(self) -> list:
        """intercepts_[i]: the n_{i+1} biases of layer i + 1 (NumPy copies of net_'s b)."""
        check_is_fitted(self, "net_")
        return self.net_.biases

    @property
    def backend_reason_(self) -> str:
        """Which backend was picked and why (``"auto: picked numpy (no CUDA device: …)"``)."""
        check_is_fitted(self, "net_")
        return self.net_.backend_reason

    # -- pickling: the weights travel, the backend is chosen again on load --------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())          # a copy: object.__getstate__ gives __dict__ itself
        net = state.pop("net_", None)
        if net is not None:
            bk = net.backend
            state["_net_state"] = {
                "sizes": net.sizes, "loss": net.cost.name, "dtype": net.dtype.name, "init": net.init,
                "W": net.weights, "b": net.biases,
                "vW": None if net.vW is None else [bk.to_numpy(v).copy() for v in net.vW[1:]],
                "vb": None if net.vb is None else [bk.to_numpy(v).copy() for v in net.vb[1:]],
                "rng": net.rng.bit_generator.state}
        return state

    def __setstate__(self, state):
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        if saved is not None:
            net = MLP(saved["sizes"], loss=saved["loss"], backend=self.backend, dtype=saved["dtype"],
                      init=saved["init"], backend_options=self.backend_options)
            put = net.backend.asarray
            net.W = [None] + [put(w, net.dtype) for w in saved["W"]]
            net.b = [None] + [put(b, net.dtype) for b in saved["b"]]
            if saved["vW"] is not None:
                net.vW = [None] + [put(v, net.dtype) for v in saved["vW"]]
                net.vb = [None] + [put(v, net.dtype) for v in saved["vb"]]
            net.rng.bit_generator.state = saved["rng"]
            self.net_ = net


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    """A sigmoid MLP classifier trained by gpubp (see the module's docstring for every parameter).

    loss "auto" is "cross_entropy" (the per-unit sigmoid cross-entropy; scikit-learn's "log_loss" is
    taken as it), or "mse".  y: labels of any type (ints, strings, …: ``classes_``), or a 2-D 0/1
    indicator matrix for multilabel problems.  Two classes train one output unit, K > 2 classes K
    units (one-hot targets).  ``predict_proba``: [1 − a, a] for two classes; for K > 2 the K sigmoid
    outputs divided by their sum (they are one-vs-rest, not a softmax); multilabel: each label's own
    output."""

    _is_classifier = True
    _default_loss = "cross_entropy"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def partial_fit(self, X, y, classes=None):
        """One epoch of SGD on (X, y) from the current weights (a first call builds the network, and
        needs ``classes``, every label that will ever be seen, unless y is a multilabel indicator)."""
        if not hasattr(self, "net_") and classes is None and np.ndim(y) != 2:
            raise InputError("classes must be passed on the first call to partial_fit (every label that any "
                             "call will see, e.g. classes=np.unique(y_all))")
        return self._fit(X, y, incremental=True, classes=classes)

    @staticmethod
    def _y_check():
        return {"multi_output": True}

    def _targets(self, y, dtype, first, classes):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self._label_binarizer = LabelBinarizer().fit(y if classes is None or y.ndim == 2 else classes)
            self.classes_ = self._label_binarizer.classes_
        elif y.ndim == 1:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if unseen.size:
                raise InputError(f"y holds label(s) {unseen[:5].tolist()} not in classes_ {self.classes_.tolist()}; "
                                 f"pass every label to the first partial_fit (classes=...), or fit again")
        return np.ascontiguousarray(self._label_binarizer.transform(y), dtype=dtype)

    def _score_outputs(self, a, y):
        return accuracy_score(y, self._label_binarizer.inverse_transform(a))

    def predict(self, X) -> np.ndarray:
        """The class of each row (``classes_``' type), or a 0/1 indicator matrix for multilabel."""
        a = self._outputs(X)
        return self._label_binarizer.inverse_transform(a)

    def predict_proba(self, X) -> np.ndarray:
        """n × n_classes: [1 − a, a] for two classes; the K sigmoid outputs over their row's sum for K > 2
        (one-vs-rest scores made to sum to 1, not a softmax); each label's own output for multilabel."""
        a = self._outputs(X)
        if len(self.classes_) == 1:
            return np.ones((len(a), 1))
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            return a
        if a.shape[1] == 1:
            return np.hstack([1 - a, a])
        total = a.sum(axis=1, keepdims=True)
        return np.divide(a, total, out=np.full_like(a, 1 / a.shape[1]), where=total > 0)

    def predict_log_proba(self, X) -> np.ndarray:
        """log(predict_proba(X))."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class MLPRegressor(RegressorMixin, _MLPEstimator):
    """A sigmoid MLP regressor trained by gpubp (see the module's docstring for every parameter).

    loss "auto" is "mse" (scikit-learn's "squared_error" is taken as it), or "cross_entropy".  The output
    layer is a sigmoid: each target column is mapped from the first fit's [min, max] onto [0.1, 0.9] and
    predictions are mapped back, so they lie within ``target_range_`` (n_outputs × 2: the values that
    outputs 0 and 1 stand for).  y: (n,) or (n, n_outputs)."""

    _is_classifier = False
    _default_loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def partial_fit(self, X, y):
        """One epoch of SGD on (X, y) from the current weights (a first call builds the network and fixes
        ``target_range_`` from this y)."""
        return self._fit(X, y, incremental=True)

    @staticmethod
    def _y_check():
        return {"multi_output": True, "y_numeric": True}

    def _targets(self, y, dtype, first, classes):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if first:
            lo, hi = Y.min(axis=0), Y.max(axis=0)
            span = hi - lo
            span = np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))       # a constant column: a unit span
            pad = span * MARGIN / (1 - 2 * MARGIN)
            self.target_range_ = np.stack([lo - pad, hi + pad], axis=1)
            self._y_ndim = y.ndim
        low, high = self.target_range_[:, 0], self.target_range_[:, 1]
        if Y.shape[1] != len(low):
            raise InputError(f"y has {Y.shape[1]} target column(s) but the fitted network {len(low)}; fit again "
                             f"without warm_start to change the targets")
        T = (Y - low) / (high - low)
        if T.min() < 0 or T.max() > 1:
            r, c = np.unravel_index(np.argmax((T < 0) | (T > 1)), T.shape)
            raise InputError(f"y[{r}] = {Y[r, c]:g} lies outside target_range_ [{low[c]:g}, {high[c]:g}] that the "
                             f"first fit's targets fixed (the sigmoid output cannot reach it); fit again (not "
                             f"partial_fit or warm_start) on data spanning the whole range")
        return np.ascontiguousarray(T, dtype=dtype)

    def _predictions(self, a):
        y = self.target_range_[:, 0] + a * (self.target_range_[:, 1] - self.target_range_[:, 0])
        return y.ravel() if y.shape[1] == 1 else y

    def _score_outputs(self, a, y):
        return r2_score(y, self._predictions(a))

    def predict(self, X) -> np.ndarray:
        """Predicted targets, (n,) for one output column, else (n, n_outputs), within ``target_range_``."""
        return self._predictions(self._outputs(X))

