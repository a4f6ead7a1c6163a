"""Benchmark: how long the first commands a new user types take, as whole processes, against the baseline.

Measured, each as its own ``python -m sc2tune ...`` process (wall time around the process), for this tree
and for the baseline commit (default ``8150300``: main when issue #16 was filed), which is checked out into a
temporary ``git worktree add --detach`` and run with ``PYTHONPATH`` pointing at it (removed afterwards):

* ``--help``, ``schema``;
* ``validate recipes/quickstart/fim.yaml`` (tokenizer and LoRA targets of the built-in model);
* ``plan recipes/starcoder2-15b/alpaca-qlora.yaml --gpu-memory 24GB`` (15B from its bundled config);
* the time until the error for a hub id that cannot be fetched: ``train recipes/quickstart/alpaca.yaml
  model.name_or_path=bigcode/starcoder2-3b`` with ``HF_HUB_OFFLINE`` unset, ``HF_ENDPOINT`` at a loopback port
  nothing listens on (as tests/test_hub.py simulates an unreachable hub; no traffic leaves the machine) and an
  empty ``HF_HOME`` (nothing cached). It must exit non-zero, naming the hub id.

The other commands run with ``HF_HUB_OFFLINE=1``. Each command runs once as a warm-up (page cache, .pyc files,
the built-in model's cache folder), then ``--runs`` times (default 5); the median counts. The hub case runs
``--hub-runs`` times (default 1, no warm-up: the baseline spends over a minute in retries there, so one run
says it). Printed: each median, new/old. Goals (issue #16): validate <= 3 s, plan <= 2 s on an idle machine.

Run: ``python bench/startup.py [--runs 5] [--hub-runs 1] [--baseline 8150300] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _revision import checked_out

REPO = Path(__file__).resolve().parents[1]
BASELINE = "8150300"
HUB_ID = "bigcode/starcoder2-3b"

#: (label, arguments); the hub case is added by :func:`_cases` (it needs a scratch folder).
COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("schema", ["schema"]),
    ("validate quickstart/fim", ["validate", "recipes/quickstart/fim.yaml"]),
    ("plan starcoder2-15b/alpaca-qlora", ["plan", "recipes/starcoder2-15b/alpaca-qlora.yaml", "--gpu-memory", "24GB"]),
]
HUB_LABEL = "hub id offline -> error"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tree: Path, *, hub_home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"}
    if hub_home is None:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(hub_home))
    return env


def _run(tree: Path, args: list[str], env: dict[str, str], *, expect_error: bool) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sc2tune", *args], cwd=tree, env=env, capture_output=True,
                         text=True, timeout=900)
    seconds = time.perf_counter() - start
    if expect_error:
        if out.returncode == 0 or HUB_ID not in out.stderr:
            raise SystemExit(f"{tree}: expected the hub error, got exit {out.returncode}:\n{out.stderr[-2000:]}")
    elif out.returncode != 0:
        raise SystemExit(f"{tree}: sc2tune {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return seconds


def measure(tree: Path, scratch: Path, *, runs: int, hub_runs: int) -> dict[str, float]:
    """Median wall seconds of each command in ``tree``."""
    results: dict[str, float] = {}
    for label, args in COMMANDS:
        env = _env(tree)
        _run(tree, args, env, expect_error=False)  # warm-up
        results[label] = statistics.median(_run(tree, args, env, expect_error=False) for _ in range(runs))
        print(f"  {label:<34} {results[label]:7.2f} s", flush=True)
    times = []
    for i in range(hub_runs):
        home = scratch / f"hf-{tree.name}-{i}"
        home.mkdir(parents=True)
        args = ["train", "recipes/quickstart/alpaca.yaml", f"model.name_or_path={HUB_ID}",
                f"output_dir={scratch / f'run-{tree.name}-{i}'}", "--no-progress"]
        times.append(_run(tree, args, _env(tree, hub_home=home), expect_error=True))
    results[HUB_LABEL] = statistics.median(times)
    print(f"  {HUB_LABEL:<34} {results[HUB_LABEL]:7.2f} s", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command after one warm-up")
    parser.add_argument("--hub-runs", type=int, default=1, help="timed runs of the offline hub-id error")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="sc2tune-startup-") as tmp:
        scratch = Path(tmp)
        with checked_out(args.baseline, scratch / "baseline") as base:
            print(f"current tree ({REPO}):", flush=True)
            new = measure(REPO, scratch, runs=args.runs, hub_runs=args.hub_runs)
            print(f"baseline {args.baseline}:", flush=True)
            old = measure(base, scratch, runs=args.runs, hub_runs=args.hub_runs)
    print(f"\n{'command':<34} {'new s':>8} {'old s':>8} {'new/old':>8}")
    for label in new:
        print(f"{label:<34} {new[label]:8.2f} {old[label]:8.2f} {new[label] / old[label]:8.2f}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"new": new, "old": old, "baseline": args.baseline, "runs": args.runs,
                                         "hub_runs": args.hub_runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
