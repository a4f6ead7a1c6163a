"""HumanEval-format problem and sample files, and their FIM (infilling) variants.

Problems (JSONL, optionally gzipped): one object per line with ``task_id``, ``prompt``, ``test``,
``entry_point`` and optionally ``canonical_solution``; sc2tune adds an optional ``suffix`` (the code
after the hole, for FIM problems). Samples (JSONL): ``task_id``, ``completion``, several per task.

A sample is judged in two processes (see :mod:`sc2tune.evaluation.sandbox`): the sample's process runs
``prompt + completion + suffix``; the judge's runs ``test`` (after trusted problem text, see
:func:`judge_job`) and calls ``check(candidate)`` with a proxy whose calls go to the sample's process.

FIM problems (execution-based infilling, as in the StarCoder/SantaCoder evaluations): the canonical
solution ``s`` is split into ``s[:a] | s[a:b] | s[b:]``; the problem's prompt becomes ``prompt + s[:a]``,
its suffix ``s[b:]`` and ``canonical_middle`` the hole ``s[a:b]``. ``lines`` masks 1-3 whole consecutive
non-blank lines, ``span`` a random character span (two uniform cut points). Cut points are drawn from
``random.Random(f"{seed}:{task_id}")``, so the same seed gives the same problems in any order.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from sc2tune.atomic import staged_file
from sc2tune.errors import DataError, UserError
from sc2tune.evaluation.sandbox import JudgeJob

FimMode = Literal["lines", "span"]


@dataclass(frozen=True)
class Problem:
    """One HumanEval-format task."""

    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str | None = None
    suffix: str = ""
    canonical_middle: str | None = None


@dataclass(frozen=True)
class Sample:
    """One completion (or infill) of one task."""

    task_id: str
    completion: str


#: Benchmarks shipped in ``sc2tune/assets/benchmarks`` (MIT, licence and source note beside the files),
#: by the name ``--problems`` takes: HumanEval (164) and the four HumanEval-infilling subsets
#: (Bavarian et al. 2022: 1,033 single-line, 5,815 multi-line, 1,640 random-span, 164 random-span-light).
BENCHMARKS: dict[str, str] = {
    "humaneval": "humaneval/HumanEval.jsonl.gz",
    "humaneval-infilling-single-line": "humaneval-infilling/HumanEval-SingleLineInfilling.jsonl.gz",
    "humaneval-infilling-multi-line": "humaneval-infilling/HumanEval-MultiLineInfilling.jsonl.gz",
    "humaneval-infilling-random-span": "humaneval-infilling/HumanEval-RandomSpanInfilling.jsonl.gz",
    "humaneval-infilling-random-span-light": "humaneval-infilling/HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
_BENCHMARK_DIR = Path(__file__).resolve().parent.parent / "assets" / "benchmarks"


def problems_path(source: str | Path) -> Path:
    """``--problems``: a benchmark name (:data:`BENCHMARKS`) or a path to a problems file.

    A name wins over a file of the same name only when no such file exists; anything that is neither is
    an error listing the names."""
    path = Path(source)
    if path.is_file():
        return path
    if str(source) in BENCHMARKS:
        return _BENCHMARK_DIR / BENCHMARKS[str(source)]
    raise UserError(f"--problems '{source}': file not found, and not a benchmark name",
                    hint="give a HumanEval-format JSONL(.gz) file, or one of: " + ", ".join(BENCHMARKS))


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a (gzipped) JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object per line")
                rows.append((number, obj))
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict], *, gzipped: bool = False) -> Path:
    """``rows`` as JSONL, one object a line (gzipped: compressed), the format :func:`read_jsonl` reads; written
    atomically (:func:`sc2tune.atomic.staged_file`), its folder made first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as tmp, (gzip.open if gzipped else open)(tmp, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def _text(obj: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string" + ("" if key in obj else " (missing)"),
                        hint="problems need task_id, prompt, test, entry_point; samples task_id, completion")
    return value


def load_problems(source: str | Path) -> dict[str, Problem]:
    """Problems by task id from a JSONL(.gz) file, or a shipped benchmark by name (:data:`BENCHMARKS`)."""
    path = problems_path(source)
    problems: dict[str, Problem] = {}
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        task_id = _text(obj, "task_id", where)
        if task_id in problems:
            raise DataError(f"{where}: duplicate task_id '{task_id}'")
        problems[task_id] = Problem(
            task_id=task_id,
            prompt=_text(obj, "prompt", where),
            test=_text(obj, "test", where),
            entry_point=_text(obj, "entry_point", where),
            canonical_solution=_text(obj, "canonical_solution", where, required=False),
            suffix=_text(obj, "suffix", where, required=False) or "",
            canonical_middle=_text(obj, "canonical_middle", where, required=False),
        )
    if not problems:
        raise DataError(f"{path}: no problems in the file")
    return problems


def load_samples(path: str | Path, problems: dict[str, Problem]) -> list[Sample]:
    """Samples in file order; a task id that is not among the problems is an error naming the line."""
    samples = []
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        task_id = _text(obj, "task_id", where)
        if task_id not in problems:
            raise DataError(f"{where}: task_id '{task_id}' is not in the problems file",
                            hint="samples and problems must come from the same benchmark (and FIM mode)")
        samples.append(Sample(task_id, _text(obj, "completion", where)))
    if not samples:
        raise DataError(f"{path}: no samples in the file")
    return samples


def candidate_program(problem: Problem, completion: str) -> str:
    """The code run in the sample's process: ``prompt + completion + suffix``, never the tests."""
    return f"{problem.prompt}{completion}{problem.suffix}\n"


def _compiles(source: str) -> bool:
    try:
        compile(source, "problem.py", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def judge_job(problem: Problem) -> JudgeJob:
    """What the judge runs: the tests, next to the problem's own trusted code.

    Tests may call helpers the prompt defines (HumanEval/32 checks ``find_zero`` with the prompt's
    ``poly``), so the judge first executes trusted problem text: the first of ``prompt + canonical
    middle + suffix`` (FIM), ``prompt + canonical_solution + suffix``, ``prompt + suffix`` that
    compiles (nothing when none does). The sample's completion is never part of it, and the entry
    point's name is rebound to the candidate proxy, so the canonical solution is never what is tested.
    """
    options = [problem.prompt + middle + problem.suffix
               for middle in (problem.canonical_middle, problem.canonical_solution, "") if middle is not None]
    context = next((text for text in options if _compiles(text)), "")
    return JudgeJob(context=context, test=problem.test, entry_point=problem.entry_point)


def fim_cut(code: str, mode: FimMode, rng: random.Random) -> tuple[int, int]:
    """Cut points ``a < b`` of the hole in ``code``: whole lines or a random character span."""
    if mode == "span":
        a, b = sorted(rng.sample(range(len(code) + 1), 2))
        return a, b
    starts, offset = [], 0
    for line in code.splitlines(keepends=True):
        if line.strip():
            starts.append((offset, offset + len(line)))
        offset += len(line)
    if not starts:
        raise ValueError("no non-blank line to mask")
    first = rng.randrange(len(starts))
    count = rng.randint(1, min(3, len(starts) - first))
    last = first + count - 1
    return starts[first][0], starts[last][1]


def make_fim_problems(problems: dict[str, Problem], mode: FimMode, seed: int = 0) -> dict[str, Problem]:
    """FIM variants of problems that have a canonical solution (see the module docstring)."""
    out: dict[str, Problem] = {}
    for task_id, problem in problems.items():
        solution = problem.canonical_solution
        if not solution or not solution.strip():
            raise DataError(f"task '{task_id}' has no canonical_solution to mask",
                            hint="FIM problems are built from a HumanEval-format file with canonical_solution")
        a, b = fim_cut(solution, mode, random.Random(f"{seed}:{task_id}"))
        out[task_id] = Problem(task_id=task_id, prompt=problem.prompt + solution[:a], test=problem.test,
                               entry_point=problem.entry_point, suffix=solution[b:] + problem.suffix,
                               canonical_middle=solution[a:b])
    return out


def write_problems(problems: dict[str, Problem], path: str | Path) -> Path:
    """Write problems as JSONL, gzipped for a ``.gz`` name (atomically: :func:`sc2tune.atomic.staged_file`)."""
    return write_jsonl(path, ({k: v for k, v in asdict(p).items() if v is not None} for p in problems.values()),
                       gzipped=Path(path).suffix == ".gz")
