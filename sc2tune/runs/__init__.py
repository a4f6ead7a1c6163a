"""Trained folders: what a run, an adapter and a model folder hold, read into typed objects, and loaded.

Three layouts, told apart by their files (:func:`folder_kind`)::

    run folder (OUTPUT, written by ``sc2tune train``; every path: :class:`RunFolder`)
        adapter/          an adapter folder (below); ``model/`` instead for adapter.method: full
        merged/           a model folder, after ``sc2tune merge`` (optional)
        checkpoints/, recipe.yaml (also inside adapter/ or model/), metrics.jsonl, summary.json, data.json, ...
        .sc2tune-train.lock   written first by every run and kept: the run's lock and its mark
                              (:func:`is_run_folder`; ``train`` writes only into a new or empty folder or a run)

    adapter folder (PEFT ``save_pretrained`` plus what sc2tune adds)
        adapter_config.json                     PEFT's config (peft_type, r, base_model_name_or_path, ...)
        adapter_model.safetensors | .bin        the LoRA factors (and a classifier's ``score`` head)
        recipe.yaml                             the run's resolved recipe (optional)
        tokenizer.json, tokenizer_config.json   the tokenizer trained with (optional)
        labels.json                             {id: name} of a classifier (optional)
        classifier/config.json                  a classifier's base config with its head (training.portable)

    model folder (a base, a merged model or a full fine-tune: plain ``from_pretrained``)
        config.json, model.safetensors | model-0000i-of-0000N.safetensors + index, tokenizer (optional),
        recipe.yaml (optional: a merge copies the adapter's), sc2tune_merge.json (after a merge)

:func:`read_trained` returns a :class:`TrainedFolder` (the saved recipe as a :class:`~sc2tune.recipe.Recipe`
read by :func:`~sc2tune.recipe.load_recipe`, so a saved ``model.trust_remote_code: true`` is refused unless the
caller's overrides confirm it; the PEFT config as PEFT reads it). :func:`load_trained` loads its ``base``
(as trained: 4-bit for QLoRA), ``adapter`` (base + PEFT adapter, or the full fine-tune) or ``merged`` model
with its tokenizer. Metadata files are read only when they are regular files (a symlink is followed to one)
of at most :data:`~sc2tune.runs.layout.MAX_METADATA_BYTES`; anything else is a
:class:`~sc2tune.errors.UserError` naming the file.
An adapter file is used only when every tensor in it is one its config declares (:mod:`sc2tune.runs.declared`).
"""

from sc2tune.runs.declared import check_declared, undeclared
from sc2tune.runs.layout import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CLASSIFIER_DIR,
    LABELS_FILE,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    RECIPE_FILE,
    RUN_ADAPTER,
    RUN_FULL,
    RUN_LOCK,
    RunFolder,
    folder_kind,
    has_tokenizer,
    is_run_folder,
    read_adapter_json,
    read_json_object,
    read_metadata_text,
    resolve_base,
)
from sc2tune.runs.loading import load_trained, model_source, quiet_transformers, trained_tokenizer
from sc2tune.runs.trained import TrainedFolder, read_trained

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "CLASSIFIER_DIR", "LABELS_FILE",
    "MODEL_CONFIG", "MODEL_WEIGHTS", "RECIPE_FILE", "RUN_ADAPTER", "RUN_FULL", "RUN_LOCK",
    "RunFolder", "TrainedFolder", "check_declared", "folder_kind",
    "has_tokenizer", "is_run_folder", "load_trained", "model_source", "quiet_transformers",
    "read_adapter_json", "read_json_object", "read_metadata_text", "read_trained", "resolve_base",
    "trained_tokenizer", "undeclared",
]
