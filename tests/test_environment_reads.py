"""Library code reads no environment variable of its own: settings are recipe keys or arguments; the
distributed state comes through accelerate/torch. Agreed exceptions are listed with the reason."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "sc2tune"

READ = re.compile(r"os\.environ|os\.getenv|getenv\(|environ\.get|environ\[")

#: file -> the reads allowed there
ALLOWED = {
    "modeling.py": ['os.environ.get("SC2TUNE_CACHE"'],  # cache_dir(): the documented cache setting, like HF_HOME
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
