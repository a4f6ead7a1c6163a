"""A model's module tree as plain data (:class:`ModelLayout`), derived from config.json without torch.

The planner and the LoRA target check need names, kinds and shapes of a model's modules, never weights.
For the architectures sc2tune ships (``starcoder2``, ``gpt_bigcode``) :func:`analytic_layout` writes the tree
down from the config (transformers' modeling code, transcribed); :func:`layout_of_model` reads the same data
off any instantiated (meta-device) model, which is the fallback for every other architecture and the
reference the analytic layouts are tested against.

Modules: ``layout`` (the data types and :func:`layout_of_model`), ``analytic`` (:func:`analytic_layout`, the
dispatch by ``model_type``), ``starcoder2`` and ``gpt_bigcode`` (each architecture's transcription, its module
tree drawn in its docstring), ``transcription`` (the pieces they share: typed config fields, Linear and
LayerNorm entries, the head, transformers' default skip list). Importing the package imports no torch.
"""

from sc2tune.architectures.analytic import analytic_layout
from sc2tune.architectures.layout import ModelLayout, layout_of_model

__all__ = ["ModelLayout", "analytic_layout", "layout_of_model"]
