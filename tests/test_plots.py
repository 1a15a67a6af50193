"""The report plots, read back from the matplotlib Figures: legends, chance marks, heatmaps, axis labels."""

from __future__ import annotations

import numpy as np
import pytest

from harness.report.chance import answer_strata_from_rows, chance_from_rows, document_chance
from harness.report.plots import heatmap_figure, model_line_figures, shared_phrasings, strip_figures
from harness.results import SampleRow
from harness.stats.compare import ModelResults, compare_models
from harness.stats.data import PhrasingResults


def phrasing(task: str, pid: str, correct: list[int], *, seen: bool = False, scale: float = 1.0) -> PhrasingResults:
    values = np.array(correct, dtype=float)
    return PhrasingResults(
        task=task,
        instruction_id=pid,
        seen=seen,
        doc_ids=tuple(f"{task}/{i}" for i in range(len(correct))),
        scores=values * scale,
        correct=values,
    )


def row(task: str, pid: str, doc: str, option_scores: list[float]) -> SampleRow:
    return SampleRow(
        task=task,
        instruction_id=pid,
        instruction_sha256="0" * 64,
        status="unobserved",
        seen=False,
        doc_id=doc,
        prompt="p",
        option_scores=option_scores,
        score=0.0,
        correct=False,
    )


def legend_texts(fig: object) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]  # type: ignore[attr-defined]


def test_chance_is_the_expected_score_of_a_random_option_averaged_over_documents() -> None:
    assert document_chance([1, 0, 0, 0]) == pytest.approx(0.25)
    assert document_chance([1, 1, 0]) == pytest.approx(2 / 3)
    assert document_chance([]) is None
    rows = [
        row("mc", "a", "d1", [1, 0, 0, 0]),
        row("mc", "b", "d1", [1, 0, 0, 0]),  # the same document under another phrasing counts once
        row("mc", "a", "d2", [0, 1]),
        row("gen", "a", "d1", []),  # generated answers have no chance score
    ]
    assert chance_from_rows(rows) == {"mc": pytest.approx((0.25 + 0.5) / 2)}


def test_answer_strata_are_each_documents_single_right_option() -> None:
    rows = [
        row("mc", "a", "d1", [0, 0, 1, 0]),
        row("mc", "b", "d1", [0, 0, 1, 0]),
        row("mc", "a", "d2", [1, 0]),
        row("mc", "a", "d3", [1, 1, 0]),  # two best options: no stratum
        row("gen", "a", "d1", []),
        row("clash", "a", "d1", [1, 0]),
        row("clash", "b", "d1", [0, 1]),  # phrasings disagree on the right option: no strata for the task
    ]
    assert answer_strata_from_rows(rows) == {"mc": {"d1": 2, "d2": 0}}


def test_strip_legend_sits_outside_the_axes_and_names_only_what_is_drawn() -> None:
    unseen_only = {"t.a": [phrasing("t.a", "t.a.p1", [1, 1, 0]), phrasing("t.a", "t.a.p2", [1, 1, 1])]}
    (fig,) = strip_figures(unseen_only)
    (ax,) = fig.axes
    assert ax.get_legend() is None, "a legend inside the axes hides the highest scores"
    assert legend_texts(fig) == ["unseen phrasing"]
    fig.canvas.draw()
    legend_box, axes_box = fig.legends[0].get_window_extent(), ax.get_window_extent()
    assert legend_box.y1 <= axes_box.y0 + 1, "the legend must sit below the axes, clear of the dots"
    mixed = {"t.a": [*unseen_only["t.a"], phrasing("t.a", "t.a.s1", [1, 0, 0], seen=True)]}
    (fig,) = strip_figures(mixed, {"t.a": 0.5})
    assert legend_texts(fig) == ["seen phrasing", "unseen phrasing", "chance (random option)"]


def test_strip_marks_each_tasks_chance_on_its_own_row() -> None:
    by_task = {
        "t.a": [phrasing("t.a", "t.a.p1", [1, 0, 0, 0]), phrasing("t.a", "t.a.p2", [1, 1, 0, 0])],
        "t.b": [phrasing("t.b", "t.b.p1", [1, 0]), phrasing("t.b", "t.b.p2", [1, 1])],
        "t.gen": [phrasing("t.gen", "t.gen.p1", [1, 0]), phrasing("t.gen", "t.gen.p2", [0, 0])],
    }
    (fig,) = strip_figures(by_task, {"t.a": 0.25, "t.b": 0.5})
    (ax,) = fig.axes
    rows = {label.get_text(): y for label, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}
    marks = {line.get_gid(): line for line in ax.lines if (line.get_gid() or "").startswith("chance:")}
    assert set(marks) == {"chance:t.a", "chance:t.b"}  # no chance for a task without options
    for task, level in (("t.a", 0.25), ("t.b", 0.5)):
        xs, ys = marks[f"chance:{task}"].get_data()
        assert list(xs) == [level, level]
        assert np.mean(ys) == pytest.approx(rows[task]) and np.ptp(ys) > 0.5
    (fig,) = strip_figures(by_task)
    assert not [line for line in fig.axes[0].lines if (line.get_gid() or "").startswith("chance:")]
    assert "chance (random option)" not in legend_texts(fig)


def test_strip_draws_a_0_100_task_on_the_0_1_axis_of_the_others() -> None:
    by_task = {
        "t.acc": [phrasing("t.acc", "t.acc.p1", [1, 0]), phrasing("t.acc", "t.acc.p2", [1, 1])],
        "t.rouge": [phrasing("t.rouge", "t.rouge.p1", [1, 0], scale=80.0), phrasing("t.rouge", "t.rouge.p2", [1, 1], scale=80.0)],
    }
    (fig,) = strip_figures(by_task)
    (ax,) = fig.axes
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    assert xs.max() <= 1.0
    assert "t.rouge (÷100)" in [t.get_text() for t in ax.get_yticklabels()]
    assert "÷ 100" in ax.get_xlabel()


def test_heatmap_shows_only_phrasings_shared_by_two_tasks() -> None:
    by_task = {
        "t.a": [phrasing("t.a", "shared.p1", [1, 1]), phrasing("t.a", "t.a.own", [0, 1])],
        "t.b": [phrasing("t.b", "shared.p1", [1, 0]), phrasing("t.b", "t.b.own", [0, 0])],
        "t.c": [phrasing("t.c", "t.c.own", [1, 1])],
    }
    assert shared_phrasings(by_task) == ["shared.p1"]
    fig = heatmap_figure(by_task)
    assert fig is not None
    ax = fig.axes[0]
    (image,) = ax.images
    assert image.get_array().shape == (1, 2)
    assert np.allclose(image.get_array()[0], [1.0, 0.5])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["shared.p1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t.a", "t.b"]  # t.c shares nothing: no empty column


def test_heatmap_without_shared_phrasings_draws_each_tasks_document_grid() -> None:
    by_task = {
        "t.a": [phrasing("t.a", "t.a.w1", [1, 0, 0]), phrasing("t.a", "t.a.w2", [1, 1, 0])],
        "t.b": [phrasing("t.b", "t.b.w1", [0, 1]), phrasing("t.b", "t.b.w2", [0, 0]), phrasing("t.b", "t.b.w3", [1, 1])],
    }
    fig = heatmap_figure(by_task)
    assert fig is not None
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["t.a", "t.b"]
    a, b = panels
    # Phrasings best first, documents most often right first; labels without the task prefix.
    assert [t.get_text() for t in a.get_yticklabels()] == ["w2", "w1"]
    assert a.images[0].get_array().tolist() == [[1, 1, 0], [1, 0, 0]]
    assert [t.get_text() for t in b.get_yticklabels()] == ["w3", "w1", "w2"]
    assert b.images[0].get_array().shape == (3, 2)
    assert legend_texts(fig) == ["right", "wrong"]
    assert heatmap_figure({"t.a": []}) is None


def test_model_lines_name_the_phrasings_on_the_axis_and_keep_the_legend_off_the_lines() -> None:
    a = [phrasing("t.x", f"t.x.w{i}", [1] * i + [0] * (4 - i)) for i in range(1, 4)]
    b = [phrasing("t.x", f"t.x.w{i}", [1] * (4 - i) + [0] * i) for i in range(1, 4)]
    comparison = compare_models([ModelResults("m-a", a), ModelResults("m-b", b)], n_boot=20)
    scores = {"t.x": {"m-a": {p.instruction_id: p.score for p in a}, "m-b": {p.instruction_id: p.score for p in b}}}
    (fig,) = model_line_figures(comparison, scores, ["t.x"])
    ax = fig.axes[0]
    # every phrasing has mean 0.5 over the two models: ties keep the id order
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w1", "w2", "w3"]
    assert ax.get_legend() is None and legend_texts(fig) == ["m-a", "m-b"]
    assert ax.get_ylabel() == "score"


def test_model_lines_thin_out_labels_of_many_phrasings() -> None:
    ids = [f"t.y.p{i:02d}" for i in range(70)]
    a = [phrasing("t.y", i, [1, 0]) for i in ids]
    comparison = compare_models([ModelResults("m-a", a), ModelResults("m-b", a)], n_boot=10)
    scores = {"t.y": {m: {i: 0.5 for i in ids} for m in ("m-a", "m-b")}}
    (fig,) = model_line_figures(comparison, scores, ["t.y"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert 10 <= len(labels) <= 30 and labels[0] == "p00"


LONG_TITLES = {
    "Score per phrasing and task (phrasings run on 2+ tasks; grey: not run)",
    "Right and wrong answers per phrasing and document, per task (no phrasing is shared by two tasks)",
}


def _titles(fig: object) -> list[object]:
    texts = [ax.title for ax in fig.axes if ax.get_visible() and ax.get_title()]  # type: ignore[attr-defined]
    return texts + ([fig._suptitle] if getattr(fig, "_suptitle", None) is not None else [])  # type: ignore[attr-defined]


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_plot_titles_fit_inside_their_figures(tasks: int) -> None:
    names = [f"t.{'abc'[k]}" for k in range(tasks)]
    shared = {t: [phrasing(t, "shared.p1", [1, 0]), phrasing(t, "shared.p2", [0, 0])] for t in names}
    own = {t: [phrasing(t, f"{t}.w1", [1, 0, 1]), phrasing(t, f"{t}.w2", [0, 1, 1])] for t in names}
    figures = [heatmap_figure(own), *strip_figures(own)]
    if tasks >= 2:
        figures.append(heatmap_figure(shared))  # narrow: 3.5 in + 0.45 in per task
    long_titles = 0
    for fig in figures:
        assert fig is not None
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        for text in _titles(fig):
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (text.get_text(), box, fig.bbox.width)
            joined = " ".join(text.get_text().split())
            if joined in LONG_TITLES:  # wrapped, never cut: every word is there
                long_titles += 1
    assert long_titles == (2 if tasks >= 2 else 1)
