"""The docs cannot rot: every ```bash/```sh/```console/```python block of README.md and docs/*.md runs.

Each page's blocks run in order, in a temporary folder that holds links to the checkout's ``recipes/`` and
``data_templates/`` and a copy of the README's quickstart run (the README's own blocks run first, once, and
make it), on the built-in tiny model, offline. A block that cannot run here (it needs a GPU, the hub, several
nodes, a package sc2tune does not install) is marked right above it with

    <!-- docs-test: skip (the reason) -->

and listed by :func:`test_every_block_is_run_or_marked`, which also fails on an unmarked block calling a
tool that cannot run here.

How a block runs:

- shell (bash, sh, console: the ``$ `` lines): the whole block is one ``bash`` script (``set -eo pipefail``),
  so variables, heredocs, pipes and redirections work as for a reader. ``sc2tune`` in it is a shell function
  that hands its arguments (as bash expanded them) to this test process and waits on a fifo for the
  answer; this process runs the command line
  in-process (``sc2tune.cli.main``: the same entry point as the console script, without a fresh
  interpreter importing torch for every line) and hands back its output and exit status;
- python: executed in this process, in the page's folder.

A block fails on a non-zero exit status, an exception, or a traceback printed by a command.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "console"}
RUN = SHELL | {"python"}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip \((.+)\)$")
#: Commands that cannot run in the test's sandbox of a CPU machine without the hub: a block calling one must be marked.
UNRUNNABLE = re.compile(r"(^|[\s;&|(])(pip|accelerate|torchrun|sbatch|srun|docker|vllm|nvidia-smi)\s|llama\.cpp/")
LINKED = ("recipes", "data_templates")
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it starts (1-based line of the opening fence), its language and code,
    and the reason given in a skip marker right above it (None: it runs)."""

    page: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of ``page`` in order. A marker applies to the fence on the next non-blank line; a
    marker that is not ``skip (reason)`` or that no fence follows is a ValueError naming its line."""
    lines = (page.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a marker waiting for its fence
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line.strip())
        fence = FENCE.match(line)
        if marker:
            skip = SKIP.match(marker.group(1))
            if not skip:
                raise ValueError(f"{page}:{i + 1}: write the marker as <!-- docs-test: skip (reason) -->")
            if pending:
                raise ValueError(f"{page}:{pending[0]}: a docs-test marker with no block under it")
            pending = (i + 1, skip.group(1))
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ValueError(f"{page}:{i + 1}: a code block that is never closed")
            reason = pending[1] if pending else None
            blocks.append(Block(page, i + 1, fence.group(1).lower(), "\n".join(lines[i + 1:end]) + "\n", reason))
            pending, i = None, end
        elif line.strip() and pending:
            raise ValueError(f"{page}:{pending[0]}: a docs-test marker must be right above its block")
        i += 1
    if pending:
        raise ValueError(f"{page}:{pending[0]}: a docs-test marker with no block under it")
    return blocks


def shell_script(block: Block) -> str:
    """The bash script of a shell block: a console block's ``$ `` lines (its output lines left out)."""
    if block.lang != "console":
        return block.code
    return "\n".join(line[2:] for line in block.code.splitlines() if line.startswith("$ ")) + "\n"


def test_markers_attach_to_the_block_below_and_stray_ones_are_refused(tmp_path: Path):
    page = tmp_path / "p.md"
    text = ("# t\n\n<!-- docs-test: skip (needs a GPU) -->\n```bash\nnvidia-smi\n```\n\n```python\nprint(1)\n```\n"
            "```text\nnot run\n```\n")
    assert [(b.line, b.lang, b.code, b.skip) for b in parse_blocks(page, text)] == [
        (4, "bash", "nvidia-smi\n", "needs a GPU"), (8, "python", "print(1)\n", None), (11, "text", "not run\n", None)]
    for bad in ("<!-- docs-test: skip -->\n```bash\nls\n```\n", "<!-- docs-test: skip (x) -->\n\ntext\n```bash\nls\n```\n",
                "<!-- docs-test: skip (x) -->\n", "```bash\nls\n"):
        with pytest.raises(ValueError, match="p.md:1"):
            parse_blocks(page, bad)
    console = parse_blocks(page, "```console\n$ sc2tune schema\n{\n$ ls\nrecipes\n```\n")[0]
    assert shell_script(console) == "sc2tune schema\nls\n"  # the prompts' lines, not the output


def test_every_block_is_run_or_marked():
    """Each page parses; a block calling a tool that cannot run here is marked; the skipped blocks are listed
    (``pytest -s`` shows them)."""
    blocks = [block for page in PAGES for block in parse_blocks(page)]
    runnable = [b for b in blocks if b.lang in RUN]
    assert runnable, "no code blocks found"
    unmarked = [b.where for b in runnable if b.skip is None and b.lang in SHELL and UNRUNNABLE.search(shell_script(b))]
    assert not unmarked, f"blocks that cannot run here need <!-- docs-test: skip (why) --> above them: {unmarked}"
    skipped = [b for b in runnable if b.skip]
    print(f"\n{len(runnable) - len(skipped)} blocks run, {len(skipped)} skipped:")
    for b in skipped:
        print(f"  {b.where}: {b.skip}")
    assert all(b.skip.strip() for b in skipped)
    readme = parse_blocks(ROOT / "README.md")
    setup = next(b for b in readme if "# test-command" in b.code)
    assert setup.skip, "the README's set-up block is run by CI (.ci/run), not by this test"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (headings in code blocks are
    not headings)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_point_to_files_and_headings_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_gguf_files_come_from_sc2tune_export():
    """No page sends users to llama.cpp's converter for a GGUF file (export.md alone names it, as what the export is
    compared with); the merging page points to the export page."""
    assert [page.name for page in PAGES if page.name != "export.md" and "convert_hf_to_gguf" in page.read_text()] == []
    assert "](export.md)" in (ROOT / "docs" / "merging.md").read_text()


# ---- running the blocks ------------------------------------------------------------------------------------

_PRELUDE = r"""set -eo pipefail
sc2tune() {
  local id="$BASHPID-$RANDOM$RANDOM" status
  mkfifo "$DOCS_TEST_IPC/status-$id"
  printf '%s\0' "$@" > "$DOCS_TEST_IPC/req-$id.tmp"
  mv "$DOCS_TEST_IPC/req-$id.tmp" "$DOCS_TEST_IPC/req-$id"
  read -r status < "$DOCS_TEST_IPC/status-$id"
  cat "$DOCS_TEST_IPC/out-$id"
  cat "$DOCS_TEST_IPC/err-$id" >&2
  return "$status"
}
"""


def _answer(fifo: Path, status: int, proc: subprocess.Popen) -> None:
    """Write ``status`` into the fifo the waiting shell function reads (its reader may open it a moment later)."""
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            if proc.poll() is not None:
                return
            time.sleep(0.01)
            continue
        with os.fdopen(fd, "w") as answer:
            answer.write(f"{status}\n")
        return


def _in_process(argv: list[str]) -> tuple[int, str, str]:
    """``sc2tune ARGV`` through the console script's entry point in this process: (status, stdout, stderr);
    an uncaught exception is status 1 with its traceback on stderr."""
    from sc2tune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001 - reported as the block's failure, with its traceback
            traceback.print_exc()
            status = 1
    return status, out.getvalue(), err.getvalue()


def _run_shell(block: Block, cwd: Path, ipc: Path) -> str:
    """Run a shell block (module doc); returns its output, fails the test on a non-zero status or a traceback."""
    log = ipc / f"block-{block.line}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DOCS_TEST_IPC": str(ipc)}
    tracebacks: list[str] = []
    with log.open("w") as sink:
        proc = subprocess.Popen(["bash", "-c", _PRELUDE + shell_script(block)], cwd=cwd, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + BLOCK_TIMEOUT_S
        while True:
            requests = sorted(p for p in ipc.glob("req-*") if not p.name.endswith(".tmp"))
            for request in requests:
                name = request.name[len("req-"):]
                argv = [a.decode() for a in request.read_bytes().split(b"\0")[:-1]]
                request.unlink()
                status, out, err = _in_process(argv)
                if "Traceback (most recent call last)" in err:
                    tracebacks.append(f"sc2tune {' '.join(argv)}:\n{err}")
                (ipc / f"out-{name}").write_text(out)
                (ipc / f"err-{name}").write_text(err)
                _answer(ipc / f"status-{name}", status, proc)
            if not requests:
                if proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT_S} s")
                time.sleep(0.02)
    output = log.read_text()
    assert proc.returncode == 0, f"{block.where} exited {proc.returncode}:\n{block.code}\n--- output ---\n{output[-6000:]}"
    assert not tracebacks, f"{block.where} printed a traceback:\n" + "\n".join(tracebacks)[-6000:]
    return output


def test_a_shell_block_hands_sc2tune_lines_to_the_cli_with_their_output_and_status(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = ("sc2tune schema > schema.json\n"
            "sc2tune validate $'no such\\nrecipe.yaml' 2> err.txt || echo \"status $?\" > status.txt\n")
    ipc = tmp_path / "ipc"
    ipc.mkdir()
    _run_shell(Block(ROOT / "README.md", 1, "bash", code, None), tmp_path, ipc)
    assert {"model", "adapter", "task", "data", "train"} <= set(json.loads((tmp_path / "schema.json").read_text())["properties"])
    assert (tmp_path / "status.txt").read_text() in ("status 1\n", "status 2\n")
    assert "no such\nrecipe.yaml" in (tmp_path / "err.txt").read_text()  # one argument, as bash expanded it


def _run_python(block: Block) -> str:
    out = io.StringIO()
    code = compile(block.code, block.where, "exec")
    with contextlib.redirect_stdout(out):
        try:
            exec(code, {"__name__": "__main__"})  # noqa: S102 - the block is the docs' own code
        except Exception:  # noqa: BLE001
            pytest.fail(f"{block.where} raised:\n{block.code}\n{traceback.format_exc()[-6000:]}")
    return out.getvalue()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def run_page(page: Path, cwd: Path, ipc: Path) -> list[tuple[Block, float, float]]:
    """Run every unmarked block of ``page`` in order in ``cwd``; returns (block, wall s, CPU s) of each."""
    timings = []
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        for block in parse_blocks(page):
            if block.lang not in RUN or block.skip:
                continue
            start, cpu = time.monotonic(), _cpu_seconds()
            _run_shell(block, cwd, ipc) if block.lang in SHELL else _run_python(block)
            timings.append((block, time.monotonic() - start, _cpu_seconds() - cpu))
    finally:
        os.chdir(previous)
    return timings


def _new_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in LINKED:
        (path / name).symlink_to(ROOT / name, target_is_directory=True)
    return path


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Block, float, float]]]:
    """A folder where the README's blocks ran (they make ``runs/quickstart-fim`` with ``merged/``)."""
    base = tmp_path_factory.mktemp("docs")
    folder = _new_folder(base / "README")
    ipc = base / "ipc-README"
    ipc.mkdir()
    return folder, run_page(ROOT / "README.md", folder, ipc)


@pytest.mark.slow
def test_readme_blocks_run(quickstart_run):
    folder, timings = quickstart_run
    assert timings, "the README has no block that runs"
    _show(timings)
    assert (folder / "runs" / "quickstart-fim" / "merged" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_page_blocks_run(page: Path, quickstart_run, tmp_path: Path):
    if not any(b.lang in RUN and not b.skip for b in parse_blocks(page)):
        return  # nothing to run (test_every_block_is_run_or_marked lists its skipped blocks)
    folder, _ = quickstart_run
    here = _new_folder(tmp_path / "page")
    shutil.copytree(folder / "runs", here / "runs", symlinks=True)
    ipc = tmp_path / "ipc"
    ipc.mkdir()
    _show(run_page(page, here, ipc))


def _show(timings: list[tuple[Block, float, float]]) -> None:
    for block, wall, cpu in timings:
        print(f"\n{block.where}: {wall:.1f} s, {cpu:.1f} CPU s", end="")
