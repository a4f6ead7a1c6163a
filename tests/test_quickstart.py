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

from sc2tune.demo import (
    HELD_OUT_REPOS,
    TRAIN_REPOS,
    Hole,
    bundled_code,
    draw_holes,
    file_holes,
    first_line,
    fresh_run_dir,
    quickstart,
    report_lines,
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
    assert result.loss_png is not None and result.loss_png.is_file()
    logged = [json.loads(line)["loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert [v for _, v in result.train_losses] == pytest.approx(logged) and logged[-1] < logged[0] / 2
    assert fresh_run_dir(root) == root / "quickstart-2"  # a second quickstart never overwrites


@pytest.mark.slow
def test_trained_model_recalls_trained_lines_the_untrained_one_cannot(run):
    _, result, _ = run
    s = result.recall
    lines = [h.line for h in s.holes]
    # exact match recomputed here (stdlib string comparison), edit similarity from the stored predictions
    em_before = sum(p.strip() == t for p, t in zip(s.before, lines, strict=True)) / len(lines)
    em_after = sum(p.strip() == t for p, t in zip(s.after, lines, strict=True)) / len(lines)
    es_before = sum(map(edit_similarity, s.before, lines)) / len(lines)
    es_after = sum(map(edit_similarity, s.after, lines)) / len(lines)
    assert (em_before, em_after, es_before, es_after) == pytest.approx(
        (s.exact_match_before, s.exact_match_after, s.edit_similarity_before, s.edit_similarity_after))
    assert em_after > em_before + 0.5, (s.before, s.after, lines)
    assert es_after > es_before + 0.3
    assert result.infill != result.infill_before  # the shown hole: the two models fill it differently


@pytest.mark.slow
def test_holes_are_real_lines_of_trained_and_held_out_files(run):
    _, result, _ = run
    code = bundled_code()
    saved = yaml.safe_load((result.model_dir / "recipe.yaml").read_text())
    trained = {Path(p).name for p in saved["data"]["train"]}
    assert trained == set(TRAIN_REPOS) and not trained & set(HELD_OUT_REPOS)
    for scores, repos in ((result.recall, set(TRAIN_REPOS)), (result.held_out, set(HELD_OUT_REPOS))):
        assert len(scores.holes) >= 6 and {h.repo for h in scores.holes} == repos
        for h in scores.holes:
            assert h.prefix + h.middle + h.suffix == (code / h.repo / h.path).read_text(encoding="utf-8")
    s = result.held_out
    assert 0.0 <= s.edit_similarity_before <= 1 and 0.0 <= s.edit_similarity_after <= 1


@pytest.mark.slow
def test_report_shows_the_run_figures_and_says_it_is_recall(run):
    _, result, _ = run
    text = "\n".join(report_lines(result))
    n, m = len(result.recall.holes), len(result.held_out.holes)
    assert f"{round(result.recall.exact_match_after * n)}/{n}" in text
    assert f"{round(result.held_out.exact_match_after * m)}/{m}" in text
    assert f"{result.recall.edit_similarity_after:.2f}" in text and f"{result.held_out.edit_similarity_after:.2f}" in text
    assert str(result.loss_png) in text and "recall the code it was trained on" in text
    assert repr(result.infill) in text and repr(result.infill_before) in text


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
