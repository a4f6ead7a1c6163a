"""Training speed and memory: sc2tune vs the TRL SFTTrainer + PEFT baseline, same model, data, LoRA and batch.

    /work/venv/bin/python bench/train_speed.py [--steps 8] [--warmup 2] [--threads 1] [--repeats 1]
                                               [--no-levers] [--no-fim]

Every configuration runs as a whole process (``python -m sc2tune train RECIPE ...`` or
``bench/_baseline_sft.py``), one after the other, on CPU, with ``--threads`` OpenMP threads each. Per run:

* tokens/s: non-padding input tokens / wall seconds inside optimizer steps (forward, backward, update),
  over the steps after ``--warmup``; both sides are measured the same way (sc2tune's metrics.jsonl has
  cumulative tokens, step seconds and step CPU seconds; the baseline counts tokens in ``training_step``
  and times steps with a callback). The same per CPU second of the process is printed too: on a shared
  machine wall time includes waiting for the CPU, CPU time does not;
* the fastest timed step's tokens/s: on a machine whose speed drifts over minutes (here: the same run's
  steps from 936 down to 305 tokens/s), the least disturbed figure of what the code can do;
* peak RSS of the whole process (``os.wait4`` rusage of the child; the largest of the process and its
  reaped children, not their sum);
* the losses of the first steps.

Runs per workload: baseline packing off and on, sc2tune packing off and on. The packing-off runs keep
the data order on both sides (sequential sampler; the padding is the same as in random order for this
data), so they see the same batches: step 1 must give the same loss (LoRA's B starts at zero, the model
is the base model), later steps drift apart only through dropout randomness. The packing-on runs use
each tool's defaults (shuffling, TRL's padding-free best-fit packing, sc2tune's best-fit packing).

Workloads: instruct (Alpaca prompt/completion records, completion-only loss) and FIM (every token
trained: sc2tune task fim on a folder of the same code vs TRL on a language-modelling text dataset; the
packing-off sc2tune run uses FIM rate 0, i.e. plain ``code<|endoftext|>`` documents, the very tokens of
the baseline, for the loss check; the packing-on run keeps the default FIM rate 0.5). The baseline's
better configuration (higher tokens/s) is the reference for the goals (instruct: tokens/s >= 6.0x,
peak RSS <= 0.4x; FIM: tokens/s >= 2.5x, peak RSS <= 0.5x), compared with sc2tune's faster configuration.

Repeats: with ``--repeats N`` every workload runs N rounds of its four configurations, the order
reversed every other round so a slow spell of the machine does not land on one side only. Each
configuration's tokens/s is the median over the rounds (peak RSS the largest), the ratios are taken from
those medians, and the ratio of every round on its own is printed with its median and range: on a machine
whose speed drifts over minutes, a ratio within one round (runs minutes apart) is steadier than any single
figure.

Levers (sc2tune, one change each from its packed instruct configuration, over the same steps): the
plain full-logits loss (``train.loss_impl=plain``), transformers' dense packed mask instead of
per-document attention (``train.packed_attention=dense``), PEFT's own LoRA dropout instead of sc2tune's
sparse one (``train.lora_dropout_impl=peft``), a smaller loss chunk
(``train.loss_chunk_size=256``), gradient checkpointing, dataloader workers, and packing off.

Results go to ``bench/results/train_speed-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from _bench_data import LORA, build_model, build_records, sc2tune_recipe, write_data  # noqa: E402

GOALS = {"instruct": (6.0, 0.4), "fim": (2.5, 0.5)}  # (min tokens/s ratio, max peak RSS ratio)


@dataclass
class RunResult:
    """One whole-process run."""

    name: str
    side: str  # "baseline" or "sc2tune"
    workload: str  # "instruct" or "fim"
    packing: bool
    wall_seconds: float
    peak_rss_mb: float
    steps: list[dict] = field(default_factory=list)  # {"step", "seconds", "cpu_seconds", "tokens", "loss"}
    tokens_per_second: float = 0.0  # non-padding input tokens per wall second of the timed steps
    tokens_per_cpu_second: float = 0.0  # the same per CPU second of the process (steadier on a shared machine)
    best_step_tokens_per_second: float = 0.0  # the fastest timed step: the least disturbed by a slow spell
    note: str = ""

    def rates(self, warmup: int, upto: int | None = None) -> tuple[float, float]:
        """(tokens per wall second, tokens per CPU second) over steps warmup+1 .. upto."""
        timed = [s for s in self.steps if warmup < s["step"] <= (upto or s["step"])]
        tokens = sum(s["tokens"] for s in timed)
        seconds, cpu = sum(s["seconds"] for s in timed), sum(s["cpu_seconds"] for s in timed)
        return (tokens / seconds if seconds > 0 else 0.0), (tokens / cpu if cpu > 0 else 0.0)

    def measure(self, warmup: int) -> None:
        self.tokens_per_second, self.tokens_per_cpu_second = self.rates(warmup)
        self.best_step_tokens_per_second = max(
            (s["tokens"] / s["seconds"] for s in self.steps if s["step"] > warmup and s["seconds"] > 0), default=0.0)

    def losses(self, n: int) -> list[float | None]:
        return [s["loss"] for s in self.steps[:n]]


def median_run(runs: list[RunResult]) -> RunResult:
    """One configuration over its rounds: median tokens/s (wall and CPU), largest peak RSS, round 1's steps."""
    first = runs[0]
    return RunResult(first.name, first.side, first.workload, first.packing,
                     statistics.median(r.wall_seconds for r in runs), max(r.peak_rss_mb for r in runs),
                     first.steps, statistics.median(r.tokens_per_second for r in runs),
                     statistics.median(r.tokens_per_cpu_second for r in runs),
                     max(r.best_step_tokens_per_second for r in runs),
                     first.note + (f" (median of {len(runs)} rounds)" if len(runs) > 1 else ""))


THREAD_ENV: dict[str, str] = {}


def run_process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd`` to completion; (wall seconds, peak RSS in MiB of the process and its reaped children)."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **THREAD_ENV, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")
    return wall, usage.ru_maxrss / 1024.0


def sc2tune_steps(metrics: Path) -> list[dict]:
    """Per-step seconds, CPU seconds, tokens and loss from sc2tune's metrics.jsonl (cumulative figures)."""
    steps, prev = [], {"input_tokens": 0, "step_seconds": 0.0, "step_cpu_seconds": 0.0}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" not in row or "input_tokens" not in row:
            continue
        steps.append({"step": row["step"], "seconds": row["step_seconds"] - prev["step_seconds"],
                      "cpu_seconds": row["step_cpu_seconds"] - prev["step_cpu_seconds"],
                      "tokens": row["input_tokens"] - prev["input_tokens"], "loss": row["loss"]})
        prev = row
    return steps


class Bench:
    """Runs the configurations and keeps their results."""

    def __init__(self, work: Path, model: Path, data: dict[str, Path], args: argparse.Namespace) -> None:
        self.work, self.model, self.data, self.args = work, model, data, args
        self.results: list[RunResult] = []

    def baseline(self, name: str, workload: str, packing: bool, steps: int, *, sequential: bool = False
                 ) -> RunResult:
        out = self.work / name
        result_file = self.work / f"{name}.json"
        cmd = [sys.executable, str(BENCH / "_baseline_sft.py"), "--model", str(self.model),
               "--data", str(self.data["prompt_completion" if workload == "instruct" else "text"]),
               "--kind", "instruct" if workload == "instruct" else "text", "--packing", str(int(packing)),
               "--max-steps", str(steps), "--batch", str(self.args.batch), "--max-length", "1024",
               "--result", str(result_file), "--output-dir", str(out)]
        if sequential:
            cmd.append("--sequential")
        note = "data order" if sequential else "TRL default order"
        return self._record(name, "baseline", workload, packing, cmd,
                            lambda: json.loads(result_file.read_text())["steps"], note=note)

    def sc2tune(self, name: str, workload: str, packing: bool, steps: int, *, extra: tuple[str, ...] = (),
                note: str = "") -> RunResult:
        """One sc2tune run; ``extra``: recipe overrides (``key=value``), e.g. the levers' ``train.loss_impl=plain``."""
        out = self.work / name
        recipe = sc2tune_recipe(self.work / f"{name}.yaml", model=self.model,
                                train=self.data["instruct"] if workload == "instruct" else self.data["code"],
                                task="instruct" if workload == "instruct" else "fim", packing=packing, steps=steps,
                                batch=self.args.batch, output_dir=out)
        cmd = [sys.executable, "-m", "sc2tune", "train", str(recipe), *LORA, *extra, "--no-progress"]
        return self._record(name, "sc2tune", workload, packing, cmd, lambda: sc2tune_steps(out / "metrics.jsonl"),
                            note=note)

    def _record(self, name, side, workload, packing, cmd, read_steps, note="") -> RunResult:
        print(f"  running {name} ...", end=" ", flush=True)
        wall, rss = run_process(cmd, self.work / f"{name}.log")
        result = RunResult(name, side, workload, packing, wall, rss, read_steps(), note=note)
        result.measure(self.args.warmup)
        print(f"{result.tokens_per_second:,.0f} tok/s ({result.tokens_per_cpu_second:,.0f} per CPU s), "
              f"peak RSS {rss:,.0f} MiB, {wall:.0f} s")
        self.results.append(result)
        return result


CONFIGS = ("baseline-packing-off", "baseline-packing-on", "sc2tune-packing-off", "sc2tune-packing-on")


def run_config(bench: Bench, workload: str, k: int, tag: str = "") -> RunResult:
    """Configuration ``CONFIGS[k]`` of ``workload``. Packing off: both sides in data order (same batches: the
    loss check); FIM rate 0 there, so sc2tune renders plain ``code<|endoftext|>`` documents, the very tokens of
    the baseline's text dataset. Packing on: each tool's defaults."""
    name, steps = f"{workload}-{CONFIGS[k]}{tag}", bench.args.steps
    if k == 0:
        return bench.baseline(name, workload, False, steps, sequential=True)
    if k == 1:
        return bench.baseline(name, workload, True, steps)
    if k == 2:
        extra = ("train.shuffle=false",) + (("data.fim.rate=0",) if workload == "fim" else ())
        return bench.sc2tune(name, workload, False, steps, extra=extra,
                             note="data order" + (", FIM rate 0" if workload == "fim" else ""))
    return bench.sc2tune(name, workload, True, steps,
                         note="recipe defaults" + (" (FIM rate 0.5)" if workload == "fim" else ""))


def best(results: list[RunResult]) -> RunResult:
    return max(results, key=lambda r: r.tokens_per_second)


def compare(workload: str, base: list[RunResult], ours: list[RunResult]) -> dict:
    """Ratios of sc2tune's better configuration to the baseline's better one (and like for like)."""
    b, o = best(base), best(ours)
    speed_goal, rss_goal = GOALS[workload]
    speed, rss = o.tokens_per_second / b.tokens_per_second, o.peak_rss_mb / b.peak_rss_mb
    cpu_speed = max(r.tokens_per_cpu_second for r in ours) / max(r.tokens_per_cpu_second for r in base)
    step_speed = (max(r.best_step_tokens_per_second for r in ours)
                  / max(r.best_step_tokens_per_second for r in base))
    like = {}
    for r in ours:
        twin = next((x for x in base if x.packing == r.packing), None)
        if twin is not None:
            like[f"packing={'on' if r.packing else 'off'}"] = {
                "tokens_per_second_ratio": r.tokens_per_second / twin.tokens_per_second,
                "tokens_per_cpu_second_ratio": r.tokens_per_cpu_second / twin.tokens_per_cpu_second,
                "peak_rss_ratio": r.peak_rss_mb / twin.peak_rss_mb}
    return {"baseline_best": b.name, "sc2tune_best": o.name, "tokens_per_second_ratio": speed,
            "tokens_per_cpu_second_ratio": cpu_speed, "best_step_tokens_per_second_ratio": step_speed,
            "peak_rss_ratio": rss,
            "goal_tokens_per_second_ratio": speed_goal, "goal_peak_rss_ratio": rss_goal,
            "meets_speed_goal": speed >= speed_goal, "meets_speed_goal_per_cpu_second": cpu_speed >= speed_goal,
            "meets_memory_goal": rss <= rss_goal, "like_for_like": like}


def print_table(title: str, rows: list[RunResult], n_losses: int = 3) -> None:
    print(f"\n{title}")
    print(f"  {'configuration':32s} {'tokens/s':>9s} {'tok/CPU s':>9s} {'best step':>9s} {'peak RSS MiB':>12s} "
          f"{'wall s':>6s}  first losses")
    for r in rows:
        losses = " ".join(f"{x:.4f}" if x is not None else "-" for x in r.losses(n_losses))
        print(f"  {r.name:32s} {r.tokens_per_second:9,.0f} {r.tokens_per_cpu_second:9,.0f} "
              f"{r.best_step_tokens_per_second:9,.0f} {r.peak_rss_mb:12,.0f} {r.wall_seconds:6.0f}  {losses}")


def print_comparison(workload: str, c: dict) -> None:
    ok = lambda flag: "MET" if flag else "MISSED"  # noqa: E731
    print(f"\n{workload}: sc2tune ({c['sc2tune_best']}) vs the baseline's better configuration ({c['baseline_best']})")
    print(f"  tokens/s ratio  {c['tokens_per_second_ratio']:6.2f}x  (goal >= {c['goal_tokens_per_second_ratio']}x: "
          f"{ok(c['meets_speed_goal'])})")
    print(f"  per CPU second  {c['tokens_per_cpu_second_ratio']:6.2f}x  (goal >= {c['goal_tokens_per_second_ratio']}x: "
          f"{ok(c['meets_speed_goal_per_cpu_second'])}; the steadier figure when the machine is shared)")
    print(f"  fastest steps   {c['best_step_tokens_per_second_ratio']:6.2f}x  (each side's fastest timed step: "
          "what either reaches when the machine leaves it alone)")
    print(f"  peak RSS ratio  {c['peak_rss_ratio']:6.2f}x  (goal <= {c['goal_peak_rss_ratio']}x: "
          f"{ok(c['meets_memory_goal'])})")
    for key, v in c["like_for_like"].items():
        print(f"  like for like, {key}: tokens/s {v['tokens_per_second_ratio']:.2f}x "
              f"(per CPU s {v['tokens_per_cpu_second_ratio']:.2f}x), peak RSS {v['peak_rss_ratio']:.2f}x")


def loss_check(workload: str, base: RunResult, ours: RunResult, n: int, tolerance: float = 1e-4) -> dict:
    """The data-order runs see the same batches: step 1 must agree (LoRA B = 0: the model is the base)."""
    pairs = list(zip(base.losses(n), ours.losses(n), strict=True))
    rel = abs(pairs[0][0] - pairs[0][1]) / abs(pairs[0][0])
    print(f"\nloss check ({workload}; {base.name} vs {ours.name}, same batches): step: baseline / sc2tune")
    for i, (a, b) in enumerate(pairs, 1):
        print(f"  {i}: {a:.5f} / {b:.5f}  (diff {b - a:+.1e})")
    print(f"  step-1 relative difference {rel:.1e} (tolerance {tolerance:g}): {'OK' if rel <= tolerance else 'MISMATCH'}")
    return {"baseline": [a for a, _ in pairs], "sc2tune": [b for _, b in pairs], "step1_relative_diff": rel,
            "tolerance": tolerance, "step1_matches": rel <= tolerance}


def main() -> None:
    p = argparse.ArgumentParser(description="sc2tune vs TRL SFTTrainer + PEFT: tokens/s, peak RSS, first losses")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    p.add_argument("--lever-steps", type=int, default=5, help="optimizer steps per lever run (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing (default 2)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--records", type=int, default=500, help="instruction records to build (default 500)")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of each workload's four runs, every other round in reverse order; medians count")
    p.add_argument("--no-levers", action="store_true", help="skip the per-lever sc2tune runs")
    p.add_argument("--no-fim", action="store_true", help="skip the FIM workload")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads of every child process (default 1: on a shared machine, "
                   "oversubscribed OpenMP barriers make multi-threaded timings swing several-fold; 0 = library default)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, runs)")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    started = time.perf_counter()
    if args.threads > 0:
        THREAD_ENV.update({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)})

    from transformers import AutoTokenizer

    from sc2tune.data.templates import load_template

    work = Path(tempfile.mkdtemp(prefix="sc2tune-bench-"))
    print(f"work folder: {work}")
    model = build_model(work / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    template = load_template("alpaca")
    records = build_records(tokenizer, template, count=args.records)
    data = write_data(work / "data", records, template)
    mean_tokens = sum(r.tokens for r in records) / len(records)
    print(f"model: StarCoder2 4 layers, hidden 256, vocab 49152 (random weights); data: {len(records)} stdlib "
          f"functions, {mean_tokens:.0f} tokens per Alpaca example on average")
    bench = Bench(work, model, data, args)
    report: dict = {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "batch": args.batch,
                    "records": len(records),
                    "mean_example_tokens": mean_tokens, "threads": args.threads or "default",
                    "cpu_count": os.cpu_count()}

    workloads = ["instruct"] + ([] if args.no_fim else ["fim"])
    medians: dict[str, list[RunResult]] = {}  # workload -> its four configurations (CONFIGS order)
    for workload in workloads:
        print(f"\n[{workload}]")
        rounds: list[list[RunResult]] = []
        for i in range(args.repeats):
            tag = f"-r{i + 1}" if args.repeats > 1 else ""
            order = range(4) if i % 2 == 0 else range(3, -1, -1)  # every other round reversed: drift hits both
            if args.repeats > 1:
                print(f"  round {i + 1}/{args.repeats}")
            done = {k: run_config(bench, workload, k, tag) for k in order}
            rounds.append([done[k] for k in range(4)])
        runs = [median_run([r[k] for r in rounds]) for k in range(4)]
        for r, name in zip(runs, CONFIGS, strict=True):
            r.name = f"{workload}-{name}"
        medians[workload] = runs
        base, ours = runs[:2], runs[2:]
        print_table(f"{workload} ({args.steps} steps, first {args.warmup} untimed)", base + ours)
        report[workload] = compare(workload, base, ours)
        report[workload]["loss_check"] = loss_check(workload, base[0], ours[0], min(args.steps, 5))
        if args.repeats > 1:
            per_round = [compare(workload, r[:2], r[2:])["tokens_per_second_ratio"] for r in rounds]
            report[workload]["rounds_tokens_per_second_ratio"] = per_round
            print(f"\n{workload}: best/best tokens/s ratio per round: "
                  + ", ".join(f"{x:.2f}x" for x in per_round)
                  + f"; median {statistics.median(per_round):.2f}x, range {min(per_round):.2f}-{max(per_round):.2f}x")
        print_comparison(workload, report[workload])

    if not args.no_levers:
        print("\n[levers: sc2tune instruct, one change each from packing on]")
        unpacked, reference = medians["instruct"][2:]  # unpacked: data order
        levers = [
            bench.sc2tune("lever-plain-full-logits-loss", "instruct", True, args.lever_steps,
                          extra=("train.loss_impl=plain",), note="full logits + F.cross_entropy"),
            bench.sc2tune("lever-dense-masked-attention", "instruct", True, args.lever_steps,
                          extra=("train.packed_attention=dense",), note="transformers sdpa + (B,1,L,L) packed mask"),
            bench.sc2tune("lever-plain-lora-dropout", "instruct", True, args.lever_steps,
                          extra=("train.lora_dropout_impl=peft",), note="PEFT's nn.Dropout (one draw per element)"),
            bench.sc2tune("lever-loss-chunk-256", "instruct", True, args.lever_steps,
                          extra=("train.loss_chunk_size=256",), note="default 1024"),
            bench.sc2tune("lever-gradient-checkpointing", "instruct", True, args.lever_steps,
                          extra=("train.gradient_checkpointing=true",)),
            bench.sc2tune("lever-dataloader-workers-2", "instruct", True, args.lever_steps,
                          extra=("train.dataloader_workers=2",)),
        ]
        print_table("levers (relative to instruct-sc2tune-packing-on)", [reference, unpacked, *levers])
        # the reference over the same steps as the lever runs (same batches); packing off sees other batches
        ref_wall, ref_cpu = reference.rates(args.warmup, args.lever_steps)
        report["levers"] = {r.name: {
            "tokens_per_second_vs_reference": r.tokens_per_second / ref_wall,
            "tokens_per_cpu_second_vs_reference": r.tokens_per_cpu_second / ref_cpu,
            "peak_rss_vs_reference": r.peak_rss_mb / reference.peak_rss_mb, "note": r.note}
            for r in [unpacked, *levers]}
        for name, v in report["levers"].items():
            print(f"  {name:32s} tokens/s {v['tokens_per_second_vs_reference']:.2f}x "
                  f"(per CPU s {v['tokens_per_cpu_second_vs_reference']:.2f}x), "
                  f"peak RSS {v['peak_rss_vs_reference']:.2f}x")

    report["runs"] = [asdict(r) for r in bench.results]
    report["total_seconds"] = time.perf_counter() - started
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    target = results_dir / f"train_speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, target)
    print(f"\nresults: {target}  (total {report['total_seconds']:.0f} s)")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
