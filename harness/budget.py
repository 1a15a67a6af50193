"""Which (phrasing, document) cells a budgeted run scores.

Design (documented in README, "Budgeted evaluation"):

1. **Balanced start.** Phrasings and documents are shuffled with the seed, then cells are
   taken in a cyclic order: cell ``k`` pairs phrasing ``k mod P`` with document
   ``(k + c) mod D``, where ``c = k // lcm(P, D)`` counts the completed cycles. Cycle ``c``
   holds exactly the pairs with ``(document - phrasing) = c (mod gcd(P, D))``, so the order
   visits every cell once; any prefix of it gives each phrasing, and each document, a number
   of cells that differ by at most one, and the first ``max(P, D)`` cells give every phrasing
   and every document a cell. The design links phrasings through shared documents as soon as
   the budget exceeds one cell per document, which the estimator needs to tell phrasing
   effects from document effects.
2. **Extension.** The order depends only on the phrasings, documents and seed, so a bigger
   budget with the same seed takes a longer prefix of the same order: every cell scored
   before is reused. Cells scored under another design (``already``) are counted too.
3. **Adaptive rounds (optional, ``--rounds R``).** The balanced start then takes
   ``max(one cell per phrasing and document, budget / (R + 1))`` cells, and each of ``R``
   rounds spends an equal share of the rest, chosen after the cells before it are scored:
   :func:`adaptive_round` fits the phrasing + document model of :mod:`harness.stats.budget`
   to the scored cells and draws unscored cells with probability proportional to their
   predicted Bernoulli variance ``p (1 - p)`` (the posterior mean ``p``, so documents whose
   effect is still uncertain count as uncertain), the share of a phrasing's score's
   variance that scoring the cell removes. The draw depends only on scores already seen,
   so the model-based estimate stays valid (missing at random); the plain per-phrasing mean
   of the sampled cells does not, after an adaptive round.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from harness.errors import HarnessError

#: Cells of the cyclic order generated at once (bounds memory on big grids).
_ORDER_CHUNK = 1 << 20


class BudgetError(HarnessError, ValueError):
    """A budget that cannot be met (too small, or not a fraction); says what to ask for instead."""


class Cell(NamedTuple):
    """One (phrasing, document) pair of a task's grid."""

    instruction_id: str
    doc_id: str


def minimum_cells(n_phrasings: int, n_documents: int) -> int:
    """The smallest budget that gives every phrasing and every document a cell."""
    return max(n_phrasings, n_documents) if n_phrasings and n_documents else 0


def cells_for_budget(fraction: float, n_phrasings: int, n_documents: int) -> int:
    """The cell count of a budget given as a fraction of the grid (rounded up).

    Raises:
        BudgetError: a fraction outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise BudgetError(f"--budget {fraction}: give a fraction of the cells in (0, 1], e.g. 0.05 for 5%")
    return min(n_phrasings * n_documents, math.ceil(fraction * n_phrasings * n_documents - 1e-9))


def check_budget(budget_cells: int, n_phrasings: int, n_documents: int) -> None:
    """Refuse a budget below one cell per phrasing and per document.

    Raises:
        BudgetError: with the smallest budget that would do, as cells and as a fraction.
    """
    need = minimum_cells(n_phrasings, n_documents)
    if budget_cells < need:
        grid = n_phrasings * n_documents
        raise BudgetError(
            f"a budget of {budget_cells} cells is below one cell per phrasing and per document "
            f"({n_phrasings} phrasings x {n_documents} documents needs at least {need}); "
            f"ask for --budget-cells {need} or --budget {math.ceil(1000 * need / grid) / 1000:g} or more"
        )


def _cyclic_order(n_phrasings: int, n_documents: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The design's visiting order as chunks of (phrasing index, document index) arrays."""
    rng = np.random.default_rng([seed, n_phrasings, n_documents])
    perm_p = rng.permutation(n_phrasings)
    perm_d = rng.permutation(n_documents)
    cycle = math.lcm(n_phrasings, n_documents)
    total = n_phrasings * n_documents
    for start in range(0, total, _ORDER_CHUNK):
        k = np.arange(start, min(total, start + _ORDER_CHUNK), dtype=np.int64)
        yield perm_p[k % n_phrasings], perm_d[(k + k // cycle) % n_documents]


def allocate_cells(
    phrasings: Sequence[str],
    documents: Sequence[str],
    budget_cells: int,
    seed: int,
    already: Collection[tuple[str, str]] = frozenset(),
    available: Collection[tuple[str, str]] | None = None,
) -> list[Cell]:
    """The cells to score so that a task holds ``budget_cells`` scored cells in all.

    Every phrasing and every document gets at least one cell (counting ``already``); the rest
    follow the balanced cyclic design of this module's docstring.

    Args:
        phrasings: the task's phrasing ids (the grid's rows).
        documents: the task's document ids (the grid's columns).
        budget_cells: scored cells wanted in all, ``already`` included.
        seed: the design's seed; the same seed and a bigger budget extend the same design.
        already: cells scored before (e.g. by the run being resumed); never returned again.
        available: when given, only these cells may be chosen (a ragged grid).

    Returns:
        The new cells, in the design's order (empty when ``already`` meets the budget).

    Raises:
        BudgetError: a budget below one cell per phrasing and per document.
    """
    n_p, n_d = len(phrasings), len(documents)
    if len(set(phrasings)) != n_p or len(set(documents)) != n_d:
        raise BudgetError("phrasing and document ids must be unique; check the task's phrasings and documents")
    check_budget(budget_cells, n_p, n_d)
    taken = {(p, d) for p, d in already}
    wanted = min(budget_cells, n_p * n_d if available is None else len(set(available) | taken)) - len(taken)
    if wanted <= 0:
        return []
    allowed = None if available is None else set(available)
    bare_p = set(phrasings) - {p for p, _ in taken}
    bare_d = set(documents) - {d for _, d in taken}
    cover: list[Cell] = []
    rest: list[Cell] = []
    for rows, cols in _cyclic_order(n_p, n_d, seed):
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            cell = Cell(phrasings[i], documents[j])
            if cell in taken or (allowed is not None and cell not in allowed):
                continue
            if cell.instruction_id in bare_p or cell.doc_id in bare_d:
                # Coverage first: a cell that gives a phrasing or document its first score.
                bare_p.discard(cell.instruction_id)
                bare_d.discard(cell.doc_id)
                cover.append(cell)
            elif len(rest) < wanted:
                rest.append(cell)
            if not bare_p and not bare_d and len(cover) + len(rest) >= wanted:
                break
        else:
            continue
        break
    if len(cover) > wanted:
        raise BudgetError(
            f"{len(cover)} more cells are needed to give every phrasing and document a score, "
            f"but the budget leaves {wanted}; ask for --budget-cells {len(taken) + len(cover)} or more"
        )
    return cover + rest[: wanted - len(cover)]


def adaptive_round(
    phrasings: Sequence[str],
    documents: Sequence[str],
    scored: Mapping[tuple[str, str], float],
    round_cells: int,
    seed: int,
    round_index: int = 1,
    available: Collection[tuple[str, str]] | None = None,
    scale: float | None = None,
    exclude: Collection[tuple[str, str]] = (),
) -> list[Cell]:
    """One adaptive round: ``round_cells`` unscored cells where the estimate is least certain.

    Fits the phrasing + document logistic model (:func:`harness.stats.budget.fit_cell_model`)
    to the scored cells and draws unscored cells without replacement, with probability
    proportional to ``p (1 - p)`` of their predicted score (a seeded Gumbel top-k draw, so a
    round spreads over many phrasings rather than piling onto the single most uncertain one).

    Args:
        phrasings: the task's phrasing ids.
        documents: the task's document ids.
        scored: every scored cell's score (the balanced start and earlier rounds).
        round_cells: cells to add in this round.
        seed: the run's budget seed; ``round_index`` keys this round's draw.
        round_index: 1 for the first adaptive round, 2 for the next, ...
        available: when given, only these cells may be chosen.
        scale: the metric's maximum; None: 100 when a score exceeds 1, else 1.
        exclude: cells never to choose (chosen before but not scored, e.g. no valid score).

    Returns:
        The new cells, most uncertain draws first (fewer when the grid runs out).
    """
    from harness.stats.budget import PartialMatrix, fit_cell_model

    if round_cells <= 0:
        return []
    if scale is None:
        scale = 100.0 if max(scored.values(), default=0.0) > 1.0 else 1.0
    matrix = PartialMatrix.from_cells(phrasings, documents, scored, scale=scale)
    fit = fit_cell_model(matrix, seed=seed)
    prob = fit.probabilities
    open_cells = ~matrix.observed
    if available is not None:
        mask = np.zeros_like(open_cells)
        p_index = {p: i for i, p in enumerate(phrasings)}
        d_index = {d: j for j, d in enumerate(documents)}
        for p, d in available:
            if p in p_index and d in d_index:
                mask[p_index[p], d_index[d]] = True
        open_cells &= mask
    if exclude:
        p_index = {p: i for i, p in enumerate(phrasings)}
        d_index = {d: j for j, d in enumerate(documents)}
        for p, d in exclude:
            if p in p_index and d in d_index:
                open_cells[p_index[p], d_index[d]] = False
    rows, cols = np.nonzero(open_cells)
    if rows.size == 0:
        return []
    weight = np.clip(prob[rows, cols] * (1.0 - prob[rows, cols]), 1e-12, None)
    rng = np.random.default_rng([seed, round_index, len(phrasings), len(documents)])
    keys = np.log(weight) + rng.gumbel(size=weight.size)
    pick = np.argsort(-keys, kind="stable")[:round_cells]
    return [Cell(phrasings[rows[k]], documents[cols[k]]) for k in pick.tolist()]


def start_cells(goal: int, n_phrasings: int, n_documents: int, rounds: int) -> int:
    """Cells of the balanced start when ``rounds`` adaptive rounds follow it (all of ``goal`` without rounds)."""
    if rounds <= 0:
        return goal
    return min(goal, max(minimum_cells(n_phrasings, n_documents), math.ceil(goal / (rounds + 1))))


def round_cells(goal: int, chosen: int, rounds_left: int) -> int:
    """Cells of the next adaptive round: an equal share of what the goal still lacks."""
    if rounds_left <= 0 or goal <= chosen:
        return 0
    return math.ceil((goal - chosen) / rounds_left)


class TaskGrid(NamedTuple):
    """One task's grid: its phrasings (rows) and documents (columns), in run order."""

    phrasings: list[str]
    documents: list[str]


def task_goals(grids: Mapping[str, TaskGrid], *, fraction: float | None = None, cells: int | None = None) -> dict[str, int]:
    """Cells each task holds under a budget: a fraction of every grid alike, or a cell count
    shared among the tasks in proportion to their grid sizes.

    Raises:
        BudgetError: neither or both of ``fraction`` and ``cells``, or a bad value.
    """
    if (fraction is None) == (cells is None):
        raise BudgetError("give the budget as a fraction (--budget 0.05) or a cell count (--budget-cells N), not both")
    if cells is not None and cells < 1:
        raise BudgetError(f"--budget-cells {cells}: give a positive number of cells")
    total = sum(len(g.phrasings) * len(g.documents) for g in grids.values())
    goals = {}
    for task, grid in grids.items():
        size = len(grid.phrasings) * len(grid.documents)
        if fraction is not None:
            goals[task] = cells_for_budget(fraction, len(grid.phrasings), len(grid.documents))
        else:
            goals[task] = min(size, math.ceil(cells * size / total)) if total else 0  # type: ignore[operator]
    return goals


def allocate_run(
    grids: Mapping[str, TaskGrid],
    seed: int,
    *,
    fraction: float | None = None,
    cells: int | None = None,
    already: Mapping[str, Collection[tuple[str, str]]] | None = None,
    rounds: int = 0,
) -> dict[str, list[Cell]]:
    """The new cells each task of a run scores under a budget (a fraction, or a cell count).

    Each task's design is seeded by the run's seed and the task id, so extending the budget of
    a resumed run reuses every cell scored before. With ``rounds`` adaptive rounds to follow,
    only the balanced start is allocated (:func:`start_cells`).

    Raises:
        BudgetError: neither or both of ``fraction`` and ``cells``; a task whose share is below
            one cell per phrasing and per document (the message names the smallest budget).
    """
    already = already or {}
    goals = task_goals(grids, fraction=fraction, cells=cells)
    new: dict[str, list[Cell]] = {}
    for task, grid in grids.items():
        try:
            check_budget(goals[task], len(grid.phrasings), len(grid.documents))
            share = start_cells(goals[task], len(grid.phrasings), len(grid.documents), rounds)
            new[task] = allocate_cells(grid.phrasings, grid.documents, share, _task_seed(seed, task), already=already.get(task, ()))
        except BudgetError as exc:
            raise BudgetError(f"{task}: {exc}") from None
    return new


def allocate_adaptive_round(
    grids: Mapping[str, TaskGrid],
    scored: Mapping[str, Mapping[tuple[str, str], float]],
    chosen: Mapping[str, Collection[tuple[str, str]]],
    goals: Mapping[str, int],
    rounds_left: int,
    seed: int,
    round_index: int,
) -> dict[str, list[Cell]]:
    """The next adaptive round's new cells per task, from the scores of the cells chosen so far.

    Args:
        grids: each task's phrasings and documents.
        scored: per task, every scored cell's score.
        chosen: per task, the cells chosen so far (scored or not; never chosen again).
        goals: per task, the cells the rounds fill up to.
        rounds_left: rounds still to run, this one included (it takes an equal share).
        seed: the run's budget seed.
        round_index: 1 for the first adaptive round, ...
    """
    new: dict[str, list[Cell]] = {}
    for task, grid in grids.items():
        before = chosen.get(task, ())
        size = round_cells(goals.get(task, 0), len(before), rounds_left)
        task_scored = scored.get(task, {})
        if size <= 0 or not task_scored:
            new[task] = []
            continue
        seed_t = _task_seed(seed, task)
        new[task] = adaptive_round(grid.phrasings, grid.documents, task_scored, size, seed_t, round_index, exclude=before)
    return new


def _task_seed(seed: int, task: str) -> int:
    # A stable per-task seed (Python's hash() is salted per process).
    import zlib

    return (seed * 1_000_003 + zlib.crc32(task.encode())) % (2**32)
