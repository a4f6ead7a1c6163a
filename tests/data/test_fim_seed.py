"""``data.fim.seed``: the training split's FIM draws come from it (else ``train.seed``); the eval split keeps
``train.seed + 1`` whatever it is."""

from __future__ import annotations

from pathlib import Path

from sc2tune.data import build_datasets
from sc2tune.recipe import recipe_from_dict

FILES = {f"m{i}.py": "".join(f"def f{i}_{k}(x):\n    return x * {k} + {i}\n" for k in range(6)) for i in range(12)}


def _rows(tmp_path: Path, tokenizer, cache: str, **fim: object) -> tuple[list, list]:
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        for name, text in FILES.items():
            (code / name).write_text(text)
    recipe = recipe_from_dict({"task": "fim", "train": {"seed": 7},
                               "data": {"train": str(code), "eval": 0.25, "max_length": 96, "cache_dir": cache,
                                        "fim": {"rate": 1.0, "spm_rate": 0.5, **fim}}})
    data = build_datasets(recipe, tokenizer, show_progress=False)
    return data.train["input_ids"], data.eval["input_ids"]


def test_fim_seed_redraws_the_training_spans_only(tmp_path: Path, tokenizer):
    cache = str(tmp_path / "cache")
    default = _rows(tmp_path, tokenizer, cache)
    assert _rows(tmp_path, tokenizer, cache, seed=7) == default  # null = train.seed
    train, evaluation = _rows(tmp_path, tokenizer, cache, seed=8)
    assert evaluation == default[1]  # eval spans unchanged: eval losses stay comparable
    assert sorted(map(tuple, train)) != sorted(map(tuple, default[0]))  # other cut points
