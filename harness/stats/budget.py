"""Estimates from a partly scored phrasing x document matrix (budgeted evaluation).

Two estimators of each phrasing's score and of the spread across phrasings:

- ``model`` (the default): the logistic phrasing + document model of PromptEval (Polo et al.
  2024), ``P(correct) = sigmoid(a + theta_p + beta_d [+ covariates])``, fitted by penalised
  maximum likelihood (L2 on the phrasing and document effects, their strengths set by empirical
  Bayes; scipy's trust-region Newton-CG on the exact loss,
  gradient and Hessian-vector product).
  Fractional scores (partial credit) enter as fractional targets of the same loss, which is
  the likelihood of weighted binary outcomes. A phrasing's estimate is its mean over the
  target cells of the observed score where scored and the predicted probability elsewhere.
- ``sampled-mean``: the plain mean of each phrasing's scored cells (the comparison).

The statistics across phrasings (:data:`ACROSS_STATISTICS`) are taken of the phrasings'
estimates. Their **estimand** is what a full run on the same phrasings and documents would
report. For the model, the phrasing estimates are first widened around their mean so that
their variance is their own plus their error variance (Louis 1984's constrained Bayes:
shrunken estimates are under-dispersed, which would pull every outer quantile inwards).
The model's intervals come from a parametric bootstrap of the estimator's error: worlds are
drawn from the fit's approximate posterior, a complete matrix from each world, scored on the
same cells and re-estimated, and the error ``estimate - full-matrix value`` of each
replicate is collected; the interval is ``estimate - (error quantiles)``. That carries the
refit's parameter uncertainty, the Bernoulli noise of unscored cells and the remaining
shrinkage bias. Fractional scores are simulated as Bernoulli outcomes (conservative). The
sampled mean's intervals are the percentile bootstrap over documents.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import optimize, sparse
from scipy.special import expit

from harness.stats.data import PhrasingResults

#: Statistics across phrasings, in report order (std with ddof=1, percentiles linear).
ACROSS_STATISTICS = ("mean", "std", "min", "max", "p05", "p25", "p50", "p75", "p95")
_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
MODEL = "model"
SAMPLED_MEAN = "sampled-mean"
ESTIMATORS = (MODEL, SAMPLED_MEAN)
#: Default bootstrap replicates of a budgeted estimate.
DEFAULT_BUDGET_BOOT = 200
#: Empirical-Bayes rounds that set the phrasing and document penalties (1 / prior variance).
_EB_ROUNDS = 8
#: Bounds on those penalties: prior sd between 0.01 and about 30 logits.
_MIN_PENALTY, _MAX_PENALTY = 1e-3, 1e4
#: L2 strength on standardised covariate coefficients.
COVARIATE_PENALTY = 1.0


class Interval(NamedTuple):
    """A point estimate with its CI."""

    value: float
    low: float
    high: float


@dataclass(frozen=True, eq=False)
class PartialMatrix:
    """A task's grid with the scored cells filled in.

    Attributes:
        phrasings: row ids.
        documents: column ids.
        values: scores in [0, 1], NaN where not scored.
        target: the cells a full run has (all True for a budgeted run; a ragged full run
            lacks some); each phrasing's score is its mean over its target cells.
        scale: the metric's maximum (1, or 100); estimates are reported on this scale.
    """

    phrasings: tuple[str, ...]
    documents: tuple[str, ...]
    values: np.ndarray
    target: np.ndarray
    scale: float = 1.0

    @property
    def observed(self) -> np.ndarray:
        """Mask of the scored cells."""
        return ~np.isnan(self.values)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.phrasings), len(self.documents))

    @classmethod
    def from_cells(
        cls,
        phrasings: Sequence[str],
        documents: Sequence[str],
        scores: Mapping[tuple[str, str], float],
        scale: float = 1.0,
    ) -> PartialMatrix:
        """The full grid of ``phrasings`` x ``documents`` with ``scores`` (on ``scale``) filled in.

        Raises:
            ValueError: a scored cell outside the grid, or a score outside [0, scale].
        """
        p_index = {p: i for i, p in enumerate(phrasings)}
        d_index = {d: j for j, d in enumerate(documents)}
        values = np.full((len(phrasings), len(documents)), math.nan)
        for (p, d), score in scores.items():
            if p not in p_index or d not in d_index:
                raise ValueError(f"scored cell ({p}, {d}) is not in the task's grid; pass its phrasing and document ids")
            if score is None or math.isnan(float(score)):
                continue
            if not 0.0 <= float(score) <= scale:
                raise ValueError(f"score {score} of ({p}, {d}) is outside [0, {scale:g}]; pass the metric's scale")
            values[p_index[p], d_index[d]] = float(score) / scale
        return cls(tuple(phrasings), tuple(documents), values, np.ones(values.shape, dtype=bool), scale)

    def subsample(self, cells: Sequence[tuple[str, str]]) -> PartialMatrix:
        """The same grid and target, scored only on ``cells`` (with this matrix's values)."""
        p_index = {p: i for i, p in enumerate(self.phrasings)}
        d_index = {d: j for j, d in enumerate(self.documents)}
        rows = np.array([p_index[p] for p, _ in cells], dtype=int)
        cols = np.array([d_index[d] for _, d in cells], dtype=int)
        values = np.full(self.values.shape, math.nan)
        values[rows, cols] = self.values[rows, cols]
        return PartialMatrix(self.phrasings, self.documents, values, self.target, self.scale)

    def full_scores(self) -> np.ndarray:
        """Each phrasing's mean over its scored cells (the full run's score, on [0, 1])."""
        return _row_means(self.values, self.observed)


def matrix_from_phrasings(phrasings: Sequence[PhrasingResults], scale: float | None = None) -> PartialMatrix:
    """A task's per-document results as a :class:`PartialMatrix` over the union of documents.

    Cells a phrasing did not score (or scored NaN) are unobserved and outside the target, so
    a ragged full run keeps each phrasing's score as its own documents give it.

    Args:
        phrasings: one task's per-document phrasings (aggregate-only ones are left out).
        scale: the metric's maximum; None: declared by the phrasings, else 100 when a score
            exceeds 1, else 1.
    """
    rows = [p for p in phrasings if p.per_document]
    documents: dict[str, None] = {}
    for p in rows:
        for d, ok in zip(p.doc_ids, p.valid, strict=True):
            if ok:
                documents.setdefault(d)
    doc_index = {d: j for j, d in enumerate(documents)}
    values = np.full((len(rows), len(documents)), math.nan)
    for i, p in enumerate(rows):
        for d, s, ok in zip(p.doc_ids, p.scores, p.valid, strict=True):
            if ok:
                values[i, doc_index[d]] = float(s)
    if scale is None:
        declared = {p.score_scale for p in rows} - {None}
        if len(declared) == 1:
            scale = float(declared.pop())  # type: ignore[arg-type]
        else:
            scale = 100.0 if np.nanmax(values, initial=0.0) > 1.0 else 1.0
    return PartialMatrix(tuple(p.instruction_id for p in rows), tuple(documents), values / scale, ~np.isnan(values), float(scale))


def across_statistics(scores: np.ndarray) -> np.ndarray:
    """:data:`ACROSS_STATISTICS` of phrasing scores along the last axis (shape ``(..., P)`` -> ``(..., 9)``)."""
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[-1]
    std = scores.std(axis=-1, ddof=1) if n >= 2 else np.full(scores.shape[:-1], math.nan)
    pct = np.moveaxis(np.percentile(scores, _PERCENTILES, axis=-1), 0, -1)
    return np.concatenate(
        [scores.mean(axis=-1)[..., None], std[..., None], scores.min(axis=-1)[..., None], scores.max(axis=-1)[..., None], pct], axis=-1
    )


# --- the logistic phrasing + document model -------------------------------------------------


class _Design(NamedTuple):
    """Sparse features of the scored cells and which penalty each column gets."""

    features: sparse.csr_matrix  # cells x columns: intercept, phrasing, document, covariates
    rows: np.ndarray
    cols: np.ndarray
    groups: np.ndarray  # per column: 0 intercept, 1 phrasing, 2 document, 3 covariate


def _standardise(z: np.ndarray | None, n: int) -> np.ndarray:
    if z is None:
        return np.zeros((n, 0))
    z = np.asarray(z, dtype=float).reshape(n, -1)
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _design(rows: np.ndarray, cols: np.ndarray, n_p: int, n_d: int, zp: np.ndarray, zd: np.ndarray) -> _Design:
    n = rows.size
    ones = np.ones(n)
    eye = sparse.hstack(
        [
            sparse.csr_matrix(ones[:, None]),
            sparse.csr_matrix((ones, (np.arange(n), rows)), shape=(n, n_p)),
            sparse.csr_matrix((ones, (np.arange(n), cols)), shape=(n, n_d)),
            sparse.csr_matrix(np.hstack([zp[rows], zd[cols]])) if zp.shape[1] + zd.shape[1] else sparse.csr_matrix((n, 0)),
        ],
        format="csr",
    )
    groups = np.concatenate([[0], np.full(n_p, 1), np.full(n_d, 2), np.full(zp.shape[1] + zd.shape[1], 3)])
    return _Design(eye, rows, cols, groups)


def _fit_batch(
    design: _Design, targets: np.ndarray, weights: np.ndarray, penalties: np.ndarray, start: np.ndarray | None = None
) -> np.ndarray:
    """Fit several penalised logistic models on the same cells at once.

    The batch's losses are independent, so their sum is minimised in one call (scipy's trust-ncg).

    Args:
        design: the cells' features (n cells x K columns).
        targets: (n, B) targets in [0, 1].
        weights: (n, B) cell weights (0 leaves a cell out).
        penalties: (K, B) L2 strength per column and batch member.
        start: (K, B) starting coefficients (warm start), default zeros.

    Returns:
        (K, B) coefficients.
    """
    x_mat = design.features
    x_t = x_mat.T.tocsr()
    k, b = penalties.shape

    def loss_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        coef = flat.reshape(k, b)
        eta = x_mat @ coef
        loss = float(np.sum(weights * (np.logaddexp(0.0, eta) - targets * eta)) + 0.5 * np.sum(penalties * coef**2))
        grad = x_t @ (weights * (expit(eta) - targets)) + penalties * coef
        return loss, np.asarray(grad).ravel()

    def hess_times(flat: np.ndarray, vector: np.ndarray) -> np.ndarray:
        coef, v = flat.reshape(k, b), vector.reshape(k, b)
        p = expit(x_mat @ coef)
        return np.asarray(x_t @ (weights * p * (1.0 - p) * (x_mat @ v)) + penalties * v).ravel()

    x0 = np.zeros(k * b) if start is None else np.asarray(start, dtype=float).ravel()
    # Newton steps with conjugate-gradient solves: the loss is smooth and convex, and the
    # batch's Hessian is block-diagonal, so a few Newton steps fit every member at once.
    result = optimize.minimize(loss_grad, x0, jac=True, hessp=hess_times, method="trust-ncg", options={"gtol": 1e-6, "maxiter": 200})
    return np.asarray(result.x).reshape(k, b)


def _penalty_matrix(groups: np.ndarray, pairs: Sequence[tuple[float, float]]) -> np.ndarray:
    table = np.array([[0.0, lp, ld, COVARIATE_PENALTY] for lp, ld in pairs]).T  # (4, B)
    return table[groups]


def _predict(coef: np.ndarray, n_p: int, n_d: int, zp: np.ndarray, zd: np.ndarray) -> np.ndarray:
    """Logits of every cell for each batch member: (B, P, D)."""
    a = coef[0]
    theta = coef[1 : 1 + n_p] + (zp @ coef[1 + n_p + n_d : 1 + n_p + n_d + zp.shape[1]] if zp.shape[1] else 0.0)
    beta = coef[1 + n_p : 1 + n_p + n_d] + (zd @ coef[1 + n_p + n_d + zp.shape[1] :] if zd.shape[1] else 0.0)
    return a[:, None, None] + theta.T[:, :, None] + beta.T[:, None, :]


@dataclass(frozen=True, eq=False)
class CellModel:
    """A fitted phrasing + document model.

    Attributes:
        probabilities: predicted score of every cell (P x D).
        phrasing_penalty: the L2 strength chosen for the phrasing effects.
        document_penalty: the L2 strength chosen for the document effects.
    """

    probabilities: np.ndarray
    phrasing_penalty: float
    document_penalty: float
    coefficients: np.ndarray = field(repr=False)


def _posterior_variances(design: _Design, coef: np.ndarray, penalties: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Laplace approximation of each coefficient's posterior variance: (K, B).

    The Hessian's diagonal, less for each phrasing (document) effect what the documents
    (phrasings) it shares cells with absorb: one step of block elimination, so an effect
    seen only beside poorly known effects is not taken as better known than it is.
    """
    eta = design.features @ coef
    curvature = weights * expit(eta) * (1.0 - expit(eta))  # (cells, B)
    precision = np.asarray(design.features.power(2).T @ curvature) + penalties
    groups = design.groups
    phr, doc = np.flatnonzero(groups == 1), np.flatnonzero(groups == 2)
    if phr.size and doc.size:
        p_col, d_col = phr[design.rows], doc[design.cols]
        shared_p = np.zeros_like(precision)
        shared_d = np.zeros_like(precision)
        np.add.at(shared_p, p_col, curvature**2 / precision[d_col])
        np.add.at(shared_d, d_col, curvature**2 / precision[p_col])
        precision = precision - shared_p - shared_d
    return 1.0 / np.maximum(precision, 1e-12)


def _fit_empirical_bayes(
    design: _Design, targets: np.ndarray, weights: np.ndarray, start: tuple[float, float] = (4.0, 0.5), rounds: int = _EB_ROUNDS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit with the phrasing and document penalties set by empirical Bayes.

    The effects are treated as Gaussian random effects: each round refits (warm-started) and
    sets each prior variance to the mean of ``effect**2 + posterior variance`` (the EM update
    under the Laplace approximation, as in MacKay's evidence framework).

    Returns:
        (coefficients (K, B), penalties (K, B), posterior variances (K, B)).
    """
    n_members = targets.shape[1]
    phr, doc = design.groups == 1, design.groups == 2
    lam = np.tile(np.array([[start[0]], [start[1]]]), (1, n_members))  # (2, B)
    coef: np.ndarray | None = None
    for _ in range(rounds):
        penalties = _penalty_matrix(design.groups, [tuple(pair) for pair in lam.T])
        coef = _fit_batch(design, targets, weights, penalties, coef)
        var = _posterior_variances(design, coef, penalties, weights)
        for row, mask in ((0, phr), (1, doc)):
            if mask.any():
                second = np.mean(coef[mask] ** 2 + var[mask], axis=0)
                lam[row] = np.clip(1.0 / np.maximum(second, 1e-9), _MIN_PENALTY, _MAX_PENALTY)
    penalties = _penalty_matrix(design.groups, [tuple(pair) for pair in lam.T])
    coef = _fit_batch(design, targets, weights, penalties, coef)
    return coef, penalties, _posterior_variances(design, coef, penalties, weights)


class _Fit(NamedTuple):
    design: _Design
    coef: np.ndarray  # (K, 1)
    penalties: np.ndarray  # (K, 1)
    variances: np.ndarray  # (K, 1)
    zp: np.ndarray
    zd: np.ndarray


def _fit_point(matrix: PartialMatrix, zp_raw: np.ndarray | None, zd_raw: np.ndarray | None) -> _Fit:
    n_p, n_d = matrix.shape
    rows, cols = np.nonzero(matrix.observed)
    if rows.size == 0:
        raise ValueError("no scored cell to fit; score at least one cell per phrasing and document")
    zp, zd = _standardise(zp_raw, n_p), _standardise(zd_raw, n_d)
    design = _design(rows, cols, n_p, n_d, zp, zd)
    y = matrix.values[rows, cols]
    coef, penalties, variances = _fit_empirical_bayes(design, y[:, None], np.ones((y.size, 1)))
    return _Fit(design, coef, penalties, variances, zp, zd)


def fit_cell_model(
    matrix: PartialMatrix,
    seed: int = 0,
    phrasing_covariates: np.ndarray | None = None,
    document_covariates: np.ndarray | None = None,
) -> CellModel:
    """Fit the phrasing + document logistic model to a matrix's scored cells.

    Args:
        matrix: the partly scored grid.
        seed: unused by the fit itself (deterministic); kept so callers can key draws on it.
        phrasing_covariates: optional (P, k) features of the phrasings (answer format, length,
            placement, ...), standardised here; phrasing effects shrink towards their fit.
        document_covariates: optional (D, m) features of the documents.

    Raises:
        ValueError: a matrix without a scored cell.
    """
    n_p, n_d = matrix.shape
    fit = _fit_point(matrix, phrasing_covariates, document_covariates)
    prob = expit(_predict(fit.coef, n_p, n_d, fit.zp, fit.zd))[0]
    groups = fit.design.groups
    return CellModel(prob, float(fit.penalties[groups == 1, 0][0]), float(fit.penalties[groups == 2, 0][0]), fit.coef)


# --- estimates with intervals ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BudgetEstimate:
    """Estimated phrasing scores and across-phrasing statistics, with CIs, on the metric's scale.

    Attributes:
        estimator: ``model`` or ``sampled-mean``.
        phrasings: phrasing ids, parallel to ``phrasing_scores``.
        phrasing_scores: each phrasing's estimated score with CI.
        across: :data:`ACROSS_STATISTICS` name -> estimate with CI.
        scored_cells: cells with a score.
        target_cells: cells a full run has.
        level: the CIs' confidence level.
        n_boot: bootstrap replicates behind the CIs.
        details: how the estimate was made (penalties chosen, CI method).
    """

    estimator: str
    phrasings: tuple[str, ...]
    phrasing_scores: tuple[Interval, ...]
    across: dict[str, Interval]
    scored_cells: int
    target_cells: int
    level: float
    n_boot: int
    details: dict[str, str] = field(default_factory=dict)

    @property
    def budget(self) -> float:
        """Share of the target cells that were scored."""
        return self.scored_cells / self.target_cells if self.target_cells else math.nan


def _row_means(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(axis=-1)
    sums = np.where(mask, np.nan_to_num(values), 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), math.nan)


def _imputed_scores(observed_values: np.ndarray, observed: np.ndarray, prob: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per phrasing: mean over target cells of the score where observed, else the prediction."""
    filled = np.where(observed, np.nan_to_num(observed_values), prob)
    return _row_means(filled, target | observed)


def _intervals_from_errors(point: np.ndarray, errors: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    lo_err, hi_err = np.nanpercentile(errors, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return point - hi_err, point - lo_err


def _spread_factor(scores: np.ndarray, error_variance: float) -> float:
    """How much to widen estimates so their variance is theirs plus their error variance."""
    var = float(np.var(scores))
    if not var > 0 or not math.isfinite(error_variance):
        return 1.0
    return math.sqrt(1.0 + error_variance / var)


def _widen(scores: np.ndarray, factor: float) -> np.ndarray:
    """Scores moved away from their mean (along the last axis) by ``factor``, kept in [0, 1]."""
    centre = scores.mean(axis=-1, keepdims=True)
    return np.clip(centre + factor * (scores - centre), 0.0, 1.0)


def _model_estimate(
    matrix: PartialMatrix, n_boot: int, seed: int, level: float, zp_raw: np.ndarray | None, zd_raw: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    n_p, n_d = matrix.shape
    observed = matrix.observed
    fit = _fit_point(matrix, zp_raw, zd_raw)
    design, rows, cols = fit.design, fit.design.rows, fit.design.cols
    prob = expit(_predict(fit.coef, n_p, n_d, fit.zp, fit.zd))[0]
    target = matrix.target | observed
    point_scores = _imputed_scores(matrix.values, observed, prob, matrix.target)
    # Bootstrap of the error: worlds drawn from the fit's approximate posterior (so their
    # phrasing spread is as wide as the fit believes, shrinkage included), complete matrices
    # drawn from each world, scored on the same cells, and re-estimated.
    rng = np.random.default_rng([seed, n_p, n_d, rows.size])
    random_effect = (design.groups == 1) | (design.groups == 2)
    est_reps = np.empty((n_boot, n_p))
    truth_reps = np.empty((n_boot, n_p))
    chunk = max(1, min(n_boot, 4_000_000 // max(n_p * n_d, 1)))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        worlds = fit.coef + np.where(random_effect[:, None], np.sqrt(fit.variances), 0.0) * rng.standard_normal((fit.coef.shape[0], size))
        sims = (rng.random((size, n_p, n_d)) < expit(_predict(worlds, n_p, n_d, fit.zp, fit.zd))).astype(float)
        y_sim = sims[:, rows, cols].T  # (cells, size)
        penalties = np.repeat(fit.penalties, size, axis=1)
        coef_sim = _fit_batch(design, y_sim, np.ones_like(y_sim), penalties, np.repeat(fit.coef, size, axis=1))
        prob_sim = expit(_predict(coef_sim, n_p, n_d, fit.zp, fit.zd))
        truth_reps[start : start + size] = _row_means(sims, np.broadcast_to(target, sims.shape))
        est_reps[start : start + size] = _imputed_scores(
            sims, np.broadcast_to(observed, sims.shape), prob_sim, np.broadcast_to(matrix.target, sims.shape)
        )
    # Shrunken estimates are under-dispersed: their spread is the true spread less their error
    # variance. Widening them around their mean to restore it (Louis 1984's constrained Bayes)
    # before taking the across-phrasing statistics removes most of the quantiles' shrinkage bias.
    spread = _spread_factor(point_scores, np.nanmean(np.nanvar(est_reps - truth_reps, axis=0)))
    point = np.concatenate([point_scores, across_statistics(_widen(point_scores, spread))])
    errors = np.concatenate([est_reps, across_statistics(_widen(est_reps, spread))], axis=1) - np.concatenate(
        [truth_reps, across_statistics(truth_reps)], axis=1
    )
    low, high = _intervals_from_errors(point, errors, level)
    groups = design.groups
    lp, ld = float(fit.penalties[groups == 1, 0][0]), float(fit.penalties[groups == 2, 0][0])
    details = {
        "model": "logistic phrasing + document effects" + (" + covariates" if fit.zp.shape[1] + fit.zd.shape[1] else ""),
        "penalties": f"prior sd {lp**-0.5:.3g} on phrasing effects, {ld**-0.5:.3g} on document effects (empirical Bayes)",
        "ci": "bootstrap of the estimator's error against full matrices drawn from the fit",
    }
    return point, low, high, details


def _sampled_mean_estimate(
    matrix: PartialMatrix, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    observed = matrix.observed
    scores = _row_means(matrix.values, observed)
    point = np.concatenate([scores, across_statistics(scores)])
    rng = np.random.default_rng([seed, *matrix.shape, int(observed.sum())])
    n_d = matrix.shape[1]
    filled = np.where(observed, np.nan_to_num(matrix.values), 0.0)
    mask = observed.astype(float)
    reps = np.empty((n_boot, point.size))
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n_d, n_d), minlength=n_d).astype(float)
        num, den = filled @ counts, mask @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            rep = np.where(den > 0, num / np.maximum(den, 1e-300), math.nan)
        # A phrasing whose scored documents all fell out keeps its point estimate.
        rep = np.where(np.isnan(rep), scores, rep)
        reps[b] = np.concatenate([rep, across_statistics(rep)])
    alpha = (1.0 - level) / 2.0
    low, high = np.nanpercentile(reps, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return point, low, high, {"ci": "percentile bootstrap over documents"}


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    # The fits multiply small matrices many times; BLAS threads only contend for the cores
    # (several times slower on a busy machine). threadpoolctl comes with scikit-learn.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def estimate_budget(
    matrix: PartialMatrix,
    estimator: str = MODEL,
    n_boot: int = DEFAULT_BUDGET_BOOT,
    seed: int = 0,
    level: float = 0.95,
    phrasing_covariates: np.ndarray | None = None,
    document_covariates: np.ndarray | None = None,
) -> BudgetEstimate:
    """Estimate each phrasing's score and the across-phrasing statistics from scored cells.

    Args:
        matrix: the partly scored grid; every phrasing needs a scored cell.
        estimator: ``model`` (logistic phrasing + document model) or ``sampled-mean``.
        n_boot: bootstrap replicates for the CIs.
        seed: seeds the folds and the bootstrap.
        level: the CIs' confidence level.
        phrasing_covariates: optional (P, k) phrasing features (``model`` only).
        document_covariates: optional (D, m) document features (``model`` only).

    Raises:
        ValueError: an unknown estimator, or a phrasing without a scored cell.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    observed = matrix.observed
    bare = [p for i, p in enumerate(matrix.phrasings) if not observed[i].any()]
    if bare:
        raise ValueError(f"phrasing(s) without a scored cell: {', '.join(bare[:5])}; allocate at least one cell per phrasing")
    with _single_threaded_blas():
        if estimator == MODEL:
            point, low, high, details = _model_estimate(matrix, n_boot, seed, level, phrasing_covariates, document_covariates)
        else:
            point, low, high, details = _sampled_mean_estimate(matrix, n_boot, seed, level)
    s = matrix.scale
    n_p = matrix.shape[0]
    triples = [Interval(float(v) * s, float(lo) * s, float(hi) * s) for v, lo, hi in zip(point, low, high, strict=True)]
    return BudgetEstimate(
        estimator=estimator,
        phrasings=matrix.phrasings,
        phrasing_scores=tuple(triples[:n_p]),
        across=dict(zip(ACROSS_STATISTICS, triples[n_p:], strict=True)),
        scored_cells=int(observed.sum()),
        target_cells=int((matrix.target | observed).sum()),
        level=level,
        n_boot=n_boot,
        details=details,
    )
