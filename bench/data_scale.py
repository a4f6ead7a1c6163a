"""Data at the scale of a real codebase: prepared into a cache folder in bounded memory vs with the cache off.

    /work/venv/bin/python bench/data_scale.py [--copies 1 10] [--workers 2] [--baseline-max-copies 3]
        [--workload fim instruct]
    /work/venv/bin/python bench/data_scale.py --quick     # instruct only, 1x and 10x, no 2-worker run

Workload fim: N copies of this machine's Python standard library (the ``*.py`` files sc2tune accepts, outside
site-packages; about 31 MB a copy), as ``copy-K/`` sub-folders of one folder. Copies are hard links of one
prepared copy (no disk space; the page cache holds one copy, so reading is a little cheaper than
N distinct files would be; tokenising, FIM, packing and writing are not). Recipe: task fim, rate 0.5,
half SPM, packing on, max_length 2048, data.eval null.

Workload instruct: one JSONL file of N x R records (R: every stdlib function with a docstring, as an
Alpaca record: the docstring as the instruction, the function's source as the output; copy k repeats them
with "(k)" appended to each instruction), task instruct, packing on, max_length 2048, data.eval 0.05
(so the held-out split is drawn over all N x R records, as a user would).

For each N, whole processes of ``python -m sc2tune data RECIPE --json``:

* baseline: the cache off (``data.cache_dir=null``: the same pipeline into a temporary folder, removed at
  exit; until issue 25 it was a separate in-memory build, ~25 bytes of RAM per byte of code); only up to
  ``--baseline-max-copies``;
* prepare: ``--prepare`` into a fresh cache folder, one worker (``data.num_proc`` unset);
* prepare, ``--workers`` workers (``data.num_proc=W``), fresh cache folder;
* hit: ``--prepare`` again on the first cache folder;
* (fim) verify: the checks a hit makes on the prepared files, timed in this process: ``stat`` (size and a
  hash of each file's first and last 64 KiB) against ``content`` (sha256 of every byte);
* (fim) one file changed: one file of ``copy-0`` (the middle one in path order; given an inode of its own
  before the first build, so the other copies keep theirs) gets a line appended, then ``--prepare`` again on the first cache
  folder: only the chunks that hold it are rebuilt (chunks built / reused read from the new meta.json);
  ratio to the fresh build (goal <= 0.10).

With ``--train-copies N``: ``sc2tune train`` (built-in tiny model, 3 steps, fresh cache) as one process and
under ``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU): the data log must show one build,
and the tree's peak memory is compared.

Measured: wall seconds and CPU seconds (user + system of the process and its workers: steadier than
wall time on a shared machine); peak memory of the whole process tree (the sum of PSS over the process
and its workers, sampled every 0.1 s from /proc: pages the forked workers share count once) and
ru_maxrss (the largest single process, from wait4); the statistics.
Printed: the goals of issue 11 and ratios (prepare / baseline, 10x / 1x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GiB = 2**30


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss(pid: int, *, skip_root: bool = False) -> int:
    """Proportional set size of ``pid`` and all its descendants (from /proc): pages shared by forked
    workers count once in the sum, unlike RSS."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _pss(p) if p != pid or not skip_root else 0
        todo.extend(children.get(p, []))
    return total


def measure(cmd: list[str], *, skip_root: bool = False) -> dict:
    """Run ``cmd``; wall and CPU seconds (the process and its workers), peak tree PSS, ru_maxrss (largest
    single process), the statistics (last stdout line) and the data log lines. ``skip_root``: leave the
    process itself out of the memory sum (a launcher whose children do the work)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"})
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_pss(proc.pid, skip_root=skip_root))
            time.sleep(0.1)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"command failed: {' '.join(cmd)}\n{err.read()[-3000:]}")
        text = out.read()
        log = [line for line in err.read().splitlines() if "sc2tune.data" in line]
    lines = text.strip().splitlines()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "tree_rss": peak, "maxrss": usage.ru_maxrss * 1024,
            "stats": json.loads(lines[-1]), "log": log}


def train_check(work: Path, corpus: Path, max_length: int) -> dict:
    """``sc2tune train`` (tiny model, 3 steps, fresh cache) in one process, then under
    ``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU), fresh cache: builds counted from the log."""
    import yaml

    runs = {}
    for name, launcher in (("1 process", [PY, "-m", "sc2tune"]),
                           ("2 processes", [PY, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                                            "-m", "sc2tune"])):
        tag = name.replace(" ", "-")
        recipe = work / f"train-{tag}.yaml"
        recipe.write_text(yaml.safe_dump({"task": "fim", "output_dir": str(work / f"run-{tag}"), "data": {
            "train": str(corpus), "eval": None, "packing": True, "max_length": max_length,
            "cache_dir": str(work / f"cache-train-{tag}")},
            "train": {"max_steps": 3, "batch_size": 1, "logging_steps": 1, "save_steps": 1000}}))
        # under accelerate the ranks are the children of the launcher process, which is left out
        m = measure([*launcher, "train", str(recipe), "--no-progress", "--json"], skip_root=name != "1 process")
        m["builds"] = sum("cache miss" in line for line in m["log"])
        m["hits"] = sum("cache hit" in line for line in m["log"])
        print(f"  train, {name:<12} {m['wall']:7.1f} s  cpu {m['cpu']:7.1f} s  tree PSS {m['tree_rss'] / GiB:5.2f} GiB  "
              f"maxrss {m['maxrss'] / GiB:5.2f} GiB  builds {m['builds']}, hits {m['hits']}", flush=True)
        runs[name] = m
    one, two = runs["1 process"], runs["2 processes"]
    print(f"  2 processes / 1 process: tree PSS {two['tree_rss'] / one['tree_rss']:.2f}x (goal <= 2; the ranks, "
          f"without the launcher); one build: {two['builds'] == 1}")
    return runs


def build_corpus(work: Path, copies: int, base: Path) -> Path:
    """``copies`` hard-linked copies of ``base`` under one folder."""
    corpus = work / f"corpus-{copies}x"
    for k in range(copies):
        for src in base.rglob("*.py"):
            target = corpus / f"copy-{k}" / src.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, target)
    return corpus


def instruct_records(source: Path, limit: int = 8000) -> list[dict]:
    """Alpaca records from the functions of ``source`` with a docstring (instruction = docstring, output =
    the function's source lines), sorted files, at most ``limit`` characters of output each."""
    import ast
    import textwrap

    out = []
    for path in sorted(p for p in source.rglob("*.py") if "site-packages" not in p.parts):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = text.splitlines(keepends=True)  # ast.get_source_segment splits the file on every call
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                code = "".join(lines[node.lineno - 1:node.end_lineno or node.lineno])
                if doc and code and len(code) <= limit:
                    out.append({"instruction": doc.strip(), "input": "", "output": textwrap.dedent(code)})
    return out


def build_jsonl(work: Path, copies: int, records: list[dict]) -> Path:
    """``copies`` x ``records`` as one JSONL file (copy k's instructions end in " (k)")."""
    path = work / f"instruct-{copies}x.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(copies):
            for r in records:
                fh.write(json.dumps({**r, "instruction": f"{r['instruction']} ({k})"}) + "\n")
    return path


def verify_times(cache: Path) -> dict:
    """Seconds the two kinds of check take on the newest prepared folder in ``cache`` (module doc)."""
    from sc2tune.data.store import verified_meta

    folder = max((p for p in cache.iterdir() if (p / "meta.json").is_file() and p.name != "chunks"),
                 key=lambda p: p.stat().st_mtime)
    out = {"bytes": sum(f["size"] for f in json.loads((folder / "meta.json").read_text())["files"].values())}
    verified_meta(cache, folder, full=False)  # imports and the first page faults counted in neither
    for name, full in (("stat", False), ("content", True)):
        start, cpu = time.perf_counter(), time.process_time()
        verified_meta(cache, folder, full=full)
        out[name], out[f"{name}_cpu"] = time.perf_counter() - start, time.process_time() - cpu
    return out


def isolate_one_file(corpus: Path) -> Path:
    """The middle file of ``copy-0`` (path order) as a file of its own: its hard link, shared by every copy, is
    replaced by a copy of the bytes *before* the first build (unlinking changes the shared inode's ctime,
    which the default ``data.cache_check: stat`` sees in every copy)."""
    files = sorted((corpus / "copy-0").rglob("*.py"))
    path = files[len(files) // 2]
    text = path.read_bytes()
    path.unlink()
    path.write_bytes(text)
    return path


def change_one_file(path: Path) -> None:
    """Append a line to ``path`` (module doc)."""
    with open(path, "ab") as fh:
        fh.write(b"\n# changed by bench/data_scale.py\n")


def newest_chunks(cache: Path) -> dict:
    """The chunks built / reused recorded by the newest prepared folder in ``cache``."""
    folder = max((p for p in cache.iterdir() if (p / "meta.json").is_file() and p.name != "chunks"),
                 key=lambda p: p.stat().st_mtime)
    return json.loads((folder / "meta.json").read_text())["chunks"]


def row(name: str, m: dict) -> str:
    s = m["stats"]
    return (f"  {name:<28} {m['wall']:7.1f} s  cpu {m['cpu']:7.1f} s  tree PSS {m['tree_rss'] / GiB:5.2f} GiB  "
            f"maxrss {m['maxrss'] / GiB:5.2f} GiB"
            f"  {s['tokens']:>11,} tokens  {s['rows']:>7,} rows  eff {s['packing_efficiency']:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, nargs="*", default=[1, 10], help="corpus sizes, in stdlib copies")
    parser.add_argument("--workers", type=int, default=2, help="data.num_proc of the parallel run")
    parser.add_argument("--baseline-max-copies", type=int, default=3,
                        help="run the cache-off baseline (data.cache_dir=null) only up to this many copies")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--source", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--train-copies", type=int, default=0,
                        help="also train 3 steps on this many copies, 1 process vs accelerate 2 processes (0: skip)")
    parser.add_argument("--train-max-length", type=int, default=512)
    parser.add_argument("--workload", nargs="+", choices=["fim", "instruct"], default=["fim", "instruct"],
                        help="fim: N copies of the stdlib as a code folder; instruct: N x the stdlib's documented "
                        "functions as one Alpaca JSONL file")
    parser.add_argument("--quick", action="store_true",
                        help="instruct only, 1x and 10x, no 2-worker run (baseline at 1x, prepare, hit)")
    args = parser.parse_args()
    if args.quick:
        args.workload, args.copies, args.workers = ["instruct"], [1, 10], 1
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import yaml
    from data_pipeline import prepare_corpus

    work = Path(tempfile.mkdtemp(prefix="sc2tune-bench-scale-"))
    results: dict = {}
    try:
        size = 0
        if "fim" in args.workload or args.train_copies:
            files, size = prepare_corpus(args.source, work / "base")
            print(f"one copy: {files} files, {size / 1e6:.1f} MB from {args.source}")
        records = instruct_records(args.source) if "instruct" in args.workload else []
        if records:
            print(f"instruct: {len(records)} records a copy (stdlib functions with a docstring)")
        for workload in args.workload:
            for n in args.copies:
                if workload == "fim":
                    corpus = build_corpus(work, n, work / "base")
                    spec = {"task": "fim", "data": {"train": str(corpus), "eval": None, "packing": True,
                                                    "max_length": args.max_length,
                                                    "fim": {"rate": 0.5, "spm_rate": 0.5}}}
                    what = f"{n * size / 1e6:.0f} MB of code"
                else:
                    corpus = build_jsonl(work, n, records)
                    spec = {"task": "instruct", "data": {"train": str(corpus), "eval": 0.05, "packing": True,
                                                         "max_length": args.max_length}}
                    what = f"{n * len(records):,} records, {corpus.stat().st_size / 1e6:.0f} MB of JSONL"
                if workload == "fim":
                    changed = isolate_one_file(corpus)
                recipe = work / f"{workload}-{n}x.yaml"
                recipe.write_text(yaml.safe_dump(spec))
                data = [PY, "-m", "sc2tune", "data", str(recipe)]
                runs: dict[str, dict] = {}
                print(f"\n{workload} {n}x ({what}):", flush=True)
                if n <= args.baseline_max_copies:
                    runs["baseline"] = measure([*data, "data.cache_dir=null", "--json"])
                    print(row("baseline (cache off)", runs["baseline"]), flush=True)
                cache = work / f"cache-{n}x"
                runs["prepare"] = measure([*data, f"data.cache_dir={cache}", "--prepare", "--json"])
                print(row("prepare, 1 worker", runs["prepare"]), flush=True)
                runs["hit"] = measure([*data, f"data.cache_dir={cache}", "--prepare", "--json"])
                print(row("prepare again (cache hit)", runs["hit"]), flush=True)
                if workload == "fim":
                    runs["verify"] = verify_times(cache)
                    v = runs["verify"]
                    print(f"  verify {v['bytes'] / 1e6:.0f} MB of prepared rows: stat (size + ends) {v['stat']:.3f} s "
                          f"(cpu {v['stat_cpu']:.3f} s), content (sha256) {v['content']:.2f} s (cpu "
                          f"{v['content_cpu']:.2f} s)", flush=True)
                    runs["first_chunks"] = newest_chunks(cache)
                    change_one_file(changed)
                    runs["one_file"] = measure([*data, f"data.cache_dir={cache}", "--prepare", "--json"])
                    runs["one_file"]["chunks"] = newest_chunks(cache)
                    print(row("one file changed", runs["one_file"]) + f"  chunks {runs['one_file']['chunks']} "
                          f"({changed.relative_to(corpus)})", flush=True)
                if args.workers > 1:
                    runs["workers"] = measure([*data, f"data.cache_dir={work / f'cache-{n}x-w'}",
                                               f"data.num_proc={args.workers}", "--prepare", "--json"])
                    print(row(f"prepare, {args.workers} workers", runs["workers"]), flush=True)
                if corpus.is_dir():
                    shutil.rmtree(corpus)
                else:
                    corpus.unlink()
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(work / f"cache-{n}x-w", ignore_errors=True)
                results[f"{workload} {n}x"] = {"workload": workload, "copies": n, **runs}
        if args.train_copies:
            print(f"\ntrain on {args.train_copies}x:", flush=True)
            corpus = build_corpus(work, args.train_copies, work / "base")
            results["train"] = train_check(work, corpus, args.train_max_length)
            shutil.rmtree(corpus)
        print("\nratios")
        for name, runs in results.items():
            if name == "train":
                continue
            p = runs["prepare"]
            if "baseline" in runs:
                b = runs["baseline"]
                same = {k: (b["stats"][k], p["stats"][k]) for k in ("examples", "windows", "tokens", "trained_tokens")}
                print(f"  {name} prepare / baseline: wall {p['wall'] / b['wall']:.2f}x, peak PSS "
                      f"{p['tree_rss'] / b['tree_rss']:.2f}x; baseline vs prepare {same}; fim {b['stats']['fim']} vs "
                      f"{p['stats']['fim']}")
            if "workers" in runs:
                print(f"  {name} {args.workers} workers / 1 worker: wall {runs['workers']['wall'] / p['wall']:.2f}x, "
                      f"tree RSS {runs['workers']['tree_rss'] / p['tree_rss']:.2f}x, same rows: "
                      f"{runs['workers']['stats'] == p['stats']}")
            if "one_file" in runs:
                o = runs["one_file"]
                print(f"  {name} one file changed / fresh build: wall {o['wall'] / p['wall']:.3f}x, CPU "
                      f"{o['cpu'] / p['cpu']:.3f}x (goal <= 0.10); chunks {o['chunks']} of {runs['first_chunks']}")
            print(f"  {name} cache hit: {runs['hit']['wall']:.1f} s wall, {runs['hit']['cpu']:.1f} s CPU, whole process "
                  "(goal <= 10 s at 10x)")
        for workload in args.workload:
            sizes = {r["copies"]: r for r in results.values() if r.get("workload") == workload}
            if len(sizes) < 2:
                continue
            lo, hi = min(sizes), max(sizes)
            a, b = sizes[lo]["prepare"], sizes[hi]["prepare"]
            k = hi / lo
            print(f"  {workload} {hi}x vs {lo}x prepare: peak PSS {b['tree_rss'] / GiB:.2f} GiB (goal <= 1.0), growth "
                  f"{(b['tree_rss'] - a['tree_rss']) / GiB:.3f} GiB (goal <= 0.15); ru_maxrss {b['maxrss'] / GiB:.2f} GiB, "
                  f"growth {(b['maxrss'] - a['maxrss']) / GiB:.3f} GiB; wall {b['wall'] / (k * a['wall']):.2f}x, "
                  f"CPU {b['cpu'] / (k * a['cpu']):.2f}x of {k:g} x the {lo}x time (goal <= 1.2)")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = ROOT / "bench" / "results" / f"data_scale-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"\nresults: {out}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
