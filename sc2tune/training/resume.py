"""What ``--resume`` continues from: the newest intact checkpoint, and the run's logs trimmed to it.

A checkpoint folder ``checkpoints/checkpoint-N`` is *intact* when

* its ``trainer_state.json`` is a JSON object (a regular UTF-8 file of at most :data:`MAX_STATE_BYTES`) with only the keys of transformers' ``TrainerState``, whose ``global_step`` is the whole number N of the folder's name (transformers names a checkpoint
  after its step, so a ``global_step`` of ``1e12`` in ``checkpoint-4`` is damage, not a position: resuming from
  it would skip the whole run and "succeed" having trained nothing);
* it holds the model's weights: an adapter or model file (``adapter_model.safetensors``, ``model.safetensors``,
  ``pytorch_model.bin``, an index) or a sharded-state folder (FSDP ``pytorch_model_fsdp_*``, DeepSpeed
  ``global_step*``); a ``.safetensors`` file's header must read.

``--resume`` takes the newest intact checkpoint. Newer ones that are not intact (an empty ``checkpoint-999/``,
a malformed state) are named in a warning with the reason and renamed ``checkpoint-N.broken`` (by the main
process), so that transformers' rotation of old checkpoints (``save_total_limit``) never keeps a broken one in
place of a good one and a later ``--resume`` does not meet it again. When checkpoints exist but none is intact,
the run stops with an error naming the first broken file and nothing is changed. Every sc2tune checkpoint is
written under a staging name and renamed into place when complete, so a broken one comes from outside.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

from transformers import TrainerState

from sc2tune.atomic import move, write_file
from sc2tune.errors import UserError
from sc2tune.runs import ADAPTER_WEIGHTS, MODEL_WEIGHTS, read_metadata_text
from sc2tune.runs.declared import safetensors_names

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_WEIGHT_FILES = (*ADAPTER_WEIGHTS, *MODEL_WEIGHTS)
_WEIGHT_DIRS = ("pytorch_model_fsdp", "global_step")
BROKEN_SUFFIX = ".broken"
#: Largest trainer_state.json read (its log_history grows with the run: ~150 bytes per logged step).
MAX_STATE_BYTES = 256 << 20
_STATE_FIELDS = {f.name for f in dataclasses.fields(TrainerState)}


def checkpoint_problem(folder: Path, step: int) -> tuple[Path, str] | None:
    """(the file at fault, what is wrong) when ``folder`` (``checkpoint-{step}``) is not intact, else None."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as err:
        return folder, f"cannot list it ({err.strerror})"
    if not names:
        return folder, "it is empty"
    state = folder / TRAINER_STATE
    if TRAINER_STATE not in names:
        return state, "missing"
    try:
        saved = json.loads(read_metadata_text(state, limit=MAX_STATE_BYTES))
    except UserError as err:
        return state, str(err).removeprefix(f"{state}: ")
    except json.JSONDecodeError as err:
        return state, f"not JSON ({err})"
    if not isinstance(saved, dict):
        return state, f"expected a JSON object, found {type(saved).__name__}"
    unknown = sorted(set(saved) - _STATE_FIELDS)
    if unknown:  # transformers builds TrainerState(**saved): an unknown key is a TypeError there
        return state, f"keys transformers' TrainerState does not have: {', '.join(unknown[:5])}"
    global_step = saved.get("global_step")
    if type(global_step) is not int or global_step != step:
        return state, f"global_step is {global_step!r}, not the step {step} its folder is named after"
    weights = [n for n in _WEIGHT_FILES if n in names]
    if not weights and not any(n.startswith(_WEIGHT_DIRS) for n in names):
        return folder, f"no model weights ({', '.join(_WEIGHT_FILES[:3])}, ...)"
    for name in weights:
        if name.endswith(".safetensors"):
            try:
                safetensors_names(folder / name)
            except UserError as err:
                return folder / name, str(err).removeprefix(f"{folder / name}: ")
    return None


def resume_checkpoint(checkpoints: Path, *, main_process: bool) -> tuple[str | None, int]:
    """(the newest intact checkpoint's path or None, its step or -1), with broken newer ones warned about and
    moved aside (module doc); an error naming the file when checkpoints exist and none is intact."""
    if not checkpoints.is_dir():
        return None, -1
    found = sorted(((int(m.group(1)), p) for p in checkpoints.iterdir()
                    if (m := _NAME.match(p.name)) and p.is_dir()), reverse=True)
    broken: list[tuple[Path, Path, str]] = []
    for step, folder in found:
        problem = checkpoint_problem(folder, step)
        if problem is None:
            for bad, file, why in broken:
                aside = _aside(bad)
                log.warning("--resume: skipped %s (%s: %s); resuming from %s; the broken one is renamed %s",
                            bad.name, file, why, folder.name, aside.name)
                if main_process:
                    move(bad, aside)
            return str(folder), step
        broken.append((folder, *problem))
    if broken:
        _, file, why = broken[0]
        raise UserError(
            f"--resume: no intact checkpoint in {checkpoints}: {file}: {why}"
            + (f" (and {len(broken) - 1} more broken)" if len(broken) > 1 else ""),
            hint="restore the checkpoint, or remove the broken checkpoint folder(s) to restart this run from the "
            "beginning with --resume, or start a new run: output_dir=runs/NEW")
    return None, -1


def _aside(folder: Path) -> Path:
    """``checkpoint-N.broken`` (``.broken-2``, ... when taken): a name transformers does not take for a
    checkpoint."""
    aside, n = folder.with_name(folder.name + BROKEN_SUFFIX), 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}{BROKEN_SUFFIX}-{n}")
    return aside


def trim_metrics(path: Path, step: int) -> None:
    """Keep the metric lines logged at or before ``step`` (the resumed run logs later ones again); drop the
    lines that are not sc2tune's records: unreadable (a line cut short by the kill that interrupted the run,
    bytes that are not UTF-8), not a JSON object, or a ``step`` that is not a whole number (counted in a
    warning). A line without a step is kept."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for raw in path.read_bytes().splitlines():
        try:
            line = raw.decode("utf-8")
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            dropped += 1
            continue
        at = record.get("step", 0) if isinstance(record, dict) else None
        if type(at) is not int:
            dropped += 1
            continue
        if at <= step:
            kept.append(line)
    if dropped:
        log.warning("--resume: dropped %d line(s) of %s that are not metric records (cut short, not JSON "
                    "objects, or a step that is not a whole number)", dropped, path)
    write_file(path, "".join(line + "\n" for line in kept))
