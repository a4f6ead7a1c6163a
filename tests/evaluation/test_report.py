"""Report files exist and the PNG plots are real pictures of their data (checked pixel by pixel)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sc2tune.evaluation.report import plot_confusion, plot_loss_curves, plot_pass_at_k, read_metrics

BLUE = np.array([59, 117, 175])  # #3b75af, the train-loss and bar colour


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _blue_mask(img: np.ndarray) -> np.ndarray:
    return np.abs(img - BLUE).sum(axis=2) < 40


def test_loss_plot_shows_the_direction_of_the_curve(tmp_path: Path) -> None:
    falling = [(s, 3.0 - 0.1 * s) for s in range(20)]
    rising = [(s, 1.0 + 0.1 * s) for s in range(20)]
    plot_loss_curves(falling, [(10, 2.2), (19, 1.4)], tmp_path / "falling.png")
    plot_loss_curves(rising, [], tmp_path / "rising.png")
    a, b = _rgb(tmp_path / "falling.png"), _rgb(tmp_path / "rising.png")
    assert a.shape == b.shape == (360, 600, 3)
    assert a.std() > 10 and (a < 250).any(axis=2).mean() > 0.02  # not blank
    assert not np.array_equal(a, b)
    for img, falls in ((a, True), (b, False)):
        rows, cols = np.nonzero(_blue_mask(img))
        left = np.median(rows[cols < np.percentile(cols, 25)])
        right = np.median(rows[cols > np.percentile(cols, 75)])
        # image rows grow downwards: a falling loss starts high (small row) and ends low (large row)
        assert (left < right) == falls, (left, right)


def test_pass_at_k_bars_are_proportional(tmp_path: Path) -> None:
    plot_pass_at_k({"pass@1": 0.2, "pass@10": 0.8}, tmp_path / "bars.png")
    mask = _blue_mask(_rgb(tmp_path / "bars.png"))
    cols = np.nonzero(mask.any(axis=0))[0]
    middle = (cols.min() + cols.max()) / 2
    heights = [mask[:, cols[cols < middle]].sum(axis=0).max(), mask[:, cols[cols > middle]].sum(axis=0).max()]
    assert heights[1] / heights[0] == np.clip(heights[1] / heights[0], 3.6, 4.4)


def test_confusion_plot_darkest_cell_follows_the_data(tmp_path: Path) -> None:
    plot_confusion([[9, 0], [0, 0]], ["x", "y"], tmp_path / "tl.png")
    plot_confusion([[0, 0], [0, 9]], ["x", "y"], tmp_path / "br.png")
    centroids = []
    for name in ("tl.png", "br.png"):
        img = _rgb(tmp_path / name)
        width = img.shape[1]
        dark = (img[:, : int(width * 0.75)].sum(axis=2) < 200)  # leave out the colour bar on the right
        rows, cols = np.nonzero(dark)
        centroids.append((rows.mean(), cols.mean()))
    (r1, c1), (r2, c2) = centroids
    assert r1 < r2 - 20 and c1 < c2 - 20


def test_read_metrics_splits_train_and_eval(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "loss": 2.0, "learning_rate": 1e-4}, {"step": 2, "loss": float("nan")},
             {"step": 2, "eval_loss": 1.5}, {"epoch": 1.0}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert read_metrics(path) == ([(1, 2.0)], [(2, 1.5)])


EVIL = ["a | b || c", "line one\r\nline two\rthree\nfour\u2028five", "`code` and ``more`` `", "<b>bold</b> <script>x</script>",
        "[link](http://example.com) ![img](http://example.com/x.png)", "back\\slash\\| then pipe\\", "*em* _u_ # h",
        "&lt; &amp; entity", "tab\there\x00nul\x1b[31m", "ends with backslash \\"]


def test_sample_text_cannot_break_the_markdown_table() -> None:
    """The reference is markdown-it (CommonMark + GFM tables, the parser rich ships): each failure row
    parses back as exactly 4 cells holding only plain text equal to the sample's (one-line) text."""
    markdown_it = pytest.importorskip("markdown_it")
    from sc2tune.evaluation.codeeval import CodeEvalResult, SampleResult
    from sc2tune.evaluation.report import code_markdown

    samples = [SampleResult(f"task{i} {text}", i, "failed", 1, 0.1, text) for i, text in enumerate(EVIL)]
    result = CodeEvalResult({"pass@1": 0.0}, {s.task_id: {"n": 1, "c": 0} for s in samples}, samples,
                            "mode test", {"timeout": 1.0, "memory_mb": 1, "max_processes": 1, "file_size_mb": 1})
    text = code_markdown(result, problems="p`|<i>.jsonl", samples="s.jsonl")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    rows, cells, row = [], [], None
    for token in tokens:
        if token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(token)
        elif token.type == "tr_close":
            rows.append(row)
            row = None
    failure_rows = [r for r in rows if r and r[0].content.startswith("task") and r[0].content != "task"]
    assert len(failure_rows) == len(EVIL)
    for original, cells in zip(EVIL, failure_rows, strict=True):
        assert len(cells) == 4, [c.content for c in cells]
        for cell in (cells[0], cells[3]):
            assert {child.type for child in cell.children} <= {"text"}, [(c.type, c.content) for c in cell.children]
        shown = "".join(child.content for child in cells[3].children)
        flat = "".join(ch if ch.isprintable() else " " for ch in " ".join(original.splitlines()))[:160]
        assert shown == flat
        assert "".join(child.content for child in cells[0].children).endswith(flat[:150])
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    for tag in ("<b>", "<script>", "<code>", "<a ", "<em>", "<i>", "example.com/x.png\""):
        assert tag not in html
    assert html.count("<img") == 1  # the report's own pass@k plot only
