"""Fold a LoRA/QLoRA adapter into full weights, streaming the base checkpoint tensor by tensor.

Every merged weight is ``W + scale * B @ A`` computed in float32 and rounded once to the output dtype
(``scale = alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA; per-module ``rank_pattern``/``alpha_pattern``);
for DoRA it is ``m / ||W + scale * B @ A|| * (W + scale * B @ A)``, the norm per output feature (over the
input axis), also in float32 with one rounding.
A QLoRA adapter is merged by default into ``dequant(quant(W))``, the 4-bit NF4 round trip of the base
that it was trained against (``merge_into="original"`` uses ``W`` itself); 4-bit weights are never
written. Peak memory is about the largest single tensor in float32 plus the adapter, not the model.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from sc2tune.clihelp import Help, TrustRemoteCode
from sc2tune.errors import DiskFullError, UserError, is_disk_full
from sc2tune.modeling import TOKENIZER_CONFIG, ModelSource, own_code_refused, tokenizer_names_own_code
from sc2tune.recipe import QuantSpec
from sc2tune.runs import resolve_base

if TYPE_CHECKING:  # the merge's parts import torch/transformers: imported when a merge runs (``merge --help``
    # derives its options from :func:`merge`'s signature and must stay light)
    from sc2tune.merging.stream import StreamStats
    from sc2tune.merging.verify import Verification

log = logging.getLogger(__name__)

MergeDtype = Literal["bfloat16", "float16", "float32"]
MergeInto = Literal["quantized", "original"]


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge` wrote and how it checked it."""

    out_dir: Path
    base: str
    dtype: str
    stats: StreamStats
    untied: bool
    round_trip: str | None  # e.g. "nf4" when merged into the 4-bit round trip
    verification: Verification | None
    seconds: float
    notes: list[str] = field(default_factory=list)


def merge(
    adapter_dir: Annotated[str | Path, Help("PEFT LoRA/QLoRA adapter folder (adapter_config.json)",
                                            metavar="ADAPTER_DIR", positional=True)],
    out_dir: Annotated[str | Path, Help("folder to write (must not exist)", flag="--out", metavar="OUT_DIR")],
    *,
    base: Annotated[str | None, Help("base model folder or hub id (default: the adapter's base_model_name_or_path)",
                                     metavar="PATH_OR_ID")] = None,
    dtype: Annotated[MergeDtype | None, Help("output dtype (default: the base checkpoint's)")] = None,
    shard_size: Annotated[str | int, Help("largest output shard, e.g. 2GB, 500MB")] = "2GB",
    verify: Annotated[bool, Help("skip comparing merged and adapter logits (verification loads base + adapter)",
                                 flag="--no-verify")] = True,
    overwrite: Annotated[bool, Help("replace OUT_DIR when it holds an earlier model output (any other folder is "
                                    "refused)", flag="--overwrite")] = False,
    merge_into: Annotated[MergeInto, Help("QLoRA adapters: merge into the NF4 round trip they were trained against "
                                          "or into the original base weights")] = "quantized",
    qlora: Annotated[bool | None, Help("treat the adapter as QLoRA (NF4, double quant) even without sc2tune's "
                                       "recipe.yaml", flag="--qlora")] = None,
    progress: Annotated[bool, Help("no progress bar", flag="--no-progress")] = True,
    trust_remote_code: TrustRemoteCode = False,
) -> MergeResult:
    """Merge the PEFT LoRA adapter in ``adapter_dir`` into its base and write a plain transformers folder.

    Each parameter's ``Help`` is its ``sc2tune merge`` option and says what it does; in more detail:
        out_dir: folder to create; refused if it exists unless ``overwrite``, and even then unless it holds a
            previous model output (``sc2tune_merge.json``, or ``config.json`` with weights).
        verify: rebuild the merge with PEFT's own float32 merge rounded once to ``dtype`` and require every
            merged tensor within one ``dtype`` step of it, then compare logits on a few prompts (loads base +
            adapter in the checkpoint's dtype, then the merged model, one at a time); see
            :mod:`sc2tune.merging.verify`.
        qlora: treat the adapter as QLoRA (NF4, double quant, block 64) even without sc2tune's
            ``recipe.yaml``; ``False`` treats it as plain LoRA; None reads ``recipe.yaml``.
        trust_remote_code: ``--trust-remote-code``: the base's and its tokenizer's own code (``auto_map``) may
            run (:class:`~sc2tune.modeling.ModelSource`), and a saved recipe's ``model.trust_remote_code`` is
            confirmed. Never read from the folders: without it, a base or tokenizer (the adapter's, else the
            base's) that needs its own code is refused before any of it runs and before any weight is streamed.
    """
    import torch

    from sc2tune.data.chat_template import recipe_chat_template
    from sc2tune.merging import output
    from sc2tune.merging.adapter import load_adapter
    from sc2tune.merging.checkpoint import open_checkpoint
    from sc2tune.merging.plan import build_plan
    from sc2tune.merging.quant import BLOCKSIZE
    from sc2tune.merging.stream import stream_merge
    from sc2tune.merging.verify import verify_merge
    from sc2tune.sizes import parse_size

    start = time.perf_counter()
    if merge_into not in ("quantized", "original"):
        raise UserError(f"merge_into must be 'quantized' or 'original', not '{merge_into}'")
    adapter_path, out = Path(adapter_dir), Path(out_dir)
    # its saved recipe before its tensors: one saying model.trust_remote_code: true stops there unless trusted
    adapter = load_adapter(adapter_path, trust_remote_code=trust_remote_code)
    assert adapter.folder is not None
    base_name = base or adapter.folder.base_name
    if not base_name:
        raise UserError(f"{adapter_path}: the adapter does not name its base model",
                        hint="pass --base with the base model folder or hub id")
    base_dir = resolve_base(base_name, trust_remote_code=trust_remote_code)  # a hub base's *.py only if trusted
    head = "sequence-classification" if adapter.is_classifier else "causal-lm"
    ckpt = open_checkpoint(ModelSource(str(base_dir), head=head, attn=None, trust_remote_code=trust_remote_code))
    # the tokenizer the merged folder gets (adapter's, else base's) may name its own code too: refused now,
    # not by write_metadata after hours of streaming
    tok_dir = output.tokenizer_source(adapter_path, base_dir)
    if not trust_remote_code and tok_dir is not None and tokenizer_names_own_code(tok_dir):
        raise own_code_refused(tok_dir, file=TOKENIZER_CONFIG)
    out_dtype = getattr(torch, dtype) if dtype else ckpt.dtype
    trained_quant = adapter.quant if qlora is None else (adapter.quant or QuantSpec()) if qlora else None
    quant = None if merge_into == "original" else trained_quant
    cleaned = output.clean_stale(out.parent)  # first: a dead merge's set-aside output may be NAME again
    output.check_out_dir(out, overwrite=overwrite, inputs=[adapter_path, base_dir])
    plan = build_plan(adapter, ckpt, dtype=out_dtype, quant=quant, id2label=adapter.folder.labels)
    if trained_quant is not None and quant is None:
        plan.notes.append("merged into the original (unquantised) weights, not the 4-bit round trip the adapter "
                          "was trained against: the result is not the model as trained (verification measures "
                          "the difference)")
    plan.notes.extend(cleaned)
    for note in plan.notes:
        log.info("%s", note)
    total = sum(s.out.nbytes for s in plan.sources)
    _check_free_space(out, total)
    round_trip = quant and {"quant_type": quant.quant_type, "double_quant": quant.double_quant,
                            "blocksize": BLOCKSIZE, "dtype": plan.quant_dtype}
    verification = None
    try:  # stream, describe and verify the merge in a staging folder beside ``out``, then publish it
        with output.staging_dir(out) as tmp:
            stats = stream_merge(plan, adapter, ckpt, tmp, shard_bytes=parse_size(shard_size), progress=progress)
            provenance = {
                "adapter": str(adapter_path.resolve()), "base": base_name, "base_dir": str(ckpt.path),
                "dtype": str(out_dtype).removeprefix("torch."), "round_trip": round_trip,
                "untied_embeddings": plan.untied, "tensors": stats.tensors, "lora_merged": stats.lora_merged,
                "changed_tensors": stats.changed, "notes": plan.notes,
            }
            output.write_metadata(tmp, plan.config, base=ckpt.source, adapter_dir=adapter_path,
                                  classifier=plan.classifier, provenance=provenance,
                                  chat_template=recipe_chat_template(adapter.recipe))
            if stats.changed == 0:
                msg = "the merged weights equal the base's: the adapter changes nothing (an untrained " \
                      f"adapter with all-zero lora_B, or an update below {out_dtype} rounding)"
                if verify:
                    raise UserError(msg, hint="nothing was written; pass --no-verify to write it anyway")
                log.warning("%s", msg)
            if verify:
                verification = verify_merge(tmp, plan, ckpt.source, adapter_path, dtype=out_dtype,
                                            trained_quant=trained_quant, base_dtype=ckpt.dtype)
                log.debug("verification: %s", verification.summary())
                if not verification.passed:
                    raise UserError(
                        f"the merged model does not reproduce the adapter model: {verification.summary()}",
                        hint="nothing was written to --out; this is a bug worth reporting (rerun with "
                        "--no-verify to keep the output anyway)",
                    )
                provenance["verification"] = asdict(verification)
                output.write_provenance(tmp, provenance)
            output.publish(tmp, out, overwrite=overwrite)
    except OSError as err:
        if not is_disk_full(err):
            raise
        raise DiskFullError(
            f"the disk filled up while writing the merged model beside {out} ({err.strerror}); the partial "
            f"output was removed and --out was left as it was. The merged weights need {total / 1e9:.2f} GB",
            hint="free space on that disk or pass --out on another one (a smaller --dtype also halves it)",
        ) from None
    return MergeResult(out, base_name, str(out_dtype).removeprefix("torch."), stats, plan.untied,
                       quant.quant_type if quant else None, verification, time.perf_counter() - start,
                       plan.notes)


def _check_free_space(out: Path, needed: int) -> None:
    """Refuse to start when the output's disk cannot hold the merged weights."""
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if parent is None:  # a relative --out under a working folder that is gone: the write will say so
        return
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise UserError(f"not enough disk space for --out {out}: the merged weights need {needed / 1e9:.2f} GB, "
                        f"{parent} has {free / 1e9:.2f} GB free",
                        hint="free space on that disk or pass --out on another one")


def describe_merge(result: MergeResult) -> str:
    """Human summary of a merge (printed by ``sc2tune merge``)."""
    s = result.stats
    lines = [f"wrote {result.out_dir}: {s.tensors} tensors in {s.shards} shard(s), {s.bytes_written / 1e9:.2f} GB "
             f"{result.dtype}, {s.lora_merged} LoRA updates merged, {s.changed} tensors changed "
             f"({result.seconds:.1f}s)"]
    lines += [f"  note: {n}" for n in result.notes]
    if result.verification is not None:
        lines.append(f"  verified: {result.verification.summary()}")
    else:
        lines.append("  not verified (--no-verify)")
    return "\n".join(lines)
