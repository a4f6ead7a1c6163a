"""Lost-verdict stress run (issue #23 item 8b): thousands of trivial judged samples, several workers, the
CPU kept busy by busy-loop processes, and (``--rewrite``) a thread rewriting a copy of the sandbox's
package files the whole time, as a checkout of the tree under a running evaluation would.

    python bench/judge_stress.py [--samples 3000] [--workers 4] [--busy 1] [--rewrite]

Every sample is correct (``add`` returning ``a + b``), so every verdict must be "passed" on the first
run: printed are the status counts, the samples judged again after a lost verdict, and the wall time.
Exit status 1 when any verdict was not "passed" or had to be judged again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes competing for the CPU")
    parser.add_argument("--rewrite", action="store_true", help="rewrite a copy of the package files meanwhile")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import sc2tune.evaluation.sandbox as sandbox
    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.problems import Problem, Sample
    from sc2tune.evaluation.sandbox import SandboxLimits

    problem = Problem("add", "def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
    stop, threads = threading.Event(), []
    with tempfile.TemporaryDirectory() as tmp:
        if args.rewrite:  # the sandbox used to read its code from the package on every run; it reads it once now
            copy = Path(tmp) / "evaluation"
            shutil.copytree(Path(sandbox.__file__).parent, copy)
            texts = {p: p.read_text() for p in copy.glob("_*.py")}

            def rewrite() -> None:
                while not stop.is_set():
                    for path, text in texts.items():
                        path.write_text("")
                        time.sleep(0.002)
                        path.write_text(text)
                    time.sleep(0.05)

            threads.append(threading.Thread(target=rewrite, daemon=True))
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        for thread in threads:
            thread.start()
        start = time.monotonic()
        try:
            result = evaluate_code({"add": problem}, [Sample("add", "    return a + b\n")] * args.samples, ks=[1],
                                   limits=SandboxLimits(timeout=10.0), workers=args.workers, show_progress=False)
        finally:
            stop.set()
            for thread in threads:  # before the temporary folder goes: a rewrite under rmtree made it fail
                thread.join()
            for process in busy:
                process.kill()
                process.wait()
        seconds = time.monotonic() - start
    statuses = Counter(s.status for s in result.samples)
    again = sum(s.attempts > 1 for s in result.samples)
    print(f"{args.samples} samples, {args.workers} workers, {args.busy} busy loop(s)"
          f"{', package files rewritten meanwhile' if args.rewrite else ''}: {dict(statuses)}; "
          f"judged again after a lost verdict: {again}; {seconds:.0f} s")
    for sample in [s for s in result.samples if s.status != "passed"][:5]:
        print(f"  {sample}")
    return 0 if statuses == Counter(passed=args.samples) and not again else 1


if __name__ == "__main__":
    raise SystemExit(main())
