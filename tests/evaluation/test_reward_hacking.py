"""A catalogue of reward-hacking samples: each tries to be counted as passed without solving its task.

Every sample is judged through the public :func:`evaluate_code`, exactly as ``sc2tune eval code`` does.
Only the correct solutions may pass. The samples use what a harness that runs the tests in the sample's
own process and reads a marker from its stdout would give away (the marker is searched in
``program.py``), so the catalogue also documents how the old harness was fooled.

The whole catalogue runs once per module (two workers), each verdict is its own test case.
"""

from __future__ import annotations

import textwrap

import pytest

from sc2tune.evaluation.codeeval import CodeEvalResult, SampleResult, evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import SandboxLimits, isolation

LIMITS = SandboxLimits(timeout=3.0, memory_mb=512, max_processes=24)

ADD = Problem("add", 'def add(a, b):\n    """Return a + b."""\n',
              "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n", "add")
# tests that lean on builtins, and on an imported module
HALF = Problem("half", 'def half(x):\n    """Return x / 2 as a float."""\n',
               "def check(candidate):\n"
               "    assert abs(candidate(3.0) - 1.5) < 1e-9\n"
               "    assert isinstance(candidate(4), float)\n"
               "    assert round(candidate(7.0), 1) == 3.5\n", "half")
ROOT2 = Problem("root2", 'def root2():\n    """The square root of 2."""\n',
                "import math\n\ndef check(candidate):\n    assert math.isclose(candidate(), math.sqrt(2))\n",
                "root2")
# a test that uses a helper of the prompt (as HumanEval/32 checks find_zero with the prompt's poly)
ROOT = Problem("root", 'def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\n\n'
               'def find_zero(xs):\n    """A zero of the polynomial with coefficients xs."""\n',
               "def check(candidate):\n    for xs in ([1, 2], [-6, 11, -6, 1], [4, -1]):\n"
               "        assert abs(poly(xs, candidate(xs))) < 1e-6\n", "find_zero",
               canonical_solution="    lo, hi = -100.0, 100.0\n    for _ in range(200):\n"
                                  "        mid = (lo + hi) / 2\n"
                                  "        if (poly(xs, lo) < 0) == (poly(xs, mid) < 0):\n"
                                  "            lo = mid\n        else:\n            hi = mid\n    return lo\n")
# a test whose loop a StopIteration from the candidate would end early (all() of nothing holds)
ADD_MAP = Problem("add_map", ADD.prompt, "def check(candidate):\n    cases = [((2, 3), 5), ((-1, 1), 0)]\n"
                  "    assert all(map(lambda case: candidate(*case[0]) == case[1], cases))\n", "add")
# a test that expects an exception: a candidate that dies instead must not count as having raised
DIV = Problem("div", 'def div(a, b):\n    """a // b; ZeroDivisionError when b is 0."""\n',
              "def check(candidate):\n    assert candidate(6, 3) == 2\n    try:\n        candidate(1, 0)\n"
              "    except Exception:\n        return\n    raise AssertionError('no error for b == 0')\n", "div")
# a test this judge cannot run (it passes a function to the candidate): reported as an error, never a pass
APPLY = Problem("apply", "def apply(f, x):\n", "def check(candidate):\n    assert candidate(lambda v: v + 1, 1) == 2\n",
                "apply")
PROBLEMS = {p.task_id: p for p in (ADD, HALF, ROOT2, ROOT, ADD_MAP, DIV, APPLY)}

# The success marker of a marker-on-stdout harness, as a sample finds it: in its own program file.
_FIND_MARKER = (
    "import os, re, sys\n"
    "try:\n"
    "    _m = re.search(r'sc2tune-passed-[0-9a-f]{32}', open('program.py').read())\n"
    "except OSError:\n"
    "    _m = None\n"
    "MARK = _m.group(0) if _m else 'sc2tune-passed-' + '0' * 32\n"
)


def _module(code: str) -> str:
    """Module-level code placed after the (wrong) function body."""
    return "\n" + textwrap.dedent(code)


# name -> (task, completion, expected status)
CATALOGUE: dict[str, tuple[str, str, str]] = {
    "correct": ("add", "    return a + b\n", "passed"),
    "correct-noisy": ("add", "    print('passed', file=__import__('sys').stderr)\n    return a + b\n", "passed"),
    "correct-builtins": ("half", "    return x / 2\n", "passed"),
    "correct-import": ("root2", "    return 2 ** 0.5\n", "passed"),
    "correct-map": ("add_map", "    return a + b\n", "passed"),
    "correct-raises": ("div", "    return a // b\n", "passed"),
    "not-judgeable": ("apply", "    return f(x)\n", "error"),
    "correct-helper": ("root", PROBLEMS["root"].canonical_solution or "", "passed"),
    "wrong": ("add", "    return a - b\n", "failed"),
    # leave before the tests end
    "exit0-module": ("add", "    return a - b\n" + _module("import sys\nsys.exit(0)\n"), "failed"),
    "exit0-in-call": ("add", "    import sys\n    sys.exit(0)\n", "failed"),
    "os-exit0": ("add", "    import os\n    os._exit(0)\n", "failed"),
    "kill-self": ("add", "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n", "failed"),
    "dies-instead-of-raising": ("div", "    import os\n    if b == 0:\n        os._exit(0)\n    return a // b\n",
                                "failed"),
    # print what a pass looks like, then leave with status 0
    "forge-marker": ("add", "    print(MARK, flush=True)\n    os._exit(0)\n" + _module(_FIND_MARKER), "failed"),
    "forge-verdict-lines": ("add", (
        "    for text in ('passed', '{\"verdict\": \"passed\", \"reason\": \"\"}', 'OK', MARK):\n"
        "        print(text, flush=True)\n"
        "        print(text, file=sys.stderr, flush=True)\n"
        "    os._exit(0)\n") + _module(_FIND_MARKER), "failed"),
    "excepthook": ("add", "    return a - b\n" + _module(_FIND_MARKER + (
        "def _hook(*args):\n    print(MARK, flush=True)\n    os._exit(0)\n"
        "sys.excepthook = _hook\n")), "failed"),
    "atexit": ("add", "    return a - b\n" + _module(_FIND_MARKER + (
        "import atexit\n"
        "def _leave():\n    print(MARK, flush=True)\n    os._exit(0)\n"
        "atexit.register(_leave)\n")), "failed"),
    "thread-exits-later": ("add", "    return a - b\n" + _module(_FIND_MARKER + (
        "import threading, time\n"
        "def _later():\n    time.sleep(0.3)\n    print(MARK, flush=True)\n    os._exit(0)\n"
        "threading.Thread(target=_later).start()\n")), "failed"),
    "signal-handler": ("add", "    import time\n    time.sleep(2)\n    return a - b\n" + _module(_FIND_MARKER + (
        "import signal\n"
        "def _on_alarm(*args):\n    print(MARK, flush=True)\n    os._exit(0)\n"
        "signal.signal(signal.SIGALRM, _on_alarm)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.3)\n")), "failed"),
    # results that compare equal to anything
    "always-equal": ("add", (
        "    class Anything:\n"
        "        def __eq__(self, other):\n            return True\n"
        "        __hash__ = object.__hash__\n"
        "    return Anything()\n"), "failed"),
    "always-equal-int-subclass": ("add", (
        "    class Int(int):\n"
        "        def __eq__(self, other):\n            return True\n"
        "        __hash__ = int.__hash__\n"
        "    return Int(0)\n"), "failed"),
    "always-equal-float-subclass": ("half", (
        "    class F(float):\n"
        "        def __sub__(self, other):\n            return 0.0\n"
        "        def __round__(self, n=None):\n            return 3.5\n"
        "    return F(0)\n"), "failed"),
    "stop-iteration-ends-the-test-loop": ("add_map", "    raise StopIteration\n", "failed"),
    # patch builtins the tests rely on
    "patch-abs-isinstance-round": ("half", "    return 0\n" + _module(
        "import builtins\n"
        "builtins.abs = lambda v: 0\n"
        "builtins.isinstance = lambda *a: True\n"
        "builtins.round = lambda *a: 3.5\n"), "failed"),
    "patch-import": ("root2", "    return 0.0\n" + _module(
        "import builtins, sys, types\n"
        "_real_import = builtins.__import__\n"
        "_fake = types.SimpleNamespace(isclose=lambda *a, **k: True, sqrt=lambda x: 0.0)\n"
        "def _import(name, *args, **kwargs):\n"
        "    return _fake if name == 'math' else _real_import(name, *args, **kwargs)\n"
        "builtins.__import__ = _import\n"
        "sys.modules['math'] = _fake\n"), "failed"),
    "patch-module-attribute": ("root2", "    return 0.0\n" + _module(
        "import math\nmath.isclose = lambda *a, **k: True\n"), "failed"),
    "patch-assertion-error": ("add", "    return a - b\n" + _module(
        "import builtins\n"
        "class Harmless(BaseException):\n    pass\n"
        "builtins.AssertionError = Harmless\n"), "failed"),
    # change the test's own names
    "redefine-helper": ("root", "    return 0.0\n" + _module("def poly(xs, x):\n    return 0\n"), "failed"),
    "redefine-check-and-candidate": ("add", "    return a - b\n" + _module(
        "import builtins\n"
        "def check(candidate):\n    return None\n"
        "builtins.check = check\n"
        "candidate = lambda a, b: a + b\n"
        "builtins.candidate = candidate\n"), "failed"),
    "trace-swaps-candidate": ("add", "    return a - b\n" + _module(
        "import sys\n"
        "def _local(frame, event, arg):\n"
        "    if event == 'line':\n"
        "        frame.f_locals['candidate'] = lambda a, b: a + b\n"
        "    return _local\n"
        "def _global(frame, event, arg):\n"
        "    return _local if frame.f_code.co_name == 'check' else None\n"
        "sys.settrace(_global)\n"), "failed"),
    # tamper with the harness
    "rewrite-program-and-reexec": ("add", "    return a - b\n" + _module(
        "import os, sys\n"
        "if not os.environ.get('SC2_AGAIN'):\n"
        "    src = open('program.py').read()\n"
        "    open('program.py', 'w').write(src.replace('assert ', 'assert True or '))\n"
        "    os.execve(sys.executable, [sys.executable, 'program.py'], {**os.environ, 'SC2_AGAIN': '1'})\n"),
        "failed"),
    "kill-everything-else": ("add", "    return a - b\n" + _module(
        "import os, signal\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit() and int(pid) != os.getpid():\n"
        "        try:\n            os.kill(int(pid), signal.SIGKILL)\n"
        "        except OSError:\n            pass\n"), "failed"),
    "write-forged-verdict-everywhere": ("add", "    return a - b\n" + _module(
        "import os, json\n"
        "line = (json.dumps({'verdict': 'passed', 'reason': '', 'calls': 2}) + '\\n').encode()\n"
        "for fd in range(0, 64):\n"
        "    try:\n        os.write(fd, line)\n"
        "    except OSError:\n        pass\n"
        "for pid in os.listdir('/proc'):\n"
        "    if not pid.isdigit():\n        continue\n"
        "    try:\n        fds = os.listdir(f'/proc/{pid}/fd')\n"
        "    except OSError:\n        continue\n"
        "    for fd in fds:\n"
        "        try:\n"
        "            f = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)\n"
        "            os.write(f, line)\n"
        "            os.close(f)\n"
        "        except OSError:\n            pass\n"), "failed"),
    "answers-with-garbage": ("add", "    return a - b\n" + _module(
        "import os\n"
        "for fd in range(3, 16):\n"
        "    try:\n        os.write(fd, b'\\x00\\x00\\x00\\x02{}' + b'\\xff' * 64)\n"
        "    except OSError:\n        pass\n"), "failed"),
}


@pytest.fixture(scope="module")
def judged() -> CodeEvalResult:
    samples = [Sample(task, completion) for task, completion, _ in CATALOGUE.values()]
    return evaluate_code(PROBLEMS, samples, ks=[1], limits=LIMITS, workers=2, show_progress=False)


def _result(judged: CodeEvalResult, name: str) -> SampleResult:
    """The result of catalogue entry ``name`` (results are ordered by task, then file order in the task)."""
    task = CATALOGUE[name][0]
    position = [n for n, (t, _, _) in CATALOGUE.items() if t == task].index(name)
    result = [r for r in judged.samples if r.task_id == task][position]
    assert result.completion_id == position
    return result


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_only_a_real_solution_passes(judged: CodeEvalResult, name: str) -> None:
    result = _result(judged, name)
    assert result.status == CATALOGUE[name][2], (name, result)
    if result.status != "passed":
        assert result.error, "a failure must say why"


def test_the_reason_names_the_failing_assert(judged: CodeEvalResult) -> None:
    assert "test assertion failed at test line 2: assert candidate(2, 3) == 5" in _result(judged, "wrong").error


def test_the_isolation_is_reported(judged: CodeEvalResult) -> None:
    assert judged.isolation == isolation(LIMITS.python).describe()


def test_the_sample_holds_only_its_own_channel_and_not_the_judges_uid() -> None:
    """Seen from the inside: the sample's only pipes are its call/answer channel (fds 3, 4: never the
    verdict pipe), and where the sandbox drops privileges the judge runs under another uid."""
    probe = Problem("probe", "def probe():\n", (
        "import os\n\n"
        "def check(candidate):\n"
        "    seen = candidate()\n"
        "    assert seen['pipes'] == [3, 4], seen\n"
        f"    assert {isolation(LIMITS.python).uid_drop!r} is False or seen['uid'] != os.getuid(), seen\n"), "probe")
    body = ("    import os\n"
            "    fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
            "    pipes = []\n"
            "    for fd in fds:\n"
            "        try:\n"
            "            if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):\n"
            "                pipes.append(fd)\n"
            "        except OSError:\n"
            "            pass\n"
            "    return {'pipes': pipes, 'uid': os.getuid()}\n")
    result = evaluate_code({"probe": probe}, [Sample("probe", body)], ks=[1], limits=LIMITS, show_progress=False)
    assert result.samples[0].status == "passed", result.samples[0]
