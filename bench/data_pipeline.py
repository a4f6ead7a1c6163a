"""Data pipeline speed and packing efficiency.

    /work/venv/bin/python bench/data_pipeline.py [--source DIR] [--repeats 2] [--max-length 2048]

1. Speed. The corpus is the Python standard library on this machine (``*.py`` outside site-packages,
   about 30 MB), copied once into a temporary folder holding only the files sc2tune accepts, so both
   sides read exactly the same texts. Two whole processes, alternated ``--repeats`` times, best time
   of each kept:

   * baseline: read every file, one batched call of the fast tokenizer (``tokenizer(texts)``);
   * sc2tune: ``python -m sc2tune data RECIPE --json`` with task fim on the folder: scan and filter
     files, tokenise, cut into windows, character-level FIM (rate 0.5, half SPM), pack into rows of
     ``--max-length`` (best-fit decreasing), build the Arrow dataset.

   Reported: MB/s and tokens/s of each, and speed ratio = baseline seconds / sc2tune seconds
   (goal >= 0.7).

2. Packing efficiency on short instruction records: 2000 real records (docstring -> function, from the
   same standard library) whose Alpaca example is 150-600 tokens, task instruct at max_length 1024, via
   ``sc2tune data --json``: real tokens / (rows x 1024), packing on (goal >= 0.95) and off (context).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SPEED_GOAL, PACKING_GOAL = 0.7, 0.95

BASELINE = r"""
import sys, time
from pathlib import Path
from transformers import AutoTokenizer
root = Path(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
texts = [p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py"))]
ids = tokenizer(texts)["input_ids"]
print(sum(map(len, ids)))
"""


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def prepare_corpus(source: Path, out: Path) -> tuple[int, int]:
    """Copy the files sc2tune accepts (include *.py, exclude site-packages) to ``out``; (files, bytes)."""
    from sc2tune.data.code_folder import list_files, read_code_file

    files = size = 0
    for rel in list_files(source, ["*.py"], ["site-packages"]):
        reason, text = read_code_file(source, rel, 1_000_000)
        if reason is not None:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        files, size = files + 1, size + len(text.encode("utf-8"))
    return files, size


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout.strip().splitlines()[-1]


def write_recipe(path: Path, task: str, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"task": task, "data": data}))
    return path


def instruction_records(tokenizer, count: int, lo: int = 150, hi: int = 600) -> list[dict]:
    """Real records (docstring -> function source) whose Alpaca example is lo..hi tokens."""
    from sc2tune.data.templates import load_template

    template = load_template("alpaca")
    out: list[dict] = []
    root = _stdlib()
    for path in sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            code = ast.get_source_segment(source, node)
            if not doc or not code:
                continue
            record = {"instruction": doc.strip(), "input": "", "output": textwrap.dedent(code)}
            n = (len(tokenizer(template.render_prompt(record), add_special_tokens=False)["input_ids"])
                 + len(tokenizer(template.render_response(record), add_special_tokens=False)["input_ids"]) + 1)
            if lo <= n <= hi:
                out.append(record)
            if len(out) >= count:
                return out
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=_stdlib(), help="folder of Python code (default: stdlib)")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs of each side (best kept)")
    parser.add_argument("--max-length", type=int, default=2048, help="row length for the FIM run")
    parser.add_argument("--records", type=int, default=2000, help="instruction records for the packing run")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from sc2tune.tiny import TOKENIZER_DIR, load_bundled_tokenizer

    work = Path(tempfile.mkdtemp(prefix="sc2tune-bench-data-"))
    try:
        corpus = work / "corpus"
        files, size = prepare_corpus(args.source, corpus)
        print(f"corpus: {files} files, {size / 1e6:.1f} MB from {args.source}")
        if size < 20e6:
            print("warning: the corpus is smaller than 20 MB")
        recipe = write_recipe(work / "fim.yaml", "fim", {
            "train": str(corpus), "eval": None, "packing": True, "max_length": args.max_length,
            "fim": {"rate": 0.5, "spm_rate": 0.5}, "cache_dir": None})
        base_cmd = [PY, "-c", BASELINE, str(corpus), str(TOKENIZER_DIR)]
        pipe_cmd = [PY, "-m", "sc2tune", "data", str(recipe), "--json"]
        base_times, pipe_times = [], []
        for _ in range(args.repeats):
            t, out = timed(base_cmd)
            base_times.append(t)
            base_tokens = int(out)
            t, out = timed(pipe_cmd)
            pipe_times.append(t)
            stats = json.loads(out)
        tb, tp = min(base_times), min(pipe_times)
        print(f"baseline tokenizer(texts): {tb:6.2f} s  {size / 1e6 / tb:5.2f} MB/s  {base_tokens / tb:10,.0f} tokens/s"
              f"  (runs: {', '.join(f'{t:.2f}' for t in base_times)})")
        print(f"sc2tune data (fim+pack):   {tp:6.2f} s  {size / 1e6 / tp:5.2f} MB/s  {stats['tokens'] / tp:10,.0f} tokens/s"
              f"  (runs: {', '.join(f'{t:.2f}' for t in pipe_times)})")
        print(f"  {stats['examples']} files -> {stats['windows']} windows -> {stats['rows']} rows of {args.max_length}; "
              f"fim {stats['fim']}; packing efficiency {stats['packing_efficiency']:.4f}; "
              f"dropped tokens {stats['dropped_tokens']}; skipped files {stats['skipped_files']}")
        speed = tb / tp
        print(f"speed ratio (baseline s / sc2tune s): {speed:.2f}  goal >= {SPEED_GOAL}  "
              f"{'OK' if speed >= SPEED_GOAL else 'MISSED'}")

        tokenizer = load_bundled_tokenizer()
        records = instruction_records(tokenizer, args.records)
        data = work / "instruct.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        effs = {}
        for packing in (True, False):
            recipe = write_recipe(work / "instruct.yaml", "instruct", {
                "train": str(data), "eval": None, "packing": packing, "max_length": 1024, "cache_dir": None})
            _, out = timed([PY, "-m", "sc2tune", "data", str(recipe), "--json"])
            effs[packing] = json.loads(out)
        on, off = effs[True], effs[False]
        print(f"instruction records: {on['examples']} of 150-600 tokens ({on['tokens'] / on['examples']:.0f} mean), "
              f"max_length 1024")
        print(f"  packing on:  {on['rows']} rows, efficiency {on['packing_efficiency']:.4f}  goal >= {PACKING_GOAL}  "
              f"{'OK' if on['packing_efficiency'] >= PACKING_GOAL else 'MISSED'}")
        print(f"  packing off: {off['rows']} rows, efficiency {off['packing_efficiency']:.4f}")
        ok = speed >= SPEED_GOAL and on["packing_efficiency"] >= PACKING_GOAL
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
