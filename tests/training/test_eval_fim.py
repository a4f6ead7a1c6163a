"""``train.eval_fim``: held-out line holes filled at every evaluation, logged beside ``eval_loss``.

References: the recipe errors by hand; the logged scores against the trained model's own greedy decoding by
plain ``model.generate`` one hole at a time, scored with a Levenshtein distance written here; the holes against
the held-out files on disk; the training losses against the same run with ``eval_fim: 0``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sc2tune.errors import RecipeError
from sc2tune.recipe import DEFAULT_EVAL_FIM, recipe_from_dict

TRAIN_FILES = {
    "lib/util.py": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n\n\ndef twice(x):\n    return 2 * x\n",
    "lib/greet.py": "def greet(name):\n    message = 'hello ' + name\n    return message\n",
}
HELD_OUT_FILES = {
    "shapes.py": "def area(width, height):\n    return width * height\n\n\ndef perimeter(width, height):\n"
                 "    total = 2 * (width + height)\n    return total\n",
    "names.py": "class Greeter:\n    def __init__(self, name):\n        self.name = name\n\n"
                "    def hello(self):\n        return 'hello ' + self.name\n",
}
HOLES = 5
STEPS = 3


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _recipe(folder: Path, name: str, method: str = "qlora", **train: object) -> dict:
    """A QLoRA run (a PEFT model over a 4-bit base: the hardest model to decode from) unless ``method``."""
    return {
        "task": "fim",
        "adapter": {"method": method, "r": 8, "alpha": 16, "dropout": 0.1},  # dropout: RNG the probe must not touch
        "data": {"train": str(_write(folder / "train", TRAIN_FILES)), "eval": [str(_write(folder / "eval",
                 HELD_OUT_FILES))], "max_length": 128, "fim": {"rate": 1.0, "spm_rate": 0.0}},
        "train": {"max_steps": STEPS, "batch_size": 2, "lr": 1e-2, "warmup_ratio": 0.0, "scheduler": "constant",
                  "logging_steps": 1, "eval_steps": 1, "save_steps": 1000, "seed": 3, **train},
        "output_dir": str(folder / name),
    }


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


# ---- the recipe key -------------------------------------------------------------------------------------------


def test_eval_fim_defaults_by_task_and_is_refused_elsewhere(tmp_path: Path):
    fim = _recipe(tmp_path, "r")
    assert recipe_from_dict(fim).eval_fim_holes == DEFAULT_EVAL_FIM
    assert recipe_from_dict({**fim, "train": {**fim["train"], "eval_fim": 0}}).eval_fim_holes == 0
    instruct = {"task": "instruct", "data": {"train": "x.jsonl"}}
    assert recipe_from_dict(instruct).eval_fim_holes == 0
    assert recipe_from_dict({**instruct, "train": {"eval_fim": 0}}).eval_fim_holes == 0
    for task in ("instruct", "classify"):
        with pytest.raises(RecipeError, match=r"train\.eval_fim only applies to task 'fim'"):
            recipe_from_dict({"task": task, "data": {"train": "x.jsonl"}, "train": {"eval_fim": 4}})
    with pytest.raises(RecipeError, match=r"command-line override: train\.eval_fim: .*greater than or equal to 0"):
        recipe_from_dict(fim, overrides=["train.eval_fim=-1"])


def test_eval_fim_error_names_the_file_and_line(tmp_path: Path):
    from sc2tune.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("task: instruct\ndata:\n  train: x.jsonl\ntrain:\n  eval_fim: 8\n")
    with pytest.raises(RecipeError, match=rf"{path}:5: train\.eval_fim only applies"):
        load_recipe(path)


# ---- a tiny run ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same tiny LoRA run twice: with ``eval_fim`` (every ``fill`` call recorded) and without."""
    import sc2tune.training.fimprobe as fimprobe
    from sc2tune.training import train

    folder = tmp_path_factory.mktemp("eval_fim")
    calls: list[list[tuple[int, ...]]] = []
    fill = fimprobe.fill

    def spy(model, probe, indices, tokenizer):
        calls.append([probe.prompts[i] for i in indices])
        return fill(model, probe, indices, tokenizer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fimprobe, "fill", spy)
        on = train(recipe_from_dict(_recipe(folder, "on", eval_fim=HOLES)), show_progress=False)
    off = train(recipe_from_dict(_recipe(folder, "off", eval_fim=0)), show_progress=False)
    return {"folder": folder, "on": on, "off": off, "calls": calls}


def _probe(folder: Path, name: str = "on"):
    """The probe a run of ``_recipe(folder, name)`` draws (the same for any method), with the run's tokenizer."""
    from sc2tune.data import build_datasets
    from sc2tune.modeling import ModelSource, load_tokenizer
    from sc2tune.training.fimprobe import build_probe

    recipe = recipe_from_dict(_recipe(folder, name, eval_fim=HOLES))
    tokenizer = load_tokenizer(ModelSource())
    return build_probe(recipe, build_datasets(recipe, tokenizer, show_progress=False).eval, tokenizer), tokenizer


@pytest.mark.slow
def test_holes_are_held_out_lines_in_a_psm_prompt(runs: dict):
    probe, tokenizer = _probe(runs["folder"])
    assert len(probe) == HOLES
    texts = list(HELD_OUT_FILES.values())
    for prompt, line in zip(probe.prompts, probe.lines, strict=True):
        decoded = tokenizer.decode(list(prompt))
        assert decoded.startswith("<fim_prefix>") and decoded.endswith("<fim_middle>")
        prefix, suffix = decoded.removeprefix("<fim_prefix>").removesuffix("<fim_middle>").split("<fim_suffix>")
        middle = next(t[len(prefix):len(t) - len(suffix)] for t in texts if t.startswith(prefix) and t.endswith(suffix)
                      and len(prefix) + len(suffix) < len(t))
        assert middle.strip() == line and middle.startswith("\n") and "\n" not in middle.strip()
        assert len(line) >= 8 and not prefix[-1].isspace()  # cut at the end of the text before the line


@pytest.mark.slow
def test_the_same_holes_at_every_evaluation(runs: dict):
    evals = [r for r in _rows(runs["on"].output_dir) if "eval_loss" in r]
    assert [r["step"] for r in evals] == list(range(STEPS + 1))  # eval_on_start, then every step
    assert len(runs["calls"]) == len(evals)
    assert all(call == runs["calls"][0] for call in runs["calls"])
    probe, _ = _probe(runs["folder"])
    assert runs["calls"][0] == list(probe.prompts)


def independent_scores(model, probe, tokenizer) -> tuple[float, float]:
    """Mean exact match and edit similarity of ``probe``'s holes filled by plain ``model.generate``, one hole at a
    time (no padding), the first line of each completion against the hole's line."""
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<file_sep>")]
    exact, similarity = [], []
    model.eval()
    with torch.no_grad():
        for prompt, line in zip(probe.prompts, probe.lines, strict=True):
            ids = torch.tensor([list(prompt)])
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=probe.max_new_tokens, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
            new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
            predicted = tokenizer.decode(new, skip_special_tokens=True).lstrip().split("\n")[0].rstrip()
            exact.append(float(predicted.strip() == line.strip()))
            longest = max(len(predicted), len(line))
            similarity.append(1.0 - levenshtein(predicted, line) / longest if longest else 1.0)
    return sum(exact) / len(exact), sum(similarity) / len(similarity)


def assert_last_eval_scores(run: Path, scores: tuple[float, float]) -> None:
    last = [r for r in _rows(run) if "eval_loss" in r][-1]
    assert last["step"] == STEPS
    assert last["eval_fim_exact_match"] == pytest.approx(scores[0], abs=1e-9)
    assert last["eval_fim_edit_similarity"] == pytest.approx(scores[1], abs=1e-9)


@pytest.mark.slow
def test_logged_scores_equal_plain_generate_one_hole_at_a_time(runs: dict):
    probe, tokenizer = _probe(runs["folder"])
    scores = independent_scores(runs["on"].model, probe, tokenizer)
    assert 0 < scores[1] < 1  # a score that tells models apart (not all empty, not all perfect)
    assert_last_eval_scores(runs["on"].output_dir, scores)
    assert runs["on"].final_eval["eval_fim_edit_similarity"] == pytest.approx(scores[1], abs=1e-9)


@pytest.mark.slow
def test_training_is_unchanged_by_the_probe(runs: dict):
    on, off = _rows(runs["on"].output_dir), _rows(runs["off"].output_dir)
    losses = lambda rows, key: [(r["step"], r[key]) for r in rows if key in r]  # noqa: E731
    assert losses(on, "loss") == losses(off, "loss") and len(losses(on, "loss")) == STEPS
    assert losses(on, "eval_loss") == losses(off, "eval_loss")
    assert not any("eval_fim_exact_match" in r for r in off)


@pytest.mark.slow
def test_scores_reach_tensorboard(runs: dict):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["on"].output_dir / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert {"eval/fim_exact_match", "eval/fim_edit_similarity", "eval/loss"} <= set(tags)
    assert [e.step for e in events.Scalars("eval/fim_edit_similarity")] == list(range(STEPS + 1))


# ---- two processes -------------------------------------------------------------------------------------------


def _fsdp2_cpu_config(folder: Path) -> Path:
    """The shipped recipes/accelerate/fsdp.yaml (FSDP2) on 2 CPU processes."""
    import yaml
    from launching import REPO

    config = yaml.safe_load((REPO / "recipes" / "accelerate" / "fsdp.yaml").read_text())
    config.update(use_cpu=True, num_processes=2, mixed_precision="no")
    path = folder / "fsdp2-cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2"])  # "ddp" passes too (the same path without the unsharding); left out
def test_two_processes_log_the_scores_of_the_trained_model(engine: str, tmp_path: Path):  # for the suite's time
    """Each process fills its share of the holes (FSDP2: parameters unsharded first); the gathered scores are
    those of the saved adapter filling every hole alone. No deadlock: the launch finishes."""
    from launching import accelerate_command, run_ok, train_command, write_recipe
    from peft import PeftModel

    from sc2tune.modeling import ModelSource, load_model

    recipe = _recipe(tmp_path, engine, "lora", eval_fim=HOLES)
    recipe["adapter"]["dropout"] = 0.0
    recipe["train"]["eval_steps"] = STEPS  # eval_on_start and at the end
    path = write_recipe(tmp_path / f"{engine}.yaml", recipe)
    config = _fsdp2_cpu_config(tmp_path) if engine == "fsdp2" else None
    run_ok(accelerate_command(*train_command(path), config=config))
    run = tmp_path / engine
    assert [r["step"] for r in _rows(run) if "eval_fim_exact_match" in r] == [0, STEPS]
    engines = {json.loads(f.read_text())["distributed_type"] for f in (run / "engine").glob("rank-*.json")}
    assert engines == {"FSDP" if engine == "fsdp2" else "MULTI_CPU"}
    probe, tokenizer = _probe(tmp_path, engine)
    model = PeftModel.from_pretrained(load_model(ModelSource(dtype="float32"), pad_token_id=tokenizer.pad_token_id),
                                      str(run / "adapter"))
    assert_last_eval_scores(run, independent_scores(model, probe, tokenizer))


# ---- engines that keep no parameters whole -------------------------------------------------------------------


def _trainer(*, fsdp_version: int | None = None, zero_stage: int | None = None):
    from types import SimpleNamespace

    state = SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=fsdp_version),
                            deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage) if zero_stage else None)
    return SimpleNamespace(is_fsdp_enabled=fsdp_version is not None, is_deepspeed_enabled=zero_stage is not None,
                           accelerator=SimpleNamespace(state=state), fim_probe=object(), eval_dataset=[])


@pytest.mark.parametrize("engine", [{"fsdp_version": 1}, {"zero_stage": 3}])
def test_fsdp1_and_zero3_refuse_an_explicit_eval_fim_and_turn_the_default_off(engine: dict, tmp_path: Path, caplog):
    from sc2tune.errors import UserError
    from sc2tune.training.run import _check_fim_probe

    with pytest.raises(UserError, match=r"train\.eval_fim=4 cannot run under this launch"):
        _check_fim_probe(_trainer(**engine), recipe_from_dict(_recipe(tmp_path, "r", eval_fim=4)))
    trainer = _trainer(**engine)
    _check_fim_probe(trainer, recipe_from_dict(_recipe(tmp_path, "r")))  # the default
    assert trainer.fim_probe is None and "train.eval_fim is off for this launch" in caplog.text


@pytest.mark.parametrize("engine", [{}, {"fsdp_version": 2}, {"zero_stage": 2}])
def test_ddp_fsdp2_and_zero2_keep_the_probe(engine: dict, tmp_path: Path):
    from sc2tune.training.run import _check_fim_probe

    trainer = _trainer(**engine)
    probe = trainer.fim_probe = type("Probe", (), {"__len__": lambda self: 3})()
    _check_fim_probe(trainer, recipe_from_dict(_recipe(tmp_path, "r", eval_fim=3)))
    assert trainer.fim_probe is probe
