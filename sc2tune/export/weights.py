"""The weights to export, one tensor at a time, from a model folder or from an adapter merged on the fly.

A model folder (a base, ``sc2tune merge``'s output, a full fine-tune's ``model/``) is read tensor by tensor
from its safetensors shards. An adapter (a run's ``adapter/`` or an adapter folder) goes through sc2tune's
streaming merge (:mod:`sc2tune.merging`): each base tensor is read alone and its update added in float32,
``W + scale * B @ A`` (DoRA: ``m / ||W + s B A|| * (W + s B A)``; QLoRA: into the NF4 round trip of ``W``, as
``sc2tune merge`` does), and handed on in float32, so the export rounds once to its own type. Peak memory is
about one tensor in float32 plus the adapter, never a second copy of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.errors import UserError
from sc2tune.modeling import ModelSource
from sc2tune.runs import TrainedFolder, read_trained, trained_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from sc2tune.merging.adapter import Adapter
    from sc2tune.merging.checkpoint import BaseCheckpoint
    from sc2tune.merging.plan import MergePlan


@dataclass
class Weights:
    """The tensors of the model to export (Hugging Face names, in reading order) and how to read them."""

    folder: TrainedFolder
    config: PretrainedConfig  #: the model's config (untied when the merge had to untie the embeddings)
    shapes: dict[str, tuple[int, ...]]  #: name -> shape, in the order :meth:`tensors` yields them
    _ckpt: BaseCheckpoint
    _plan: MergePlan | None = None
    _adapter: Adapter | None = None

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Each tensor once, in :attr:`shapes`' order: float32 for a merged one, the checkpoint's dtype else."""
        if self._plan is None:
            for name in self.shapes:
                yield name, self._ckpt.read(name)
            return
        from sc2tune.merging.stream import merged_tensors

        assert self._adapter is not None
        for src, _, out in merged_tensors(self._plan, self._adapter, self._ckpt):
            yield src.out.name, out

    def tokenizer(self) -> Any:
        """The tokenizer the model was trained with (saved with the adapter or model, else the base's)."""
        return trained_tokenizer(self.folder, "adapter" if self.folder.adapter_dir else "merged")


def open_weights(path: str | Path, *, trust_remote_code: bool = False) -> Weights:
    """The weights of the model in ``path`` (a model, merged, adapter or run folder); a classifier is refused.

    A run with an adapter exports the adapter merged into its base (not ``merged/``: the adapter is what
    training wrote); a full fine-tune exports ``model/``.
    """
    import torch

    from sc2tune.merging.checkpoint import open_checkpoint

    folder = read_trained(path, trust_remote_code=trust_remote_code)
    if folder.classifier:
        raise UserError(f"{path} is a sequence classifier: GGUF has no classification head (llama.cpp would "
                        "serve a language model without its trained 'score' head)",
                        hint="serve a classifier with transformers (sc2tune classify); export causal-LM runs")
    trust = folder.trust_remote_code
    if folder.adapter_dir is None:
        ckpt = open_checkpoint(ModelSource(str(folder.trained_dir), attn=None, trust_remote_code=trust))
        shapes = {name: info.shape for name, info in ckpt.tensors.items()}
        return Weights(folder, ckpt.config, shapes, ckpt)
    from dataclasses import replace

    from sc2tune.merging.adapter import load_adapter
    from sc2tune.merging.plan import build_plan

    adapter = replace(load_adapter(folder.adapter_dir, trust_remote_code=trust), folder=folder)
    ckpt = open_checkpoint(ModelSource(str(folder.base_dir()), attn=None, trust_remote_code=trust))
    plan = build_plan(adapter, ckpt, dtype=torch.float32, quant=adapter.quant)
    shapes = {s.out.name: s.out.shape for s in plan.sources}
    return Weights(folder, plan.config, shapes, ckpt, plan, adapter)
