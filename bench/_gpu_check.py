"""The steps of ``bench/gpu_check.sh`` (run that script, not this file): on one CUDA GPU, a LoRA and a QLoRA
fine-tune of a randomly initialised StarCoder2 of real width, a merge, generation and a one-process FSDP run,
with tokens per second, peak GPU memory against ``sc2tune plan`` and PASS/FAIL per step.

Model: StarCoder2-3B's config (``sc2tune/assets/configs/starcoder2-3b.json``: hidden 3072, 24 heads, 2 KV
heads, intermediate 12288, vocabulary 49152, tied embeddings) with ``--layers`` decoder layers (default 4),
dropout 0, random weights from seed 0, bf16, and the real tokenizer bundled in ``sc2tune/assets/tokenizer``.
Attention: the recipe's ``auto`` (flash_attention_2 when installed, else SDPA). Data: FIM on this repository's
own ``sc2tune/*.py`` files (nothing is downloaded). ``--cpu-dry-run`` runs the very same steps on CPU with a
narrow model (hidden 128, 2 layers, float32, short rows, 3 steps) on a few of those files, and merges without
``sc2tune merge``'s verification (tests/merging checks it), to check the script itself; it measures nothing
about GPUs.

Memory: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` of the training step (peak statistics
reset before it), against the planner's ``total_bytes`` for the same recipe (``sc2tune plan --json``), which
includes its allowance for the CUDA context and kernels' workspace ("framework overhead", not seen by the
allocator's statistics): PASS when the allocator's peak is within the planner's total.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIB = 1024**3
MISSING = 4  # sc2tune or a dependency does not import: gpu_check.sh installs them and runs this again
DRY_DATA_BYTES = 16_000  # the dry run's data: this much of sc2tune/*.py (its 3 steps use 768 tokens)
RESULTS: list[tuple[str, str, str]] = []  # (step, PASS | FAIL | SKIP, detail)


def step(name: str, needs: tuple[str, ...] = ()) -> Callable[[Callable[[], str]], Callable[[], Any]]:
    """Run the decorated function now as step ``name``: PASS with its detail line, FAIL with the error,
    SKIP when a step it ``needs`` did not pass."""

    def run(fn: Callable[[], str]) -> Any:
        failed = [n for n, status, _ in RESULTS if n in needs and status != "PASS"]
        if failed:
            RESULTS.append((name, "SKIP", f"needs {', '.join(failed)}"))
        else:
            start = time.perf_counter()
            try:
                detail = fn()
                RESULTS.append((name, "PASS", f"{detail} [{time.perf_counter() - start:.0f} s]"))
            except Exception as err:  # noqa: BLE001 - every failure is reported and the next step runs
                traceback.print_exc()
                RESULTS.append((name, "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"))
        print(f"[gpu_check] {RESULTS[-1][1]:4}  {name}: {RESULTS[-1][2]}", flush=True)
        return fn

    return run


def build_model(folder: Path, *, layers: int, dry: bool) -> Path:
    """StarCoder2-3B's config with ``layers`` layers, dropout 0, random weights (seed 0), bundled tokenizer."""
    import torch
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    from sc2tune.tiny import load_bundled_tokenizer

    values = json.loads((ROOT / "sc2tune" / "assets" / "configs" / "starcoder2-3b.json").read_text())
    values.update(num_hidden_layers=layers, attention_dropout=0.0, embedding_dropout=0.0, residual_dropout=0.0)
    if dry:  # the same architecture, narrow
        values.update(hidden_size=128, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    dtype = torch.float32 if dry else torch.bfloat16
    values["torch_dtype"] = str(dtype).removeprefix("torch.")
    config = Starcoder2Config(**{k: v for k, v in values.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    load_bundled_tokenizer().save_pretrained(folder)
    return folder


def dry_data(work: Path) -> Path:
    """The dry run's FIM data: the first files of ``sc2tune/*.py`` (sorted) up to :data:`DRY_DATA_BYTES`."""
    folder = work / "dry-data"
    folder.mkdir(exist_ok=True)
    total = 0
    for path in sorted((ROOT / "sc2tune").glob("*.py")):
        if total >= DRY_DATA_BYTES:
            break
        shutil.copyfile(path, folder / path.name)
        total += path.stat().st_size
    return folder


def recipe(model: Path, work: Path, name: str, method: str, dry: bool, steps: int) -> dict[str, Any]:
    return {
        "model": {"name_or_path": str(model), "dtype": "float32" if dry else "bfloat16",
                  "attn_implementation": "auto"},
        "task": "fim",
        "adapter": {"method": method, "r": 16, "alpha": 32, "dropout": 0.05},
        "data": {"train": str(dry_data(work) if dry else ROOT / "sc2tune"), "eval": None, "max_length": 128 if dry else 2048,
                 "packing": True, "cache_dir": str(work / "data-cache")},
        "train": {"max_steps": steps, "batch_size": 2 if dry else 4, "lr": 2e-4, "logging_steps": 1,
                  "save_steps": 1000, "warmup_ratio": 0.0, "gradient_checkpointing": False},
        "output_dir": str(work / name),
    }


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m sc2tune ARGS`` (output shown); raises with the last lines when it fails."""
    done = subprocess.run([sys.executable, "-m", "sc2tune", *args], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"sc2tune {args[0]} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return done


def plan_bytes(recipe_path: Path) -> int:
    """The planner's total for the recipe on a CUDA GPU (``sc2tune plan --json``, last stdout line)."""
    out = cli("plan", str(recipe_path), "--json", "--device", "cuda").stdout.strip().splitlines()[-1]
    return int(json.loads(out)["total_bytes"])


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def adapter_shapes(adapter: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def train_step(model: Path, work: Path, method: str, dry: bool, steps: int) -> str:
    """One fine-tune in this process; its tokens/s, attention kernel, losses and peak memory vs the planner."""
    import math

    import torch
    import yaml

    from sc2tune.recipe import recipe_from_dict
    from sc2tune.training import train

    values = recipe(model, work, method, method, dry, steps)
    path = work / f"{method}.yaml"
    path.write_text(yaml.safe_dump(values))
    planned = plan_bytes(path)
    gc.collect()
    if not dry:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = train(recipe_from_dict(values), show_progress=False)
    attention = getattr(result.model.config, "_attn_implementation", "?")
    rate = result.train_tokens_per_second or 0.0
    del result  # the trained model goes with it: the next step measures its own peak
    gc.collect()
    seen = losses(work / method)
    if not seen or not all(math.isfinite(x) for x in seen):
        raise RuntimeError(f"losses not finite: {seen}")
    line = (f"{rate:,.0f} tokens/s, attention {attention}, "
            f"loss {seen[0]:.3f} -> {seen[-1]:.3f}")
    if dry:
        return f"{line}; planner {planned / GIB:.2f} GiB (GPU memory not measured on CPU)"
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    line += (f"; peak GPU memory {allocated / GIB:.2f} GiB allocated, {reserved / GIB:.2f} GiB reserved; "
             f"planner {planned / GIB:.2f} GiB (allocated/planner {allocated / planned:.2f})")
    if allocated > planned:
        raise RuntimeError(f"the planner under-predicts: {line}")
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (model, runs, data cache)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cpu-dry-run", action="store_true")
    args = parser.parse_args()
    try:  # what gpu_check.sh would otherwise import in a process of its own, just to check
        import bitsandbytes  # noqa: F401
        import datasets  # noqa: F401
        import peft  # noqa: F401

        import sc2tune.training  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure to import means: install, as the script did
        print(f"gpu_check: sc2tune or a dependency does not import ({type(err).__name__}: {err})", file=sys.stderr)
        return MISSING
    dry = args.cpu_dry_run
    layers, steps = (2, 3) if dry else (args.layers, args.steps)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    import torch

    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch " + torch.__version__
              + " (a CPU build, or no driver): nothing to check; run with --cpu-dry-run to test the script")
        return 2
    device = "CPU dry run" if dry else f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(f"[gpu_check] {device}; StarCoder2-3B width, {layers} layers, {steps} steps; work folder {work}")
    model = work / "model"

    @step("build model")
    def _() -> str:
        build_model(model, layers=layers, dry=dry)
        return f"{sum(p.stat().st_size for p in model.glob('*.safetensors')) / GIB:.2f} GiB of weights"

    @step("LoRA fine-tune", needs=("build model",))
    def _() -> str:
        return train_step(model, work, "lora", dry, steps)

    @step("QLoRA fine-tune", needs=("build model",))
    def _() -> str:
        return train_step(model, work, "qlora", dry, steps)

    @step("merge LoRA", needs=("LoRA fine-tune",))
    def _() -> str:
        if dry:  # the step's plumbing; the verification (PEFT's merge, logits) is tests/merging's
            cli("merge", str(work / "lora" / "adapter"), "--out", str(work / "merged"), "--no-verify")
            return "merged by sc2tune merge (--no-verify in the dry run)"
        cli("merge", str(work / "lora" / "adapter"), "--out", str(work / "merged"))
        return "merged and verified by sc2tune merge"

    @step("generate (merged)", needs=("merge LoRA",))
    def _() -> str:
        out = cli("generate", str(work / "merged"), "--prompt", "def fibonacci(n):", "--max-new-tokens", "32",
                  "--temperature", "0").stdout
        from transformers import AutoModelForCausalLM

        dtype = torch.float32 if dry else torch.bfloat16
        target = "cpu" if dry else "cuda"
        lm = AutoModelForCausalLM.from_pretrained(str(work / "merged"), dtype=dtype).to(target).eval()
        ids = torch.tensor([[1, 2, 3] * 8], device=target)
        new = 16 if dry else 256
        with torch.no_grad():
            lm.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
            if not dry:
                torch.cuda.synchronize()
            start = time.perf_counter()
            lm.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            if not dry:
                torch.cuda.synchronize()
        rate = new / (time.perf_counter() - start)
        del lm
        return f"{len(out)} characters from sc2tune generate; greedy decoding {rate:,.0f} tokens/s (batch 1)"

    @step("FSDP, one process", needs=("LoRA fine-tune",))
    def _() -> str:
        path = work / "lora.yaml"
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(ROOT / "recipes" / "accelerate" / "fsdp.yaml"), "--num_processes", "1"]
        if dry:
            launch += ["--cpu", "--mixed_precision", "no"]
        done = subprocess.run([*launch, "-m", "sc2tune", "train", str(path), "--no-progress",
                               f"output_dir={work / 'fsdp'}", "train.max_steps=3"],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"accelerate launch exited {done.returncode}: {done.stderr.strip()[-600:]}")
        if adapter_shapes(work / "fsdp" / "adapter") != adapter_shapes(work / "lora" / "adapter"):
            raise RuntimeError("the FSDP adapter's tensors differ from the one-process run's")
        engine = sorted((work / "fsdp" / "engine").glob("rank-*.json"))
        kind = json.loads(engine[0].read_text()).get("distributed_type") if engine else "not recorded"
        return f"whole adapter saved (same tensors as the LoRA run); distributed type {kind}"

    print("\n[gpu_check] summary" + (" (CPU dry run: the script's steps, not a GPU check)" if dry else ""))
    for name, status, detail in RESULTS:
        print(f"  {status:4}  {name:20} {detail}")
    return 0 if all(status == "PASS" for _, status, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
