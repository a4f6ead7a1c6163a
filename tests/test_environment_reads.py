"""Library code reads no environment variable of its own: settings are recipe keys or arguments; the
distributed state comes through accelerate/torch. Agreed exceptions are listed with the reason."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "sc2tune"

READ = re.compile(r"os\.environ|os\.getenv|getenv\(|environ\.get|environ\[")

#: file -> the reads allowed there
ALLOWED = {
    "tiny.py": ['os.environ.get("SC2TUNE_CACHE"'],  # cache_dir(): the documented cache setting, like HF_HOME
    # the launcher's own variables, read as accelerate reads them (building accelerate's FSDP plugin to ask it
    # raises under FSDP1 on CPU, which is the case being refused)
    "training/distributed.py": ['os.environ.get("FSDP_VERSION"'],
    # torchrun / accelerate launch's per-node process count: DeepSpeed is checked against this node's GPUs
    # before any process group (or accelerate state) exists
    "training/deepspeed_check.py": ['os.environ.get("LOCAL_WORLD_SIZE"'],
}
#: not library code: the sandbox's child processes, and the command line (its own engineer's business)
OUT_OF_SCOPE = ("evaluation/_", "cli.py")


def test_no_environment_variable_is_read_in_library_code():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(OUT_OF_SCOPE):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if READ.search(line) and not any(ok in line for ok in ALLOWED.get(rel, [])):
                found.append(f"sc2tune/{rel}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_pattern_catches_the_usual_spellings():
    for line in ('os.environ.get("RANK", "0")', 'os.getenv("X")', 'environ["LOCAL_RANK"]'):
        assert READ.search(line), line
