"""Fold an adapter into full weights, streaming (``sc2tune merge``): the face is :func:`merge`.

:mod:`sc2tune.merging.api` runs a merge (plan, stream, write, verify); the other modules are its parts:
``adapter`` (reading the adapter), ``checkpoint`` (the base's shards), ``plan`` (which update goes where),
``stream`` (the float32 update per tensor), ``writer`` / ``output`` (shards and the output folder),
``verify`` (merged vs PEFT's merge and the adapter model).
"""

from sc2tune.merging.api import MergeResult, describe_merge, merge

__all__ = ["MergeResult", "describe_merge", "merge"]
