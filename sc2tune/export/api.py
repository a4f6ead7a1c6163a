"""``sc2tune export``: a trained model as a GGUF file for llama.cpp (and Ollama, LM Studio), typed API.

:func:`export_gguf` writes the whole model (a model folder, or an adapter merged on the fly through sc2tune's
streamed merge) as one GGUF; :func:`export_gguf_lora` the adapter alone for llama.cpp's ``--lora``;
:func:`export` is the command, both behind one ``--format``, with ``--verify`` running the file in llama.cpp
against the training-side model (:mod:`sc2tune.export.verify`). Every file is written under a hidden sibling
name and renamed into place when complete (:mod:`sc2tune.atomic`): a failed export leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar, get_args

from sc2tune.atomic import staged_file
from sc2tune.clihelp import Help, TrustRemoteCode
from sc2tune.errors import DiskFullError, UserError, is_disk_full

if TYPE_CHECKING:
    from sc2tune.export.verify import VerifyReport

T = TypeVar("T")

ExportFormat = Literal["gguf", "gguf-lora"]
ExportDtype = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m",
                      "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"]
EXPORT_DTYPES: tuple[str, ...] = get_args(ExportDtype)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote, from what, and (with ``verify``) how it compares."""

    out: Path
    format: str
    dtype: str
    source: str  #: what was exported, in words
    tensors: int
    bytes: int
    seconds: float
    chat_template: bool
    verification: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)


def export_gguf(path: str | Path, out: str | Path, *, dtype: str = "f16", force: bool = False,
                trust_remote_code: bool = False) -> Path:
    """Write the model in ``path`` (model, merged, adapter or run folder) as the GGUF file ``out``; returns
    ``out``. ``dtype``: f32, f16, bf16, q8_0 (the gguf writer) or a llama.cpp type such as q4_k_m."""
    return export(path, out=out, dtype=dtype, force=force, trust_remote_code=trust_remote_code).out  # type: ignore[arg-type]


def export_gguf_lora(path: str | Path, out: str | Path, *, dtype: str = "f32", force: bool = False,
                     trust_remote_code: bool = False) -> Path:
    """Write the LoRA adapter of ``path`` (an adapter or run folder) as a GGUF-LoRA ``out`` for llama.cpp's
    ``--lora`` (:mod:`sc2tune.export.gguf_lora`); returns ``out``."""
    return export(path, out=out, format="gguf-lora", dtype=dtype, force=force,  # type: ignore[arg-type]
                  trust_remote_code=trust_remote_code).out


def export(
    path: Annotated[str | Path, Help("model, merged, adapter or run folder", metavar="PATH", positional=True)],
    *,
    out: Annotated[str | Path, Help("GGUF file to write", metavar="FILE")],
    format: Annotated[ExportFormat, Help("gguf: the whole model (an adapter merged on the fly); gguf-lora: the "
                                         "adapter alone, for llama.cpp's --lora")] = "gguf",
    dtype: Annotated[ExportDtype, Help("tensor type: f32, f16, bf16, q8_0 (written directly) or a llama.cpp "
                                       "type such as q4_k_m (quantised by llama.cpp)")] = "f16",
    verify: Annotated[bool, Help("run the file in llama.cpp against the training-side model and report "
                                 "agreement", flag="--verify")] = False,
    prompts: Annotated[int, Help("--verify: held-out prompts to compare", min=1)] = 8,
    new_tokens: Annotated[int, Help("--verify: greedy tokens generated per prompt", min=1)] = 64,
    force: Annotated[bool, Help("replace an existing FILE", flag="--force")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> ExportResult:
    """Export the model in ``path`` as a GGUF file ``out`` (see the module docstring)."""
    start = time.perf_counter()
    if format not in get_args(ExportFormat):
        raise UserError(f"unknown --format '{format}'", hint="choose gguf or gguf-lora")
    if dtype not in EXPORT_DTYPES:
        raise UserError(f"unknown --dtype '{dtype}'", hint=f"choose from {', '.join(EXPORT_DTYPES)}")
    target = Path(out)
    if target.is_dir():
        raise UserError(f"--out {target} is a folder", hint="give the GGUF file's path, e.g. model.gguf")
    if target.exists() and not force:
        raise UserError(f"--out {target} exists", hint="choose another file or pass --force to replace it")
    if not target.parent.is_dir():
        raise UserError(f"--out {target}: folder {target.parent} does not exist", hint="create it first")
    from sc2tune.export.quantize import LLAMA_TYPES, require_serve_extra

    require_serve_extra("gguf", *(["llama_cpp"] if verify or dtype in LLAMA_TYPES else []))
    if format == "gguf-lora":
        from sc2tune.export.gguf_lora import write_lora
        from sc2tune.export.verify import verify_lora

        lora = _write(target, lambda tmp: write_lora(path, tmp, dtype, trust_remote_code=trust_remote_code))
        report = verify_lora(path, target, prompts=prompts, new_tokens=new_tokens,
                             trust_remote_code=trust_remote_code) if verify else None
        return ExportResult(target, format, dtype, lora.source, lora.tensors, target.stat().st_size,
                            time.perf_counter() - start, False, report, lora.notes)
    from sc2tune.export.model_file import describe_source, write_gguf
    from sc2tune.export.verify import verify_gguf
    from sc2tune.export.weights import open_weights

    weights = open_weights(path, trust_remote_code=trust_remote_code)
    count, templated = _write(target, lambda tmp: write_gguf(weights, tmp, dtype))
    report = verify_gguf(path, target, prompts=prompts, new_tokens=new_tokens,
                         trust_remote_code=trust_remote_code) if verify else None
    return ExportResult(target, format, dtype, describe_source(weights), count, target.stat().st_size,
                        time.perf_counter() - start, templated, report)


def _write(target: Path, write: Callable[[Path], T]) -> T:
    """``write(tmp)`` into a staged sibling of ``target``, renamed into place when it returns (a full disk is a
    :class:`DiskFullError` naming ``target``; nothing is left half-written)."""
    try:
        with staged_file(target) as tmp:
            return write(tmp)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(f"the disk filled up while writing {target} ({err.strerror}); nothing was kept",
                                hint="free space or pass --out on another disk (a smaller --dtype is smaller)") from None
        raise


def describe_export(result: ExportResult) -> str:
    """Human summary of an export (printed by ``sc2tune export``)."""
    lines = [f"wrote {result.out}: {result.format} {result.dtype}, {result.tensors} tensors, "
             f"{result.bytes / 1e6:.1f} MB ({result.seconds:.1f}s)", f"  from {result.source}"]
    if result.chat_template:
        lines.append("  chat template: the run's instruction template (tokenizer.chat_template)")
    lines += [f"  note: {n}" for n in result.notes]
    if result.verification is not None:
        lines.append(result.verification.summary())
    return "\n".join(lines)
