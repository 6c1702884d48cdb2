"""Multinomial logistic regression in torch that fits every C of a sweep at once.

Sweeping C with scikit-learn is one fit per C, warm-started at best. Here the sweep's K
candidate heads share every pass over the codes: one product of the codes with a weight
tensor of shape (K, dim, n_classes) scores all K, so reading the codes, the dominant cost
for a store larger than RAM, happens once per pass for the whole sweep (as DINOv2's linear
evaluation trains its grid of heads in one pass).

Each head minimises scikit-learn's ``lbfgs`` objective for its C, the mean cross-entropy
plus ||W||² / (2 C n) with the intercept unpenalised, so its optimum is scikit-learn's.
Two solvers:

* ``fit_path``: full-batch L-BFGS on codes in memory, one C after another, each warm-
  started from the last (reading is free there; one joint solve converged worse).
* ``fit_path_streaming``: minibatch Adam over chunks from :meth:`FeatureStore.iter_chunks`
  (via :func:`classifiers.data.iter_split`), holding one chunk at a time, for stores
  larger than RAM. It approaches the same optimum with a decaying step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from features.compute.encoder import resolve_device

__all__ = [
    "Passes",
    "RegPath",
    "TorchLogisticProbe",
    "fit_one",
    "fit_path",
    "fit_path_streaming",
    "in_memory",
    "score_path",
]

Chunks = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass
class RegPath:
    """K heads, one per C: weights of shape (K, dim, n_classes), intercepts (K, n_classes)."""

    Cs: list[float]
    weights: torch.Tensor
    intercepts: torch.Tensor
    iterations: list[int]  # per C: L-BFGS iterations, or passes over the data (streaming)

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Array of shape (K, n_images, n_classes)."""
        return torch.einsum("nd,kdc->knc", X, self.weights) + self.intercepts[:, None, :]

    def to(self, device: str | torch.device) -> RegPath:
        return RegPath(
            self.Cs, self.weights.to(device), self.intercepts.to(device), self.iterations
        )

    def head(self, index: int) -> RegPath:
        """One C's head alone, as a path of one."""
        weights, intercepts = self.weights[index : index + 1], self.intercepts[index : index + 1]
        return RegPath([self.Cs[index]], weights, intercepts, [self.iterations[index]])


Batch = tuple[torch.Tensor, torch.Tensor]  # codes (float32, on the device), class indices
Passes = Callable[[], Iterable[Batch]]  # each call makes one full pass over the data


def _objective(path: RegPath, X: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """Sum over heads of mean cross-entropy on (X, targets) + ||W||² / (2 C n)."""
    return _cross_entropy_sum(path, X, targets) / len(targets) + _penalty(path, n)


def _cross_entropy_sum(path: RegPath, X: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = path.logits(X)
    k, rows, classes = logits.shape
    return torch.nn.functional.cross_entropy(
        logits.reshape(k * rows, classes), targets.repeat(k), reduction="sum"
    )


def _penalty(path: RegPath, n: int) -> torch.Tensor:
    Cs = torch.tensor(path.Cs, device=path.weights.device)
    per_head = (path.weights**2).sum(dim=(1, 2)) / (2 * Cs * n)
    return per_head.to(path.weights.dtype).sum()


def _empty_path(Cs: list[float], dim: int, n_classes: int, device: torch.device) -> RegPath:
    weights = torch.zeros(len(Cs), dim, n_classes, device=device, requires_grad=True)
    intercepts = torch.zeros(len(Cs), n_classes, device=device, requires_grad=True)
    return RegPath(list(Cs), weights, intercepts, [0] * len(Cs))


def _lbfgs(passes: Passes, n: int, path: RegPath, max_iter: int, tol: float) -> int:
    """Minimise ``path``'s full-batch objective in place; the iterations L-BFGS took.

    Each evaluation sums the gradient over one pass of batches, so the data may be one
    tensor in memory or chunks streamed from the store: the optimum and the iterates are
    the same, only the memory differs.
    """
    optimizer = torch.optim.LBFGS(
        [path.weights, path.intercepts],
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-2,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = _penalty(path, n)
        total.backward()
        total = total.detach()
        for X, labels in passes():
            loss = _cross_entropy_sum(path, X, labels) / n
            loss.backward()
            total = total + loss.detach()
        return total

    optimizer.step(closure)
    return int(optimizer.state[path.weights].get("n_iter", 0))


def fit_one(
    passes: Passes,
    n: int,
    dim: int,
    n_classes: int,
    C: float,
    init: RegPath | None = None,
    max_iter: int = 500,
    tol: float = 1e-7,
    device: str | torch.device = "cpu",
) -> RegPath:
    """One C by full-batch L-BFGS over ``passes`` (``n`` rows in all), started from the
    last head of ``init`` when given: the warm start that makes a path cost a few fits."""
    where = resolve_device(device) if isinstance(device, str) else device
    head = _empty_path([C], dim, n_classes, where)
    if init is not None:
        with torch.no_grad():
            head.weights.copy_(init.weights[-1:])
            head.intercepts.copy_(init.intercepts[-1:])
    head.iterations = [_lbfgs(passes, n, head, max_iter, tol)]
    return _detached(head)


def in_memory(X: np.ndarray, targets: np.ndarray, device: str = "cpu") -> tuple[Passes, int]:
    """Codes already in memory as one batch on the device, and their row count."""
    where = resolve_device(device)
    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(where)
    labels = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(where)
    return (lambda: [(data, labels)]), len(labels)


def fit_path(
    X: np.ndarray,
    targets: np.ndarray,
    n_classes: int,
    Cs: list[float],
    max_iter: int = 500,
    tol: float = 1e-7,
    device: str = "cpu",
    init: RegPath | None = None,
) -> RegPath:
    """Every C by full-batch L-BFGS on ``X`` (array of shape (n_images, dim)) and class
    indices ``targets``, in the order given, each started from the previous C's solution
    (the first from ``init``'s, if given): with the codes in memory, one solve per C beats
    one joint solve, whose shared line search crawls at the large Cs (measured: 218
    iterations and 0.005 off scikit-learn's log-loss, against 11 to 35 for each alone)."""
    passes, n = in_memory(X, targets, device)
    heads = []
    previous = init
    for C in Cs:
        previous = fit_one(
            passes, n, X.shape[1], n_classes, C, previous, max_iter, tol, resolve_device(device)
        )
        heads.append(previous)
    return RegPath(
        list(Cs),
        torch.cat([head.weights for head in heads]),
        torch.cat([head.intercepts for head in heads]),
        [head.iterations[0] for head in heads],
    )


def fit_path_streaming(
    chunks: Chunks,
    n_rows: int,
    dim: int,
    n_classes: int,
    Cs: list[float],
    epochs: int = 20,
    lr: float = 1e-2,
    device: str = "cpu",
    seed: int = 0,
) -> RegPath:
    """Every C at once by minibatch Adam over ``chunks(epoch)`` (``(X, class indices)``
    pairs, shuffled per epoch), one chunk in memory; the step decays to zero by the last
    epoch, so the heads settle at their optimum rather than around it."""
    where = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        path = _empty_path(Cs, dim, n_classes, where)
        optimizer = torch.optim.Adam([path.weights, path.intercepts], lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1 - e / epochs)
        for epoch in range(epochs):
            for X, targets in chunks(epoch):
                data = torch.from_numpy(np.asarray(X, dtype=np.float32)).to(where)
                labels = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(where)
                optimizer.zero_grad()
                _objective(path, data, labels, n_rows).backward()
                optimizer.step()
            schedule.step()
    path.iterations = [epochs] * len(Cs)
    return _detached(path)


def score_path(path: RegPath, batches: Iterable[Batch]) -> tuple[list[float], list[float], int]:
    """Accuracy and mean log-loss of every head of ``path``, summed batch by batch, and
    the number of rows scored."""
    correct = torch.zeros(len(path.Cs))
    loss = torch.zeros(len(path.Cs))
    seen = 0
    with torch.no_grad():
        for X, labels in batches:
            logits = path.logits(X)
            correct += (logits.argmax(dim=2) == labels).sum(dim=1).cpu()
            per_head = [
                torch.nn.functional.cross_entropy(k, labels, reduction="sum") for k in logits
            ]
            loss += torch.stack(per_head).cpu()
            seen += len(labels)
    return (correct / seen).tolist(), (loss / seen).tolist(), seen


def _detached(path: RegPath) -> RegPath:
    return RegPath(path.Cs, path.weights.detach(), path.intercepts.detach(), path.iterations)


class TorchLogisticProbe(ClassifierMixin, BaseEstimator):
    """scikit-learn's multinomial ``LogisticRegression`` objective for one C, solved in
    torch (CPU, or CUDA when ``device`` resolves to it), so the sweep's heads and the final
    refit are the same model; persistence, ``predict`` and ``compare`` see an estimator.
    """

    def __init__(
        self, *, C: float = 1.0, max_iter: int = 500, tol: float = 1e-7, device: str = "cpu"
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray, init: RegPath | None = None) -> TorchLogisticProbe:
        classes = np.unique(y)
        targets = np.searchsorted(classes, y)
        path = fit_path(
            X, targets, len(classes), [self.C], self.max_iter, self.tol, self.device, init
        )
        return self.adopt(path, classes)

    def adopt(self, path: RegPath, classes: np.ndarray) -> TorchLogisticProbe:
        """Take a one-C path's head as the fitted model (the streaming fit's result)."""
        self.classes_ = np.asarray(classes)
        self.coef_ = path.weights[0].T.cpu().numpy()  # (n_classes, dim), as scikit-learn
        self.intercept_ = path.intercepts[0].cpu().numpy()
        self.n_iter_ = np.array(path.iterations)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float32) @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
