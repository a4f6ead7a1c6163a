"""The README's main command: fine-tune and show it working on the built-in tiny model.

One quickstart run (module fixture) is shared by the end-to-end assertions; the helpers it is built from
are checked on their own, quickly, against hand-written expectations and plain tokenizer calls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from sc2tune.data.holes import first_line
from sc2tune.demo import (
    HELD_OUT_REPOS,
    TRAIN_REPOS,
    Hole,
    bundled_code,
    draw_holes,
    file_holes,
    fresh_run_dir,
    quickstart,
    report_lines,
    row_holes,
    shown_hole,
    sparkline,
    spm_prompt_ids,
)
from sc2tune.metrics import edit_similarity
from sc2tune.tiny import load_bundled_tokenizer

#: Generous CI bound for the whole quickstart (about a minute on an idle 2-core CPU machine).
WALL_BOUND_S = 300


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("qs")
    start = time.monotonic()
    result = quickstart(root, show_progress=False)
    return root, result, time.monotonic() - start


# ---- the run --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_trains_and_writes_its_folders(run):
    root, result, _ = run
    assert result.run_dir == root / "quickstart" and result.model_dir == result.run_dir / "model"
    AutoModelForCausalLM.from_pretrained(result.model_dir)  # a plain transformers folder
    assert result.loss_png.is_file()
    logged = [json.loads(line)["loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert [v for _, v in result.train_losses] == pytest.approx(logged) and logged[-1] < logged[0] / 2
    assert fresh_run_dir(root) == root / "quickstart-2"  # a second quickstart never overwrites


def _recomputed(s):
    """(exact match, edit similarity) before and after, recomputed from the stored predictions."""
    lines = [h.line for h in s.holes]
    em = [sum(p.strip() == t for p, t in zip(preds, lines, strict=True)) / len(lines) for preds in (s.before, s.after)]
    es = [sum(map(edit_similarity, preds, lines)) / len(lines) for preds in (s.before, s.after)]
    return em[0], em[1], es[0], es[1]


@pytest.mark.slow
def test_trained_model_recalls_trained_lines_the_untrained_one_cannot(run):
    _, result, _ = run
    s = result.recall
    em_before, em_after, es_before, es_after = _recomputed(s)  # exact match by plain string comparison
    assert (em_before, em_after, es_before, es_after) == pytest.approx(
        (s.exact_match_before, s.exact_match_after, s.edit_similarity_before, s.edit_similarity_after))
    assert len(s.holes) >= 8
    assert em_after > em_before + 0.5, (s.before, s.after, [h.line for h in s.holes])
    assert es_after > es_before + 0.3


@pytest.mark.slow
def test_recall_holes_are_lines_of_the_trained_files_inside_trained_fim_middles(run):
    _, result, _ = run
    tok = load_bundled_tokenizer()
    code = bundled_code()
    texts = [p.read_text(encoding="utf-8") for repo in TRAIN_REPOS for p in (code / repo).rglob("*.py")]
    fim_middle = tok.convert_tokens_to_ids("<fim_middle>")
    for h in result.recall.holes:
        assert any(h.line in text for text in texts)  # the line is code of a trained file
        assert fim_middle in h.prompt_ids and tok.decode(list(h.line_ids)).strip() == h.line
        assert tok.decode(list(h.line_ids)).startswith("\n")  # a whole line: it starts after a newline


@pytest.mark.slow
def test_file_holes_are_real_lines_of_trained_and_held_out_files(run):
    _, result, _ = run
    code = bundled_code()
    saved = yaml.safe_load((result.model_dir / "recipe.yaml").read_text())
    trained = {Path(p).name for p in saved["data"]["train"]}
    assert trained == set(TRAIN_REPOS) and not trained & set(HELD_OUT_REPOS)
    for scores, repos in ((result.new_prompt, set(TRAIN_REPOS)), (result.held_out, set(HELD_OUT_REPOS))):
        assert len(scores.holes) >= 6 and {h.repo for h in scores.holes} == repos
        for h in scores.holes:
            assert h.prefix + h.middle + h.suffix == (code / h.repo / h.path).read_text(encoding="utf-8")
        assert _recomputed(scores) == pytest.approx((scores.exact_match_before, scores.exact_match_after,
                                                     scores.edit_similarity_before, scores.edit_similarity_after))


@pytest.mark.slow
def test_report_shows_the_run_figures_and_says_it_is_recall(run):
    _, result, _ = run
    text = "\n".join(report_lines(result))
    for s in (result.recall, result.new_prompt, result.held_out):
        n = len(s.holes)
        assert f"{round(s.exact_match_after * n):>5}/{n}" in text and f"{s.edit_similarity_after:>8.2f}" in text
    assert str(result.loss_png) in text and "recall the code it was trained on" in text
    i = shown_hole(result.recall)
    assert repr(result.recall.after[i]) in text and repr(result.recall.before[i]) in text
    assert repr(result.recall.holes[i].line) in text


@pytest.mark.slow
def test_quickstart_stays_within_its_time_budget(run):
    assert run[2] < WALL_BOUND_S


# ---- its parts (fast) -----------------------------------------------------------------------------------


def test_sparkline_maps_min_to_lowest_and_max_to_highest_block():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([10.0, 3.0, 3.0]) == "█▁▁"
    assert sparkline([2.0, 2.0]) == "▁▁"
    assert sparkline(list(range(100)), width=5) == "▁▃▅▆█"  # values 0, 25, 50, 74, 99 (7 * v / 99 rounded)


def test_a_hole_runs_from_the_end_of_the_previous_code_to_the_end_of_its_line():
    text = "import os\n\n    x = os.getcwd()\nshort\ndef long_enough():\n"
    holes = file_holes("r", "a.py", text)
    assert [(h.prefix, h.middle, h.suffix) for h in holes] == [
        ("import os", "\n\n    x = os.getcwd()", "\nshort\ndef long_enough():\n"),
        ("import os\n\n    x = os.getcwd()\nshort", "\ndef long_enough():", "\n"),
    ]  # the first line has no code before it; "short" has fewer than 8 characters
    assert holes[0].line == "x = os.getcwd()"


def test_holes_cut_the_sample_files_where_their_tokens_are_cut():
    """The prompt ends on the same tokens as the trained file: prefix, middle and suffix tokenised apart
    give the whole file's tokens (a cut after the newline would not: the newline joins the indentation)."""
    tok = load_bundled_tokenizer()
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for path in sorted((bundled_code() / TRAIN_REPOS[0]).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for h in file_holes("r", path.name, text):
            assert ids(h.prefix) + ids(h.middle) + ids(h.suffix) == ids(text), (path, h.line)
    assert ids("x\n    y")[:2] != ids("x\n") + ids("    y")[:1]  # what a cut after the newline would break


def test_draw_holes_is_seeded_and_in_file_order(tmp_path):
    repo = tmp_path / "r"
    (repo / "pkg").mkdir(parents=True)
    (repo / "a.py").write_text("import os\n\nx = os.getcwd()\n")
    (repo / "pkg" / "b.py").write_text("def long_enough():\n    return 1\n")
    holes = draw_holes(repo, 10, 0)
    assert [(h.path, h.line) for h in holes] == [("a.py", "x = os.getcwd()"), ("pkg/b.py", "return 1")]
    assert draw_holes(repo, 1, 5) == draw_holes(repo, 1, 5) and len(draw_holes(repo, 1, 5)) == 1


def test_spm_prompt_is_suffix_first_then_path_and_prefix_cut_to_budget():
    tok = load_bundled_tokenizer()
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    hole = Hole("repo", "pkg/m.py", "a = 1\nb = 2", "\nc = 3", "\nd = 4\n")
    special = {n: tok.convert_tokens_to_ids(n) for n in ("<repo_name>", "<file_sep>", "<fim_prefix>",
                                                         "<fim_suffix>", "<fim_middle>")}
    head = [special["<repo_name>"], *ids("repo"), special["<file_sep>"], special["<fim_prefix>"], special["<fim_suffix>"]]
    assert spm_prompt_ids(tok, hole, budget=1000) == [*head, *ids("\nd = 4\n"), special["<fim_middle>"],
                                                      *ids("pkg/m.py\n"), *ids("a = 1\nb = 2")]
    pre, suf = ids("a = 1\nb = 2"), ids("\nd = 4\n")
    cut = spm_prompt_ids(tok, hole, budget=4)  # the suffix gets a quarter (its first token), the prefix the rest
    assert cut == [*head, suf[0], special["<fim_middle>"], *ids("pkg/m.py\n"), *pre[-3:]]


def test_first_line_is_the_text_from_its_first_non_blank_character_to_the_newline():
    assert first_line("\n        self.x = 1\n    y") == "self.x = 1"
    assert first_line("  \n") == "" and first_line("abc") == "abc"


def test_row_holes_are_the_lines_after_fim_middle_with_the_row_up_to_them_as_prompt():
    tok = load_bundled_tokenizer()
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    sp = {n: tok.convert_tokens_to_ids(n) for n in ("<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>")}
    head = [sp["<file_sep>"], sp["<fim_prefix>"], sp["<fim_suffix>"], *ids("\n    y = 2\n"), sp["<fim_middle>"]]
    middle = ids("def f():\n    value = compute()\n    short\n    return value")
    doc1 = [*head, *middle]
    doc2 = ids("other = document_without_fim\n    not_a_hole = 1")  # no <fim_middle>: no hole
    rows = [{"input_ids": doc1 + doc2, "position_ids": [*range(len(doc1)), *range(len(doc2))]}]
    holes = row_holes(rows, tok, 10, 0)
    # "def f():" follows <fim_middle> directly (no newline before it), "short" has fewer than 8 characters
    assert [h.line for h in holes] == ["value = compute()", "return value"]
    first = holes[0]
    assert list(first.prompt_ids) == doc1[:len(head) + len(ids("def f():"))]
    assert tok.decode(list(first.line_ids)) == "\n    value = compute()"
    assert row_holes(rows, tok, 1, 3) == row_holes(rows, tok, 1, 3) and len(row_holes(rows, tok, 1, 3)) == 1
