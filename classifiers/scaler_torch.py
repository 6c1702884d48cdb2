"""The pipeline's standard scaler, fitted and applied in torch, where the codes are.

scikit-learn's ``partial_fit`` costs ~36 us a row (float64 copies and NaN checks of every
slice): 110 s of a 197 s protocol at 1.28M rows on an H200's 16-core host
(``bench/probe_gpu.py``). Here each chunk's mean and variance are one torch reduction on
the device that holds it, merged in float64 by Chan, Golub and LeVeque's pairwise update,
and the result is a fitted ``StandardScaler``, so persistence and ``predict`` see
scikit-learn's estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

__all__ = ["fit_standard_scaler", "torch_transform"]


def fit_standard_scaler(chunks: Iterable[torch.Tensor]) -> StandardScaler:
    """A centring, unit-variance ``StandardScaler`` fitted on the rows of ``chunks``
    (float tensors of equal width, on any one device)."""
    count = 0
    mean = m2 = torch.zeros(0)
    for chunk in chunks:
        var_b, mean_b = torch.var_mean(chunk, dim=0, correction=0)
        rows = len(chunk)
        if count == 0:
            mean, m2 = mean_b.double(), var_b.double() * rows
        else:
            delta = mean_b.double() - mean
            mean = mean + delta * (rows / (count + rows))
            m2 = m2 + var_b.double() * rows + delta**2 * (count * rows / (count + rows))
        count += rows
    if count == 0:
        raise ValueError("no rows to fit a scaler on")
    scaler = StandardScaler()
    scaler.mean_ = mean.cpu().numpy()
    scaler.var_ = (m2 / count).cpu().numpy()
    # scikit-learn's test for a constant feature (_is_constant_feature): rounding, not data
    eps = np.finfo(np.float64).eps
    constant = scaler.var_ <= count * eps * scaler.var_ + (count * scaler.mean_ * eps) ** 2
    scaler.scale_ = np.where(constant, 1.0, np.sqrt(scaler.var_))
    scaler.n_samples_seen_ = count
    scaler.n_features_in_ = len(scaler.mean_)
    return scaler


def torch_transform(scaler: object, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fitted scaler applied in place, in torch, to float32 codes on ``device``:
    scikit-learn's checked copy costs more than the fit's arithmetic. A scaler without
    ``mean_``/``scale_`` runs as scikit-learn's."""
    if isinstance(scaler, StandardScaler):
        mean = torch.from_numpy(np.asarray(scaler.mean_, dtype=np.float32)).to(device)
        inverse = torch.from_numpy(1 / np.asarray(scaler.scale_, dtype=np.float32)).to(device)
        return lambda codes: codes.sub_(mean).mul_(inverse)
    return lambda codes: codes.copy_(torch.from_numpy(scaler.transform(codes.cpu().numpy())))
