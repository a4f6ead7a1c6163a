"""Does a change alter what a training step computes? Count it instead of timing it.

On a shared machine, tokens/s of the same code swings 2-3x within minutes (bench/README.md), so a refactor
that must not change training speed cannot be judged by timing alone. This benchmark runs the same training
step of the same recipe on this tree and on a baseline revision (default ``8150300``: the code the 9.03x
``train_speed.py`` figure was measured on, checked out into a temporary ``git worktree add --detach``), and
records, for optimizer step ``--step`` (default 3, after the warm-up):

* every aten operator dispatched, forward, backward and the optimizer update (a ``TorchDispatchMode``
  entered just before ``Sc2Trainer.training_step`` and left after the optimizer's step hook), as counts per
  operator and as a SHA-256 of the ordered sequence of operator names;
* the FLOPs torch's ``FlopCounterMode`` counts for the forward and backward;
* the batch: its tensor shapes and the sum of its token ids (the same rows, in the same order?).

Same ordered operators, FLOPs and batch on both sides means the step does the same work, so a tokens/s
difference between them is the machine, not the code. Workloads: the instruct recipe of ``train_speed.py``
(its model, data, LoRA and batch) packed and unpacked.

    python bench/step_ops.py [--baseline 8150300] [--step 3]

Exit status 1 when a workload differs. Each side runs as a whole ``python -m sc2tune train`` process with
``PYTHONPATH`` at its tree; timing is never read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _revision import checked_out

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def child(step: int, out: Path, argv: list[str]) -> None:
    """Run ``sc2tune`` with ``argv`` in this process, recording optimizer step ``step`` into ``out`` (JSON)."""
    import collections
    import runpy

    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from sc2tune.training.trainer import Sc2Trainer

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            self.names.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    state: dict = {"n": 0, "ops": None}
    original = Sc2Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):  # noqa: ANN001
        state["n"] += 1
        if state["n"] != step:
            return original(self, model, inputs, *args, **kwargs)
        ops = state["ops"] = Ops()
        ops.__enter__()  # left in the optimizer's post-step hook: the update is counted too
        flops = FlopCounterMode(display=False)
        with flops:
            loss = original(self, model, inputs, *args, **kwargs)
        ids = inputs["input_ids"]
        state["record"] = {"flops": flops.get_total_flops(), "input_ids_sum": int(ids.sum()),
                           "shapes": {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}}
        return loss

    def after_optimizer_step(optimizer, args, kwargs) -> None:  # noqa: ANN001
        ops = state["ops"]
        if ops is None or "record" not in state or "ops" in state["record"]:
            return
        ops.__exit__(None, None, None)
        state["record"].update(ops=dict(collections.Counter(ops.names)), n_ops=len(ops.names),
                               sequence_sha256=hashlib.sha256("\n".join(ops.names).encode()).hexdigest())
        out.write_text(json.dumps(state["record"], indent=1))

    Sc2Trainer.training_step = training_step
    register_optimizer_step_post_hook(after_optimizer_step)
    sys.argv = ["sc2tune", *argv]
    try:
        runpy.run_module("sc2tune", run_name="__main__")
    except SystemExit as err:
        if err.code not in (0, None):
            raise


def measure(tree: Path, recipe: Path, overrides: tuple[str, ...], step: int, scratch: Path, label: str) -> dict:
    """One whole training process of ``tree`` on ``recipe`` with ``overrides``; the record of optimizer step
    ``step``."""
    out = scratch / f"{label}.json"
    log = scratch / f"{label}.log"
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "SC2TUNE_CACHE": str(scratch / f"cache-{label}")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(step), str(out), "--",
           "train", str(recipe), *overrides, f"output_dir={scratch / ('out-' + label)}", "--no-progress"]
    with log.open("w") as handle:
        done = subprocess.run(cmd, cwd=tree, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{label}: training failed (exit {done.returncode}); log {log}:\n{tail}")
    return json.loads(out.read_text())


def recipes(scratch: Path, step: int) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """train_speed.py's instruct workload (its recipe and overrides), packed and unpacked (in data order, as
    train_speed runs it), ``step`` optimizer steps: name -> (recipe, overrides)."""
    # imported here, in the parent only: _bench_data puts this checkout first on sys.path, which a child
    # measuring the baseline tree must not have
    sys.path.insert(0, str(BENCH))
    from _bench_data import LORA, build_model, build_records, sc2tune_recipe, write_data
    from transformers import AutoTokenizer

    from sc2tune.data.templates import load_template

    model = build_model(scratch / "model")
    template = load_template("alpaca")
    records = build_records(AutoTokenizer.from_pretrained(str(model)), template, count=500)
    data = write_data(scratch / "data", records, template)
    return {name: (sc2tune_recipe(scratch / f"{name}.yaml", model=model, train=data["instruct"], task="instruct",
                                  packing=packing, steps=step, batch=4, output_dir=scratch / "unused"),
                   (*LORA, *extra))
            for name, packing, extra in (("instruct-packed", True, ()),
                                         ("instruct-unpacked", False, ("train.shuffle=false",)))}


def compare(new: dict, old: dict) -> list[str]:
    """What differs between two step records (empty: the same work)."""
    problems = [f"{key}: {old[key]} -> {new[key]}" for key in ("shapes", "input_ids_sum", "flops", "n_ops")
                if new[key] != old[key]]
    for name in sorted(set(new["ops"]) | set(old["ops"])):
        a, b = old["ops"].get(name, 0), new["ops"].get(name, 0)
        if a != b:
            problems.append(f"op {name}: {a} -> {b}")
    if not problems and new["sequence_sha256"] != old["sequence_sha256"]:
        problems.append("same operator counts in another order")
    return problems


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[sys.argv.index("--") + 1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="8150300", help="git revision to compare with (default 8150300)")
    parser.add_argument("--step", type=int, default=3, help="optimizer step to record (default 3)")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="sc2tune-step-ops-") as tmp:
        scratch = Path(tmp)
        with checked_out(args.baseline, scratch / "baseline") as base:
            for name, (recipe, overrides) in recipes(scratch, args.step).items():
                new = measure(REPO, recipe, overrides, args.step, scratch, f"{name}-new")
                old = measure(base, recipe, overrides, args.step, scratch, f"{name}-old")
                problems = compare(new, old)
                failed |= bool(problems)
                print(f"{name}: step {args.step}, batch {new['shapes'].get('input_ids')}, {new['n_ops']} aten ops "
                      f"(baseline {old['n_ops']}), {new['flops'] / 1e9:.2f} GFLOP forward+backward "
                      f"(baseline {old['flops'] / 1e9:.2f})")
                print("  " + ("the same work: same batch, same operators in the same order, same FLOPs"
                              if not problems else "DIFFERS:\n    " + "\n    ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
