"""Estimates from a partly scored phrasing x document matrix (budgeted evaluation).

Three estimators of each phrasing's score and of the spread across phrasings:

- ``model`` (the default): the logistic phrasing + document model of PromptEval (Polo et al.
  2024), ``P(correct) = sigmoid(a + theta_p + beta_d [+ covariates])``, with the phrasing and
  document effects normal random effects. Fractional scores (partial credit) enter as
  fractional targets, the likelihood of weighted binary outcomes.
- ``model-strata``: the same model plus, for each stratum of documents that share their right
  option's position, a stratum intercept and each phrasing's effect in that stratum (its
  preference for that answer), ``sigmoid(a + theta_p + beta_d + s_k + gamma_pk)`` for a
  document of stratum ``k``. The stratum terms are coded centred on the strata's shares of
  the documents, so ``theta_p`` stays a phrasing's average level (shrunk as in ``model``)
  and ``gamma_pk`` only moves its score between strata, with a normal prior of its own scale.
  A phrasing that always gives one answer is then pinned down by the documents' known
  answers.
- ``sampled-mean``: the plain mean of each phrasing's scored cells (the comparison).

The statistics across phrasings (:data:`ACROSS_STATISTICS`) have as **estimand** what a full
run on the same phrasings and documents would report. The model estimates them from its
posterior: draws of the full run (scored cells as scored, the others drawn from the model)
give draws of every phrasing's score and of each statistic; the estimate is their median and
the CI their quantiles. Each document's effect is integrated out by Gauss-Hermite quadrature.
The rest (intercept, phrasing effects, covariates) is drawn from a Laplace approximation at
the posterior mode (scipy's trust-region Newton on the exact gradient and Hessian),
reweighted to the exact posterior by importance sampling (:func:`_importance_draws`): where
a phrasing is right on every scored cell of a stratum its posterior is one-sided, and the
normal alone spreads it to both sides. The document effects' scale (and with strata the
phrasing x stratum effects') is set by maximum evidence (hundreds of documents fix it); the
phrasing effects' scale is integrated over a grid under a uniform prior, because a few
dozen phrasings with a few cells each leave it uncertain, and that uncertainty is most of
the uncertainty of the spread across phrasings (std, outer percentiles). Posterior means of shrunken effects would understate the spread;
draws of the full run do not, since each draw spreads the phrasings as widely as the
posterior allows. The sampled mean's intervals are the percentile bootstrap over documents.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import linalg, optimize, sparse, special
from scipy.special import expit

from harness.stats.data import PhrasingResults

#: Statistics across phrasings, in report order (std with ddof=1, percentiles linear).
ACROSS_STATISTICS = ("mean", "std", "min", "max", "p05", "p25", "p50", "p75", "p95")
_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
MODEL = "model"
#: The model with each phrasing's effect per stratum of documents (their right option; needs ``strata``).
MODEL_STRATA = "model-strata"
SAMPLED_MEAN = "sampled-mean"
#: Every estimator (`irh budget-check` runs them all unless told otherwise).
ALL_ESTIMATORS = (MODEL, MODEL_STRATA, SAMPLED_MEAN)
#: Default posterior draws (model) or bootstrap replicates (sampled mean) of a budgeted estimate.
DEFAULT_BUDGET_BOOT = 400


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


def document_strata(labels: Mapping[str, int], documents: Sequence[str]) -> np.ndarray | None:
    """The strata (e.g. each document's right option) of ``documents`` as an array for
    :func:`estimate_budget`, or None when a document has no label or all share one."""
    if not documents or any(d not in labels for d in documents):
        return None
    out = np.array([labels[d] for d in documents])
    return out if np.unique(out).size > 1 else None


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

#: Gauss-Hermite nodes (standard normal) over which each document effect is integrated out.
_NODES, _NODE_WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_LOG_NODE_WEIGHTS = np.log(_NODE_WEIGHTS / _NODE_WEIGHTS.sum())
#: Column groups of the fixed part of the model: which prior scale each coefficient shares.
_INTERCEPT, _PHRASING, _PHRASING_COVARIATE, _DOCUMENT_COVARIATE, _STRATUM, _INTERACTION = range(6)
#: Prior scales (sd in logits) searched for the phrasing and the document effects.
_MIN_SD, _MAX_SD = 0.01, 10.0
#: Points of the grid over the phrasing effects' scale that the estimate integrates over.
_SCALE_GRID = 20


def _standardise(z: np.ndarray | None, n: int) -> np.ndarray:
    if z is None:
        return np.zeros((n, 0))
    z = np.asarray(z, dtype=float).reshape(n, -1)
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


class _Cells:
    """The scored cells and the model's likelihood with every document effect integrated out.

    ``P(y = 1) = sigmoid(x_cell . coef + document_sd * u)``, ``u ~ N(0, 1)`` per document:
    ``coef`` holds the intercept, the phrasing effects, the covariates' coefficients and, with
    strata, the stratum intercepts and each phrasing's effect per stratum (centred), and
    each document's likelihood is a Gauss-Hermite sum over ``u`` (a document has only a few
    scored cells, too few for a normal approximation of its effect's posterior to be good).
    """

    def __init__(
        self,
        matrix: PartialMatrix,
        zp_raw: np.ndarray | None,
        zd_raw: np.ndarray | None,
        strata: np.ndarray | None = None,
    ) -> None:
        self.n_p, self.n_d = matrix.shape
        self.rows, self.cols = np.nonzero(matrix.observed)
        if self.rows.size == 0:
            raise ValueError("no scored cell to fit; score at least one cell per phrasing and document")
        self.y = matrix.values[self.rows, self.cols]
        self.zp, self.zd = _standardise(zp_raw, self.n_p), _standardise(zd_raw, self.n_d)
        n = self.rows.size
        ones = np.ones(n)
        blocks = [sparse.csr_matrix(ones[:, None]), sparse.csr_matrix((ones, (np.arange(n), self.rows)), shape=(n, self.n_p))]
        if self.zp.shape[1] + self.zd.shape[1]:
            blocks.append(sparse.csr_matrix(np.hstack([self.zp[self.rows], self.zd[self.cols]])))
        #: Each document's stratum (0..K-1) and K; K = 1 without strata.
        self.codes = np.zeros(self.n_d, dtype=int) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1].ravel()
        self.n_strata = int(self.codes.max()) + 1
        sizes = [1, self.n_p, self.zp.shape[1], self.zd.shape[1], 0, 0]
        if self.n_strata > 1:
            k = self.n_strata
            #: The strata's indicators centred on their shares of the documents (K, K): a
            #: phrasing's effects on them move its score between strata, not its average.
            self.centred = np.eye(k) - np.bincount(self.codes, minlength=k) / self.n_d
            per_cell = self.centred[self.codes[self.cols]]  # (n, K)
            blocks.append(sparse.csr_matrix(per_cell[:, 1:]))  # stratum intercepts
            inter = sparse.csr_matrix(
                (per_cell.ravel(), (np.repeat(np.arange(n), k), (self.rows[:, None] * k + np.arange(k)[None, :]).ravel())),
                shape=(n, self.n_p * k),
            )
            blocks.append(inter)
            sizes[4:] = [k - 1, self.n_p * k]
        self.features = sparse.hstack(blocks, format="csr")
        self.features_t = self.features.T.tocsr()
        self.groups = np.repeat(np.array([_INTERCEPT, _PHRASING, _PHRASING_COVARIATE, _DOCUMENT_COVARIATE, _STRATUM, _INTERACTION]), sizes)
        #: Sums cells into their documents: (D, n).
        self.by_document = sparse.csr_matrix((ones, (self.cols, np.arange(n))), shape=(self.n_d, n))
        # Every pair of scored cells that share a document (each cell with itself included):
        # the Hessian couples them through the document effect integrated out.
        order = np.argsort(self.cols, kind="stable")
        starts = np.searchsorted(self.cols[order], np.arange(self.n_d + 1))
        per_doc = np.diff(starts)
        pairs = per_doc**2
        doc_of_pair = np.repeat(np.arange(self.n_d), pairs)
        within = np.arange(int(pairs.sum())) - np.repeat(np.cumsum(pairs) - pairs, pairs)
        first = starts[doc_of_pair] + within // per_doc[doc_of_pair]
        second = starts[doc_of_pair] + within % per_doc[doc_of_pair]
        self._pair_a, self._pair_b = order[first], order[second]
        self._cache: tuple[np.ndarray, float, tuple[np.ndarray, ...]] | None = None

    @property
    def n_coef(self) -> int:
        return int(self.features.shape[1])

    def penalties(self, phrasing_sd: float, document_sd: float, interaction_sd: float = 1.0) -> np.ndarray:
        """L2 strength (1 / prior variance) per coefficient; covariates share their effects' scale."""
        return np.array([0.0, phrasing_sd**-2, phrasing_sd**-2, document_sd**-2, 0.0, interaction_sd**-2])[self.groups]

    def node_posteriors(self, coef: np.ndarray, document_sd: float) -> tuple[np.ndarray, np.ndarray]:
        """Each document's log-likelihood (D,) and posterior over the nodes (D, nodes) given ``coef``."""
        eta = (self.features @ coef)[:, None] + document_sd * _NODES[None, :]
        per_doc = self.by_document @ (self.y[:, None] * eta - np.logaddexp(0.0, eta)) + _LOG_NODE_WEIGHTS
        total = special.logsumexp(per_doc, axis=1)
        return total, np.exp(per_doc - total[:, None])

    def _terms(self, coef: np.ndarray, document_sd: float) -> tuple[np.ndarray, ...]:
        if self._cache is not None and self._cache[1] == document_sd and np.array_equal(self._cache[0], coef):
            return self._cache[2]
        total, posterior = self.node_posteriors(coef, document_sd)
        prob = expit((self.features @ coef)[:, None] + document_sd * _NODES[None, :])
        terms = (total, posterior, prob, self.y[:, None] - prob, posterior[self.cols])
        self._cache = (coef.copy(), document_sd, terms)
        return terms

    def loss_grad(self, coef: np.ndarray, penalties: np.ndarray, document_sd: float) -> tuple[float, np.ndarray]:
        """Negative log posterior (up to a constant) and its gradient."""
        total, _, _, resid, cell_post = self._terms(coef, document_sd)
        loss = -float(np.sum(total)) + 0.5 * float(np.sum(penalties * coef**2))
        return loss, -np.asarray(self.features_t @ np.sum(cell_post * resid, axis=1)) + penalties * coef

    def hessian(self, coef: np.ndarray, penalties: np.ndarray, document_sd: float) -> np.ndarray:
        """The exact Hessian of :meth:`loss_grad`.

        Per document, the node-posterior mean of its cells' curvature, less the node-posterior
        covariance of their residuals (cells of one document move together through its effect).
        """
        _, _, prob, resid, cell_post = self._terms(coef, document_sd)
        weight = np.sum(cell_post * prob * (1.0 - prob), axis=1)
        mean_resid = np.sum(cell_post * resid, axis=1)
        a, b = self._pair_a, self._pair_b
        covariance = np.sum(cell_post[a] * resid[a] * resid[b], axis=1) - mean_resid[a] * mean_resid[b]
        n = self.y.size
        coupling = sparse.csr_matrix((covariance, (a, b)), shape=(n, n)) - sparse.diags(weight)
        return -np.asarray((self.features_t @ (coupling @ self.features)).todense()) + np.diag(penalties)


class _Laplace(NamedTuple):
    """The posterior of the fixed part at given prior scales: its mode and Hessian (Laplace)."""

    phrasing_sd: float
    document_sd: float
    coef: np.ndarray
    hessian: np.ndarray
    log_evidence: float
    interaction_sd: float = 1.0


def _fit(cells: _Cells, phrasing_sd: float, document_sd: float, start: np.ndarray | None = None, interaction_sd: float = 1.0) -> _Laplace:
    """The posterior mode (scipy's trust-region Newton on the exact gradient and Hessian) and
    the Laplace approximation of the evidence ``log p(scores | scales)``."""
    penalties = cells.penalties(phrasing_sd, document_sd, interaction_sd)
    x0 = np.zeros(cells.n_coef) if start is None else np.asarray(start, dtype=float)
    result = optimize.minimize(
        cells.loss_grad,
        x0,
        args=(penalties, document_sd),
        jac=True,
        hess=cells.hessian,
        method="trust-exact",
        options={"gtol": 1e-5},
    )
    coef = np.asarray(result.x)
    loss, _ = cells.loss_grad(coef, penalties, document_sd)
    hessian = cells.hessian(coef, penalties, document_sd)
    sign, logdet = np.linalg.slogdet(hessian)
    if sign <= 0:  # not positive definite (no mode found): the scale gets no weight
        return _Laplace(phrasing_sd, document_sd, coef, hessian, -math.inf, interaction_sd)
    # The flat intercepts and the 2 pi terms common to every scale are left out.
    data_loss = loss - 0.5 * float(np.sum(penalties * coef**2))
    log_prior = 0.5 * float(np.sum(np.log(penalties[penalties > 0]))) - 0.5 * float(np.sum(penalties * coef**2))
    return _Laplace(phrasing_sd, document_sd, coef, hessian, -data_loss + log_prior - 0.5 * logdet, interaction_sd)


def _max_evidence(cells: _Cells) -> _Laplace:
    """The fit at the prior scales of maximum evidence (empirical Bayes), by Nelder-Mead
    (over the phrasing and document scales, and the interactions' with strata)."""
    warm: dict[str, np.ndarray] = {}
    n_scales = 3 if cells.n_strata > 1 else 2

    def fit_at(log_sd: np.ndarray) -> _Laplace:
        extra = math.exp(log_sd[2]) if n_scales == 3 else 1.0
        return _fit(cells, math.exp(log_sd[0]), math.exp(log_sd[1]), warm.get("coef"), extra)

    def negative(log_sd: np.ndarray) -> float:
        fit = fit_at(log_sd)
        warm["coef"] = fit.coef
        return -fit.log_evidence

    start = np.array([math.log(0.3), math.log(1.0), math.log(1.0)][:n_scales])
    # An explicit simplex: scipy's default steps from a zero coordinate are tiny.
    simplex = start + np.vstack([np.zeros(n_scales), 0.7 * np.eye(n_scales)])
    options = {"xatol": 2e-2, "fatol": 1e-2, "initial_simplex": simplex}
    bounds = [(math.log(_MIN_SD), math.log(_MAX_SD))] * n_scales
    result = optimize.minimize(negative, start, method="Nelder-Mead", bounds=bounds, options=options)
    return fit_at(result.x)


def _scale_posterior(cells: _Cells) -> tuple[list[_Laplace], np.ndarray]:
    """Fits over a grid of phrasing-effect scales, with their posterior weights.

    The document scale is set by maximum evidence (hundreds of documents pin it down); the
    phrasing scale is not (a few dozen phrasings with a few cells each), so the estimate
    integrates over it: a uniform prior on the scale (Gelman 2006) times the evidence, on a
    coarse log grid and then a fine one over where the coarse one puts its weight.
    """
    best = _max_evidence(cells)
    top = min(_MAX_SD, max(3.0, 3.0 * best.phrasing_sd))

    def weigh(grid: np.ndarray, start: np.ndarray) -> tuple[list[_Laplace], np.ndarray]:
        fits: list[_Laplace] = []
        coef = start
        for sd in grid:
            fits.append(_fit(cells, float(sd), best.document_sd, coef, best.interaction_sd))
            coef = fits[-1].coef
        log_w = np.array([f.log_evidence for f in fits]) + np.log(grid)  # a log grid: d(sd) = sd d(log sd)
        if not np.isfinite(log_w.max()):
            log_w = np.log(grid)  # no usable evidence anywhere: the prior alone
        weights = np.exp(log_w - log_w.max())
        return fits, weights / weights.sum()

    coarse = np.exp(np.linspace(math.log(_MIN_SD), math.log(top), _SCALE_GRID // 2))
    fits, weights = weigh(coarse, best.coef)
    cdf = np.cumsum(weights)
    low = coarse[max(int(np.searchsorted(cdf, 1e-3)) - 1, 0)]
    high = coarse[min(int(np.searchsorted(cdf, 1 - 1e-3)) + 1, coarse.size - 1)]
    start = fits[max(int(np.searchsorted(cdf, 1e-3)) - 1, 0)].coef
    return weigh(np.exp(np.linspace(math.log(low), math.log(high), _SCALE_GRID)), start)


def _phrasing_logits(cells: _Cells, coef: np.ndarray) -> np.ndarray:
    """Intercept + phrasing effect (+ covariates) of every phrasing: (P, B) for ``coef`` (K, B)."""
    n_p, k_p = cells.n_p, cells.zp.shape[1]
    logits = coef[0] + coef[1 : 1 + n_p]
    if k_p:
        logits = logits + cells.zp @ coef[1 + n_p : 1 + n_p + k_p]
    return logits


def _document_offsets(cells: _Cells, coef: np.ndarray) -> np.ndarray:
    """The document covariates' part of every document's logit: (D, B), zeros without them."""
    k_p, k_d = cells.zp.shape[1], cells.zd.shape[1]
    if not k_d:
        return np.zeros((cells.n_d, coef.shape[1]))
    return cells.zd @ coef[1 + cells.n_p + k_p :]


def _stratum_offsets(cells: _Cells, coef: np.ndarray) -> np.ndarray | float:
    """The stratum intercepts and phrasing x stratum effects of every cell: (B, P, D), or 0 without strata."""
    if cells.n_strata < 2:
        return 0.0
    k = cells.n_strata
    first = 1 + cells.n_p + cells.zp.shape[1] + cells.zd.shape[1]
    per_doc = cells.centred[cells.codes]  # (D, K)
    intercepts = per_doc[:, 1:] @ coef[first : first + k - 1]  # (D, B)
    effects = coef[first + k - 1 : first + k - 1 + cells.n_p * k].reshape(cells.n_p, k, -1)  # (P, K, B)
    per_cell = np.einsum("dk,pkb->bpd", per_doc, effects) + intercepts.T[:, None, :]
    return np.asarray(per_cell)


@dataclass(frozen=True, eq=False)
class CellModel:
    """A fitted phrasing + document model (at the prior scales of maximum evidence).

    Attributes:
        probabilities: posterior mean score of every cell (P x D).
        phrasing_penalty: the L2 strength chosen for the phrasing effects (1 / prior variance).
        document_penalty: the same for the document effects.
    """

    probabilities: np.ndarray
    phrasing_penalty: float
    document_penalty: float
    coefficients: np.ndarray = field(repr=False)


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
    cells = _Cells(matrix, phrasing_covariates, document_covariates)
    best = _max_evidence(cells)
    _, posterior = cells.node_posteriors(best.coef, best.document_sd)
    beta = best.document_sd * _NODES
    logits = (
        _phrasing_logits(cells, best.coef[:, None])[:, 0][:, None, None]
        + (_document_offsets(cells, best.coef[:, None])[:, 0][:, None] + beta[None, :])[None]
    )
    prob = np.einsum("pdq,dq->pd", expit(logits), posterior)
    return CellModel(prob, best.phrasing_sd**-2, best.document_sd**-2, best.coef)


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
        n_boot: posterior draws (model) or bootstrap replicates (sampled mean) behind the CIs.
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


def _cholesky(precision: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a precision matrix, its eigenvalues floored if it is not
    numerically positive definite."""
    try:
        return np.asarray(linalg.cholesky(precision, lower=True))
    except linalg.LinAlgError:
        values, vectors = np.linalg.eigh((precision + precision.T) / 2.0)
        floor = max(float(values.max()), 1.0) * 1e-9
        return np.asarray(linalg.cholesky((vectors * np.maximum(values, floor)) @ vectors.T, lower=True))


#: Proposals drawn per kept draw of the fixed part, in each of the two stages of
#: :func:`_importance_draws`.
_PROPOSALS_PER_DRAW = 4
#: Below this effective sample size (a share of the proposals), a second, adapted stage is drawn.
_ADAPT_BELOW = 0.5
#: Degrees of freedom of the adapted proposal (a multivariate Student-t: along the effect of
#: a phrasing right on every scored cell the posterior falls off slowly on the far side).
_ADAPTED_DF = 1.0


def _log_likelihood(cells: _Cells, coef: np.ndarray, document_sd: float) -> np.ndarray:
    """``log p(scores | coef)`` with the document effects integrated out, for ``coef`` (K, B): (B,)."""
    eta = (cells.features @ coef)[:, :, None] + document_sd * _NODES
    per_doc = cells.by_document @ (cells.y[:, None, None] * eta - np.logaddexp(0.0, eta)).reshape(cells.y.size, -1)
    return np.asarray(special.logsumexp(per_doc.reshape(cells.n_d, coef.shape[1], _NODES.size) + _LOG_NODE_WEIGHTS, axis=2).sum(axis=0))


def _log_prior(cells: _Cells, coef: np.ndarray, fit: _Laplace) -> np.ndarray:
    """The fixed part's log prior density (up to a constant) at ``fit``'s scales, for ``coef`` (K, B): (B,)."""
    penalties = cells.penalties(fit.phrasing_sd, fit.document_sd, fit.interaction_sd)
    return -0.5 * np.sum(penalties[:, None] * coef**2, axis=0)


def _log_posterior(cells: _Cells, fit: _Laplace, coefs: np.ndarray) -> np.ndarray:
    """The exact log posterior (up to a constant) of the fixed part at ``fit``'s scales: (B,)."""
    chunk = max(1, 4_000_000 // max(cells.y.size * _NODES.size, 1))
    return np.concatenate(
        [
            _log_likelihood(cells, coefs[:, i : i + chunk], fit.document_sd) + _log_prior(cells, coefs[:, i : i + chunk], fit)
            for i in range(0, coefs.shape[1], chunk)
        ]
    )


def _resample(log_w: np.ndarray, m: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``m`` indices drawn by importance weights, and the weights' effective sample size.

    The weights are truncated at ``sqrt(N)`` times their mean (truncated importance sampling,
    Ionides 2008): a few proposals far out in a heavy tail would otherwise carry all the weight.
    """
    w = np.exp(log_w - log_w.max())
    w = np.minimum(w, math.sqrt(w.size) * w.mean())
    w /= w.sum()
    return rng.choice(w.size, size=m, p=w), float(1.0 / np.sum(w * w))


def _importance_draws(cells: _Cells, fit: _Laplace, m: int, rng: np.random.Generator) -> tuple[np.ndarray, float, int]:
    """``m`` draws of the fixed part from its posterior at ``fit``'s scales, (K, m), the
    importance weights' effective sample size and the number of proposals.

    The Laplace approximation is a normal at the mode; where a phrasing's cells are all
    right (or all wrong) in a stratum the posterior is one-sided (bounded by the data on one
    side, the prior's tail on the other), and the normal's symmetric spread puts draws far on
    the wrong side. So proposals from the normal are reweighted by the exact posterior over
    the normal (importance sampling; documents integrated out by quadrature, the prior as
    fitted) and ``m`` of them resampled by those weights. Where the weights are uneven
    (effective sample size below half the proposals), a second stage draws as many again from
    an even mixture of the normal and a Student-t fitted to the weighted first stage (adaptive
    importance sampling; the t's heavy tails cover the long side, the normal the mode), and the
    two stages are resampled together, each proposal weighted against the mixture of all.
    """
    k = cells.n_coef
    n = m * _PROPOSALS_PER_DRAW
    chol = _cholesky(fit.hessian)  # of the Laplace precision
    half_logdet = float(np.sum(np.log(np.diag(chol)))) - 0.5 * k * math.log(2 * math.pi)

    def laplace_logpdf(x: np.ndarray) -> np.ndarray:
        z = chol.T @ (x - fit.coef[:, None])
        return -0.5 * np.sum(z * z, axis=0) + half_logdet

    z = rng.standard_normal((k, n))
    coefs = fit.coef[:, None] + linalg.solve_triangular(chol.T, z, lower=False)
    log_w = _log_posterior(cells, fit, coefs) + 0.5 * np.sum(z * z, axis=0) - half_logdet
    picked, ess = _resample(log_w, m, rng)
    if ess >= _ADAPT_BELOW * n:
        return coefs[:, picked], ess, n
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = coefs @ w
    centred = coefs - mean[:, None]
    cov = (centred * w) @ centred.T
    cov += np.eye(k) * 1e-6 * max(float(np.trace(cov)) / k, 1e-12)
    fitted = _cholesky(cov)  # lower factor of the covariance
    nu = _ADAPTED_DF
    # The normalising constants matter: the two proposals' densities are mixed.
    fitted_const = (
        special.gammaln((nu + k) / 2) - special.gammaln(nu / 2) - 0.5 * k * math.log(nu * math.pi) - float(np.sum(np.log(np.diag(fitted))))
    )

    def fitted_logpdf(x: np.ndarray) -> np.ndarray:
        u = linalg.solve_triangular(fitted, x - mean[:, None], lower=True)
        return fitted_const - 0.5 * (nu + k) * np.log1p(np.sum(u * u, axis=0) / nu)

    n_fitted = n - n // 2
    from_fitted = mean[:, None] + (fitted @ rng.standard_normal((k, n_fitted))) * np.sqrt(nu / rng.chisquare(nu, n_fitted))
    from_laplace = fit.coef[:, None] + linalg.solve_triangular(chol.T, rng.standard_normal((k, n // 2)), lower=False)
    second = np.hstack([from_laplace, from_fitted])
    # Both stages pooled, each proposal weighted against the mixture that all were drawn from.
    pooled = np.hstack([coefs, second])
    n_laplace = n + n // 2
    log_q = np.logaddexp(
        laplace_logpdf(pooled) + math.log(n_laplace / pooled.shape[1]), fitted_logpdf(pooled) + math.log(n_fitted / pooled.shape[1])
    )
    log_p = np.concatenate([log_w + laplace_logpdf(coefs), _log_posterior(cells, fit, second)])
    picked, ess = _resample(log_p - log_q, m, rng)
    return pooled[:, picked], ess, pooled.shape[1]


class _Posterior(NamedTuple):
    scores: np.ndarray  # (draws, P): each phrasing's full-run score
    phrasing_sd: np.ndarray  # the grid of phrasing-effect scales
    weights: np.ndarray  # their posterior weights
    document_sd: float
    interaction_sd: float
    effective: float  # importance sampling's effective sample size, summed over the scale grid
    proposals: int  # and the proposals drawn


def _posterior_scores(matrix: PartialMatrix, cells: _Cells, n_draws: int, rng: np.random.Generator) -> _Posterior:
    """Draws of every phrasing's full-run score, and the posterior of the phrasing scale.

    Each draw takes a phrasing scale from its grid posterior, the fixed part from that fit's
    posterior (Laplace proposals, importance-reweighted: :func:`_importance_draws`), each
    document's effect from its posterior over the quadrature nodes,
    and then the full run: scored cells as scored, every other cell of the target its
    probability plus Bernoulli noise (summed over a phrasing's cells as a normal with the
    summed variance; fractional scores vary less, so this is conservative).
    """
    n_p, n_d = matrix.shape
    observed = matrix.observed
    target = matrix.target | observed
    unscored_f = (target & ~observed).astype(float)
    observed_sum = np.where(observed, np.nan_to_num(matrix.values), 0.0).sum(axis=1)
    n_target = np.maximum(target.sum(axis=1), 1)
    fits, weights = _scale_posterior(cells)
    counts = rng.multinomial(n_draws, weights)
    n_nodes = _NODES.size
    chunk = max(1, min(4_000_000 // max(n_p * n_d, 1), 4_000_000 // max(cells.y.size * n_nodes, 1)))
    out = []
    effective, n_proposals = 0.0, 0
    for fit, m in zip(fits, counts.tolist(), strict=True):
        if m == 0:
            continue
        coefs, ess, proposals = _importance_draws(cells, fit, m, rng)
        effective += ess
        n_proposals += proposals
        for start in range(0, m, chunk):
            coef = coefs[:, start : start + chunk]
            k = coef.shape[1]
            eta = (cells.features @ coef)[:, :, None] + fit.document_sd * _NODES
            per_doc = cells.by_document @ (cells.y[:, None, None] * eta - np.logaddexp(0.0, eta)).reshape(cells.y.size, -1)
            log_post = per_doc.reshape(n_d, k, n_nodes) + _LOG_NODE_WEIGHTS
            post = np.exp(log_post - special.logsumexp(log_post, axis=2, keepdims=True))
            node = np.minimum((np.cumsum(post, axis=2) < rng.random((n_d, k, 1))).sum(axis=2), n_nodes - 1)
            beta = (fit.document_sd * _NODES[node] + _document_offsets(cells, coef)).T  # (k, D)
            prob = expit(_phrasing_logits(cells, coef).T[:, :, None] + beta[:, None, :] + _stratum_offsets(cells, coef))
            mean = np.einsum("kpd,pd->kp", prob, unscored_f)
            var = mean - np.einsum("kpd,pd->kp", prob * prob, unscored_f)
            total = observed_sum + mean + np.sqrt(np.maximum(var, 0.0)) * rng.standard_normal(mean.shape)
            out.append(np.clip(total / n_target, 0.0, 1.0))
    return _Posterior(
        np.concatenate(out),
        np.array([f.phrasing_sd for f in fits]),
        weights,
        fits[0].document_sd,
        fits[0].interaction_sd,
        effective,
        n_proposals,
    )


def _strata_labels(matrix: PartialMatrix, strata: np.ndarray | None) -> np.ndarray | None:
    """The documents' strata, checked; None when there are none or all share one."""
    if strata is None:
        return None
    labels = np.asarray(strata)
    if labels.shape != (matrix.shape[1],):
        raise ValueError(f"strata has {labels.size} labels for {matrix.shape[1]} documents; give one label per document")
    return labels if np.unique(labels).size > 1 else None


def _model_estimate(
    matrix: PartialMatrix,
    n_draws: int,
    seed: int,
    level: float,
    zp_raw: np.ndarray | None,
    zd_raw: np.ndarray | None,
    strata: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    labels = _strata_labels(matrix, strata)
    rng = np.random.default_rng([seed, *matrix.shape, int(matrix.observed.sum())])
    cells = _Cells(matrix, zp_raw, zd_raw, strata=labels)
    posterior = _posterior_scores(matrix, cells, n_draws, rng)
    draws = np.concatenate([posterior.scores, across_statistics(posterior.scores)], axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(draws, [100 * alpha, 100 * (1 - alpha)], axis=0)
    point = np.median(draws, axis=0)
    grid, cdf = posterior.phrasing_sd, np.cumsum(posterior.weights)
    sd_low, sd_mid, sd_high = (float(grid[min(int(np.searchsorted(cdf, q)), grid.size - 1)]) for q in (alpha, 0.5, 1 - alpha))
    scales = (
        f"phrasing effects' sd {sd_mid:.3g} logits ({level:.0%}: {sd_low:.3g}-{sd_high:.3g}), integrated over; "
        f"document effects' sd {posterior.document_sd:.3g}"
        + (f", phrasing x stratum effects' sd {posterior.interaction_sd:.3g}" if labels is not None else "")
        + " (maximum evidence)"
    )
    covariates = (0 if zp_raw is None else 1) + (0 if zd_raw is None else 1)
    details = {
        "model": "logistic phrasing + document effects"
        + (" + covariates" if covariates else "")
        + (
            f" + each phrasing's effect per stratum of documents ({cells.n_strata} strata: its preference for one answer)"
            if labels is not None
            else ""
        ),
        "penalties": scales,
        "ci": f"posterior quantiles ({n_draws} draws of the full run; document effects integrated by quadrature, "
        f"the rest drawn from a Laplace approximation reweighted to the exact posterior (effective sample size "
        f"{posterior.effective:.0f} of {posterior.proposals} proposals), the phrasing scale over a grid)",
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
    strata: np.ndarray | None = None,
) -> BudgetEstimate:
    """Estimate each phrasing's score and the across-phrasing statistics from scored cells.

    Args:
        matrix: the partly scored grid; every phrasing needs a scored cell.
        estimator: ``model`` (logistic phrasing + document model), ``model-strata`` (the same
            with each phrasing's effect per stratum of documents) or ``sampled-mean``.
        n_boot: posterior draws (model) or bootstrap replicates (sampled mean) for the CIs.
        seed: seeds the folds and the bootstrap.
        level: the CIs' confidence level.
        phrasing_covariates: optional (P, k) phrasing features (the two model estimators).
        document_covariates: optional (D, m) document features (the two model estimators).
        strata: (D,) label per document (e.g. the index of its right option), for
            ``model-strata``. With a single label the estimate is ``model``'s.

    Raises:
        ValueError: an unknown estimator, a phrasing without a scored cell, or strata of the
            wrong length.
    """
    if estimator not in ALL_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ALL_ESTIMATORS)}")
    if estimator == MODEL_STRATA and strata is None:
        raise ValueError(f"the {MODEL_STRATA} estimator needs strata (one label per document, e.g. its right option)")
    observed = matrix.observed
    bare = [p for i, p in enumerate(matrix.phrasings) if not observed[i].any()]
    if bare:
        raise ValueError(f"phrasing(s) without a scored cell: {', '.join(bare[:5])}; allocate at least one cell per phrasing")
    with _single_threaded_blas():
        if estimator in (MODEL, MODEL_STRATA):
            point, low, high, details = _model_estimate(
                matrix, n_boot, seed, level, phrasing_covariates, document_covariates, strata if estimator == MODEL_STRATA else None
            )
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
