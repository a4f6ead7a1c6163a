"""Benchmark: sc2tune's streaming merge against the usual PEFT merge, as whole processes, in one run.

Setup (not measured): a synthetic StarCoder2 checkpoint with random weights (hidden 2048, 15 layers,
GQA 16/2 heads, MLP 8192, the real 49152 vocabulary, tied embeddings like the 3B/7B: ~0.75B parameters),
saved by ``save_pretrained`` in bfloat16 (how the StarCoder2 checkpoints people merge into are served)
in shards of 400 MB (4 shards), and a plain PEFT LoRA adapter (r 16, alpha 32) on every linear layer
(q/k/v/o_proj, c_fc, c_proj) with random factors.

Measured, each as its own Python process (peak RSS from ``os.wait4``, wall time around the process),
alternating sc2tune and PEFT for ``--rounds`` rounds (default 2; the fastest wall time and the highest
peak RSS of each count, since the machine's 2 cores are shared):

* baseline: ``AutoModelForCausalLM.from_pretrained`` (bf16) -> ``PeftModel.from_pretrained(...)
  .merge_and_unload()`` -> ``save_pretrained`` (2 GB shards);
* sc2tune: ``python -m sc2tune merge ADAPTER --out OUT --base BASE --shard-size 2GB --no-verify``
  (verification is a separate, optional extra that loads base + adapter; ``--verify`` times it too).

Then every tensor of the two outputs is compared: it must be within one bfloat16 rounding step of PEFT's
(PEFT rounds the update to bf16 and then the sum again; sc2tune rounds the fp32 sum once).

Goals: peak RSS <= 0.5x the baseline, wall time <= 1.0x. Run: ``python bench/merge.py [--keep DIR] [--verify]``.

``--variant dora``: the same base with a DoRA adapter (same r and targets, random factors, magnitudes moved
off their initial norms). Measured alternately: sc2tune's merge of the plain LoRA adapter, sc2tune's merge of
the DoRA adapter, and PEFT's ``merge_and_unload`` of the DoRA adapter in bf16. Goal: DoRA's peak RSS within
1.2x of the plain LoRA merge (the norm of ``W + s B A`` needs one more float32 row-norm vector per tensor,
nothing model-sized). The tensor comparison with PEFT is reported, not a goal: PEFT's bf16 DoRA merge takes
the norm of a bf16 sum and rounds twice, sc2tune's is float32 with one rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BASELINE = textwrap.dedent("""
    import sys, torch
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    base, adapter, out = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(out, max_shard_size="2GB")
""")

SETUP = textwrap.dedent("""
    import sys, torch
    from peft import LoraConfig, get_peft_model
    from transformers import Starcoder2Config, Starcoder2ForCausalLM
    base, adapter = sys.argv[1:3]
    config = Starcoder2Config(
        vocab_size=49152, hidden_size=2048, intermediate_size=8192, num_hidden_layers=15,
        num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=16384, sliding_window=4096,
        hidden_act="gelu_pytorch_tanh", use_bias=True, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=True, residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = Starcoder2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    print(sum(p.numel() for p in model.parameters()))
    model.save_pretrained(base, max_shard_size="400MB")
    from sc2tune.tiny import load_bundled_tokenizer
    load_bundled_tokenizer().save_pretrained(base)  # the real StarCoder2 tokenizer, as a hub checkpoint has
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"])
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(adapter)
    if len(sys.argv) > 3:  # a DoRA adapter on the same base, for --variant dora
        dora = get_peft_model(peft_model.unload(), LoraConfig(r=16, lora_alpha=32, use_dora=True,
                                                              target_modules=lora.target_modules))
        with torch.no_grad():
            for name, param in dora.named_parameters():
                if "lora_magnitude_vector" in name:
                    param.mul_(1 + 0.02 * torch.randn_like(param))
                elif "lora_" in name:
                    param.normal_(0, 0.02)
        dora.save_pretrained(sys.argv[3])
""")


def run_measured(cmd: list[str], label: str) -> dict[str, float]:
    """Run ``cmd`` as a child process; return its wall time and peak RSS (ru_maxrss of that child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{label} failed:\n{output}")
    return {"wall_s": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "output": output}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Fastest wall time and highest peak RSS over repeated runs of one command."""
    return {"wall_s": min(r["wall_s"] for r in runs), "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
            "wall_s_all": [round(r["wall_s"], 1) for r in runs]}


def compare(ours: Path, peft: Path) -> dict[str, float]:
    """Every tensor of ``ours`` within one bfloat16 step of ``peft``'s (max step of the two values)."""
    import torch
    from safetensors import safe_open

    def tensors(folder: Path) -> dict[str, Path]:
        return {k: f for f in sorted(folder.glob("*.safetensors"))
                for k in safe_open(str(f), "pt").keys()}  # noqa: SIM118 - not iterable

    mine, theirs = tensors(ours), tensors(peft)
    missing = sorted(set(theirs) - set(mine))
    worst, equal, total, names = 0.0, 0, 0, 0
    for name, file in theirs.items():
        if name not in mine:
            continue
        with safe_open(str(file), "pt") as f:
            b = f.get_tensor(name).float()
        with safe_open(str(mine[name]), "pt") as f:
            a = f.get_tensor(name).float()
        mag = torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(torch.bfloat16).tiny)
        step = torch.exp2(torch.floor(torch.log2(mag)) - 7)  # bf16 spacing at that magnitude
        worst = max(worst, float(((a - b).abs() / step).max()))
        equal += int((a == b).sum())
        total += a.numel()
        names += 1
    return {"tensors": names, "missing": len(missing), "max_steps": worst, "equal_fraction": equal / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", help="build in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--verify", action="store_true", help="also time sc2tune merge with verification on")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each; the fastest counts")
    parser.add_argument("--variant", choices=["lora", "dora"], default="lora",
                        help="dora: DoRA merge vs plain LoRA merge of the same base (and vs PEFT's DoRA merge)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="sc2tune-bench-merge-"))
    root.mkdir(parents=True, exist_ok=True)
    base, adapter = root / "base", root / "adapter"
    py = sys.executable
    try:
        dora = root / "adapter-dora"
        if not (base / "tokenizer.json").is_file() or (args.variant == "dora" and not dora.is_dir()):
            out = subprocess.run([py, "-c", SETUP, str(base), str(adapter), str(dora)], check=True,
                                 capture_output=True, text=True).stdout
            print(f"synthetic base: {int(out.split()[0]) / 1e9:.3f}B parameters")
        if args.variant == "dora":
            dora_bench(root, base, adapter, dora, args.rounds)
            return
        shards = sorted(base.glob("model-*.safetensors"))
        print(f"base: {len(shards)} shards, {sum(f.stat().st_size for f in shards) / 1e9:.2f} GB bf16; "
              f"adapter: {(adapter / 'adapter_model.safetensors').stat().st_size / 1e6:.0f} MB")
        runs: dict[str, list[dict[str, float]]] = {"sc2tune": [], "peft": []}
        for _ in range(args.rounds):  # alternate the two, so a busy moment on shared cores hits both
            for name in ("sc2tune", "peft"):
                shutil.rmtree(root / name, ignore_errors=True)
            runs["sc2tune"].append(run_measured(
                [py, "-m", "sc2tune", "merge", str(adapter), "--out", str(root / "sc2tune"), "--base", str(base),
                 "--shard-size", "2GB", "--no-verify", "--no-progress"], "sc2tune merge"))
            runs["peft"].append(run_measured([py, "-c", BASELINE, str(base), str(adapter), str(root / "peft")],
                                             "PEFT merge"))
        ours, theirs = (best(runs[name]) for name in ("sc2tune", "peft"))
        check = compare(root / "sc2tune", root / "peft")
        result = {
            "peft": theirs, "sc2tune": ours, "rounds": args.rounds,
            "rss_ratio": ours["peak_rss_gb"] / theirs["peak_rss_gb"],
            "time_ratio": ours["wall_s"] / theirs["wall_s"],
            "tensors": check,
        }
        if args.verify:
            shutil.rmtree(root / "sc2tune-verified", ignore_errors=True)
            verified = run_measured([py, "-m", "sc2tune", "merge", str(adapter), "--out",
                                     str(root / "sc2tune-verified"), "--base", str(base), "--no-progress"],
                                    "sc2tune merge (verified)")
            result["sc2tune_verified"] = {k: v for k, v in verified.items() if k != "output"}
        print(f"PEFT merge_and_unload: {theirs['wall_s']:.1f} s, peak RSS {theirs['peak_rss_gb']:.2f} GB")
        print(f"sc2tune merge:         {ours['wall_s']:.1f} s, peak RSS {ours['peak_rss_gb']:.2f} GB (no verify)")
        if args.verify:
            v = result["sc2tune_verified"]
            print(f"sc2tune merge+verify:  {v['wall_s']:.1f} s, peak RSS {v['peak_rss_gb']:.2f} GB")
        print(f"peak RSS ratio {result['rss_ratio']:.2f}x (goal <= 0.5x), wall time ratio "
              f"{result['time_ratio']:.2f}x (goal <= 1.0x)")
        print(f"tensors: {check['tensors']} compared, {check['missing']} missing, max difference "
              f"{check['max_steps']:.2f} bf16 steps (goal <= 1), {check['equal_fraction']:.4%} bit-identical")
        print(json.dumps(result))
        ok = (result["rss_ratio"] <= 0.5 and result["time_ratio"] <= 1.0 and check["max_steps"] <= 1.0
              and check["missing"] == 0)
        print("PASS" if ok else "FAIL")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def dora_bench(root: Path, base: Path, adapter: Path, dora: Path, rounds: int) -> None:
    """--variant dora: sc2tune's DoRA merge against its plain LoRA merge and PEFT's DoRA merge."""
    py = sys.executable

    def ours(adapter_dir: Path, out: Path) -> list[str]:
        return [py, "-m", "sc2tune", "merge", str(adapter_dir), "--out", str(out), "--base", str(base),
                "--shard-size", "2GB", "--no-verify", "--no-progress"]

    runs: dict[str, list[dict[str, float]]] = {"lora": [], "dora": [], "peft-dora": []}
    for _ in range(rounds):
        for name in runs:
            shutil.rmtree(root / name, ignore_errors=True)
        runs["lora"].append(run_measured(ours(adapter, root / "lora"), "sc2tune merge (LoRA)"))
        runs["dora"].append(run_measured(ours(dora, root / "dora"), "sc2tune merge (DoRA)"))
        runs["peft-dora"].append(run_measured([py, "-c", BASELINE, str(base), str(dora), str(root / "peft-dora")],
                                              "PEFT merge (DoRA)"))
    lora_best, dora_best, peft_best = (best(runs[name]) for name in ("lora", "dora", "peft-dora"))
    check = compare(root / "dora", root / "peft-dora")
    result = {
        "variant": "dora", "rounds": rounds, "sc2tune_lora": lora_best, "sc2tune_dora": dora_best,
        "peft_dora": peft_best,
        "dora_vs_lora_rss": dora_best["peak_rss_gb"] / lora_best["peak_rss_gb"],
        "dora_vs_lora_time": dora_best["wall_s"] / lora_best["wall_s"],
        "dora_vs_peft_rss": dora_best["peak_rss_gb"] / peft_best["peak_rss_gb"],
        "dora_vs_peft_time": dora_best["wall_s"] / peft_best["wall_s"],
        "tensors_vs_peft_bf16": check,
    }
    print(f"sc2tune merge, LoRA:   {lora_best['wall_s']:.1f} s, peak RSS {lora_best['peak_rss_gb']:.2f} GB")
    print(f"sc2tune merge, DoRA:   {dora_best['wall_s']:.1f} s, peak RSS {dora_best['peak_rss_gb']:.2f} GB")
    print(f"PEFT merge, DoRA:      {peft_best['wall_s']:.1f} s, peak RSS {peft_best['peak_rss_gb']:.2f} GB")
    print(f"DoRA / LoRA: peak RSS {result['dora_vs_lora_rss']:.2f}x (goal <= 1.2x), wall time "
          f"{result['dora_vs_lora_time']:.2f}x; DoRA vs PEFT: peak RSS {result['dora_vs_peft_rss']:.2f}x, wall time "
          f"{result['dora_vs_peft_time']:.2f}x")
    print(f"tensors vs PEFT's bf16 DoRA merge: {check['tensors']} compared, {check['missing']} missing, max "
          f"difference {check['max_steps']:.2f} bf16 steps, {check['equal_fraction']:.4%} bit-identical")
    print(json.dumps(result))
    print("PASS" if result["dora_vs_lora_rss"] <= 1.2 and check["missing"] == 0 else "FAIL")


if __name__ == "__main__":
    main()
