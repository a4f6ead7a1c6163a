"""Classification on a real task built from files on this machine: which language is this snippet?

Labels come from the files themselves (Python standard library ``.py``, C headers ``.h``, Perl modules
``.pm``), never from a generator; the tiny model must reach >= 0.9 held-out accuracy.
"""

from __future__ import annotations

import glob
import json
import random
import sysconfig
from pathlib import Path

import pytest

from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train

pytestmark = pytest.mark.slow

SOURCES = {
    "python": [f"{sysconfig.get_paths()['stdlib']}/**/*.py"],
    "c": [f"{sysconfig.get_paths()['include']}/**/*.h", "/usr/include/**/*.h"],
    "perl": ["/usr/share/perl/**/*.pm", "/usr/share/perl5/**/*.pm", "/usr/lib/x86_64-linux-gnu/perl/**/*.pm"],
}
PER_CLASS = 160


def snippets(patterns: list[str], rng: random.Random) -> list[str]:
    files = sorted({f for pattern in patterns for f in glob.glob(pattern, recursive=True)})
    rng.shuffle(files)
    out = []
    for name in files:
        try:
            lines = [line for line in Path(name).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError):
            continue
        if len(lines) < 30:
            continue
        start = rng.randrange(0, len(lines) - 12)
        out.append("\n".join(lines[start:start + 12]))
        if len(out) == PER_CLASS:
            break
    return out


def build(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(0)
    records = []
    for label, patterns in SOURCES.items():
        found = snippets(patterns, rng)
        if len(found) < PER_CLASS:
            pytest.skip(f"not enough {label} files on this machine")
        records += [{"text": text, "label": label} for text in found]
    rng.shuffle(records)
    train_path, eval_path = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in records[:360]))
    eval_path.write_text("".join(json.dumps(r) + "\n" for r in records[360:]))
    return train_path, eval_path


def test_language_id_reaches_high_held_out_accuracy(tmp_path):
    train_path, eval_path = build(tmp_path)
    recipe = recipe_from_dict({
        "model": {"head": "sequence-classification"},
        "task": "classify",
        "data": {"train": str(train_path), "eval": str(eval_path), "max_length": 96},
        "adapter": {"r": 32, "alpha": 64, "dropout": 0.0},
        "train": {"max_steps": 160, "batch_size": 16, "lr": 4e-3, "warmup_ratio": 0.05, "logging_steps": 20,
                  "eval_steps": 1000, "save_steps": 1000},
        "output_dir": str(tmp_path / "run"),
    })
    result = train(recipe, show_progress=False)
    assert result.final_eval["eval_accuracy"] >= 0.9, result.final_eval
    evals = [json.loads(x) for x in (result.output_dir / "metrics.jsonl").read_text().splitlines()
             if "eval_loss" in x]
    assert evals[0]["step"] == 0 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    labels = json.loads((result.adapter_dir / "labels.json").read_text())
    assert labels == {"0": "c", "1": "perl", "2": "python"}
