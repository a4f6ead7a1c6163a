"""sha256 of the prepared rows of fixed recipes, per split: the check that a change to the data pipeline
leaves the rows byte-identical (the cache key may change, the rows may not).

Cases: the three quickstart recipes (``recipes/quickstart/*.yaml``), and multi-chunk corpora made here
from fixed inputs: task fim on a folder of Python files (copies of standard-library packages, as three
repositories), task instruct and task classify on generated JSON-lines records (seeded). The chunk sizes
are lowered so that those corpora span many chunks (fim: 64 KiB of source per chunk; instruct: 256
records per chunk and a pack buffer of 16384 tokens; classify: 256 records per chunk).

Each case is prepared into a fresh cache folder (``data.cache_dir``), and with ``--memory`` also with
``data.cache_dir: null``. A digest covers, per split, the Arrow schema and every column's row lengths
and values (as int64), so any change of a token, a label, a position id, a row boundary or a dtype shows.

    python bench/rows_digest.py [--memory]        # from the repository root; prints CASE SPLIT ROWS SHA256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUICKSTART = ["alpaca", "classify", "fim"]
WORDS = ["alpha", "beta", "gamma", "delta", "list", "sort", "merge", "parse", "token", "file", "path", "value",
         "index", "count", "sum", "map", "filter", "reduce", "string", "number", "return", "print", "loop", "class",
         "method", "async", "await", "yield", "tree", "graph", "node", "edge"]



def digest(ds) -> tuple[int, str]:
    """(rows, sha256 of the schema and every column's row lengths and values)."""
    h = hashlib.sha256(str(ds.data.table.schema).encode())
    for name in sorted(ds.column_names):
        col = ds[name]
        h.update(name.encode() + b"\0")
        if col and isinstance(col[0], list):
            h.update(np.asarray([len(x) for x in col], dtype=np.int64).tobytes())
            flat = [v for x in col for v in x]
        else:
            flat = col
        h.update(np.asarray(flat, dtype=np.int64).tobytes())
    return len(ds), h.hexdigest()


def _code_corpus(folder: Path) -> Path:
    """Three repositories of standard-library Python files (fixed for a given Python installation)."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    for repo, package in (("repo-json", "json"), ("repo-email", "email"), ("repo-http", "http")):
        for src in sorted((lib / package).rglob("*.py")):
            dst = folder / repo / src.relative_to(lib / package)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return folder


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _instruct_corpus(path: Path, n: int = 2000) -> Path:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            rec = {"instruction": f"{i}: " + _sentence(rng, rng.randint(3, 30)), "output": _sentence(rng, rng.randint(1, 60))}
            if rng.random() < 0.3:
                rec["input"] = _sentence(rng, rng.randint(1, 20))
            fh.write(json.dumps(rec) + "\n")
    return path


def _classify_corpus(path: Path, n: int = 1200) -> Path:
    rng = random.Random(11)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"code": f"{i} " + _sentence(rng, rng.randint(2, 80)),
                                 "language": rng.choice(["go", "python", "rust", "sql"])}) + "\n")
    return path


def _cases(work: Path) -> list[tuple[str, Path, list[str]]]:
    code = _code_corpus(work / "code")
    instruct = _instruct_corpus(work / "instruct.jsonl")
    classify = _classify_corpus(work / "classify.jsonl")
    recipes = work / "recipes"
    recipes.mkdir()
    (recipes / "fim.yaml").write_text(
        f"model: {{name_or_path: sc2tune/tiny-starcoder2}}\ntask: fim\ndata:\n  train: {code}\n  eval: 0.3\n"
        "  max_length: 256\n  packing: true\n  fim: {rate: 0.5, spm_rate: 0.5, repo_context: true}\n")
    (recipes / "instruct.yaml").write_text(
        f"model: {{name_or_path: sc2tune/tiny-starcoder2}}\ntask: instruct\ndata:\n  train: {instruct}\n"
        "  eval: 0.1\n  template: alpaca\n  max_length: 128\n  packing: true\n")
    (recipes / "classify.yaml").write_text(
        f"model: {{name_or_path: sc2tune/tiny-starcoder2}}\ntask: classify\ndata:\n  train: {classify}\n"
        "  eval: 0.2\n  text_column: code\n  label_column: language\n  max_length: 64\n")
    out = [(f"quickstart/{name}", ROOT / "recipes" / "quickstart" / f"{name}.yaml", []) for name in QUICKSTART]
    out += [(f"multichunk/{name}", recipes / f"{name}.yaml", []) for name in ("fim", "instruct", "classify")]
    out += [("multichunk/fim-plain", recipes / "fim.yaml", ["data.fim.repo_context=false", "data.packing=false"])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", action="store_true", help="also prepare each case with data.cache_dir: null")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import sc2tune.data.chunked as chunked
    import sc2tune.data.sources as sources
    import sc2tune.data.stream as stream
    from sc2tune.data import build_datasets
    from sc2tune.recipe import load_recipe
    from sc2tune.tiny import load_bundled_tokenizer

    chunked.CHUNK_BYTES = 64 * 1024
    sources.CHUNK_RECORDS = 256
    stream.PACK_TOKENS = 16384

    with tempfile.TemporaryDirectory(prefix="rows-digest-") as tmp:
        work = Path(tmp)
        modes = [("cached", lambda i: [f"data.cache_dir={work / f'cache{i}'}"])]
        if args.memory:
            modes.append(("memory", lambda i: ["data.cache_dir=null"]))
        for i, (case, path, overrides) in enumerate(_cases(work)):
            for mode, extra in modes:
                recipe = load_recipe(path, [*overrides, *extra(i)])
                bundle = build_datasets(recipe, load_bundled_tokenizer(), show_progress=False)
                for split, ds in (("train", bundle.train), ("eval", bundle.eval)):
                    rows, sha = (0, "-") if ds is None else digest(ds)
                    print(f"{case:24s} {mode:6s} {split:5s} {rows:6d} {sha}", flush=True)


if __name__ == "__main__":
    main()
