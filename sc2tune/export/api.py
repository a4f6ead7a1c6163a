"""``sc2tune export``: a trained model as a GGUF file for llama.cpp (and Ollama, LM Studio), typed API.

:func:`export_gguf` writes the whole model (a model folder, or an adapter merged on the fly through sc2tune's
streamed merge) as one GGUF; :func:`export_gguf_lora` the adapter alone for llama.cpp's ``--lora``;
:func:`export` is the command, both behind one ``--format``, with ``--verify`` running the file in llama.cpp
against the training-side model (:mod:`sc2tune.export.verify`). Every file is written under a hidden sibling
name and renamed into place when complete (:mod:`sc2tune.atomic`): a failed export leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, get_args

from sc2tune.atomic import clear_leftovers, sibling, staged_file
from sc2tune.atomic import remove as remove_path
from sc2tune.clihelp import Help, TrustRemoteCode
from sc2tune.errors import DiskFullError, UserError, is_disk_full

if TYPE_CHECKING:
    from sc2tune.export.verify import VerifyReport
    from sc2tune.export.weights import Weights

log = logging.getLogger(__name__)

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


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder", hint="give the GGUF file's path, e.g. model.gguf")
    if out.exists() and not force:
        raise UserError(f"--out {out} exists", hint="choose another file or pass --force to replace it")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist", hint="create it first")


def _check_dtype(dtype: str) -> None:
    if dtype not in EXPORT_DTYPES:
        raise UserError(f"unknown --dtype '{dtype}'", hint=f"choose from {', '.join(EXPORT_DTYPES)}")


def describe_source(weights: Weights) -> str:
    """The exported model in words (the adapter merged into its base, or the model folder)."""
    folder = weights.folder
    if weights.merged_adapter is not None:
        return f"adapter {weights.merged_adapter} merged into {folder.base_name}"
    return f"model {folder.full_dir or folder.merged_dir or folder.path}"


def run_chat_template(weights: Weights) -> str | None:
    """The chat template of an instruction run (its ``data.template`` as Jinja), else None."""
    from sc2tune.data.chat_template import chat_template
    from sc2tune.data.templates import load_template
    from sc2tune.errors import DataError

    recipe = weights.recipe
    if recipe is None or recipe.task != "instruct" or not recipe.data.template:
        return None
    try:
        return chat_template(load_template(recipe.data.template))
    except DataError as err:
        log.warning("no chat template in the export: %s", err)
        return None


def _write_gguf(weights: Weights, file: Path, dtype: str, name: str) -> tuple[int, bool]:
    """Write the model GGUF into ``file`` (a staging path): the writer's own types directly, llama.cpp's
    quantised types through an F32 file quantised by llama.cpp."""
    from sc2tune.export.gguf_model import WRITER_DTYPES, write_model
    from sc2tune.export.gguf_tokenizer import gguf_vocab

    vocab = gguf_vocab(weights.tokenizer(), int(weights.config.vocab_size))
    template = run_chat_template(weights)
    if dtype in WRITER_DTYPES:
        return write_model(weights, file, dtype, name=name, vocab=vocab, chat_template=template), \
            template is not None  # type: ignore[arg-type]
    from sc2tune.export.quantize import llama_cpp_module, quantize

    llama_cpp_module()  # before the f32 file is written: refuse early
    f32 = sibling(file, "f32")
    clear_leftovers(file, "f32")
    try:
        count = write_model(weights, f32, "f32", name=name, vocab=vocab, chat_template=template)
        quantize(f32, file, dtype)
    finally:
        remove_path(f32)
    return count, template is not None


def export_gguf(path: str | Path, out: str | Path, *, dtype: str = "f16", force: bool = False,
                trust_remote_code: bool = False) -> Path:
    """Write the model in ``path`` (model, merged, adapter or run folder) as the GGUF file ``out``; returns
    ``out``. ``dtype``: f32, f16, bf16, q8_0 (the gguf writer) or a llama.cpp type such as q4_k_m."""
    return export(path, out=out, dtype=dtype, force=force, trust_remote_code=trust_remote_code).out  # type: ignore[arg-type]


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
    force: Annotated[bool, Help("replace an existing FILE", flag="--force")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> ExportResult:
    """Export the model in ``path`` as a GGUF file ``out`` (see the module docstring)."""
    start = time.perf_counter()
    if format not in get_args(ExportFormat):
        raise UserError(f"unknown --format '{format}'", hint="choose gguf or gguf-lora")
    _check_dtype(dtype)
    target = Path(out)
    _check_out(target, force)
    if format == "gguf-lora":
        from sc2tune.export.gguf_lora import write_lora

        try:
            with staged_file(target) as tmp:
                lora = write_lora(path, tmp, dtype, trust_remote_code=trust_remote_code)
        except OSError as err:
            _disk_full(err, target)
            raise
        report = None
        if verify:
            from sc2tune.export.verify import verify_lora

            report = verify_lora(path, target, prompts=prompts, trust_remote_code=trust_remote_code)
        return ExportResult(target, format, dtype, lora.source, lora.tensors, target.stat().st_size,
                            time.perf_counter() - start, False, report, lora.notes)
    from sc2tune.export.weights import open_weights

    weights = open_weights(path, trust_remote_code=trust_remote_code)
    name = (weights.folder.run_dir or weights.folder.path).name
    try:
        with staged_file(target) as tmp:
            count, templated = _write_gguf(weights, tmp, dtype, name)
    except OSError as err:
        _disk_full(err, target)
        raise
    report = None
    if verify:
        from sc2tune.export.verify import verify_gguf

        report = verify_gguf(path, target, prompts=prompts, trust_remote_code=trust_remote_code)
    return ExportResult(target, format, dtype, describe_source(weights), count, target.stat().st_size,
                        time.perf_counter() - start, templated, report)


def _disk_full(err: OSError, target: Path) -> None:
    if is_disk_full(err):
        raise DiskFullError(f"the disk filled up while writing {target} ({err.strerror}); nothing was kept",
                            hint="free space or pass --out on another disk (a smaller --dtype is smaller)") from None


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
