"""What a saved classifier adapter carries so that plain transformers + PEFT use it as sc2tune trained it.

A classifier reads the last non-pad token of each row. sc2tune trains on
``tokens(text)[:max_length - 1] + [<|endoftext|>]`` (``sc2tune.data.classification``), right-padded with
``<fim_pad>``, and StarCoder2's base config has no ``pad_token_id`` (transformers then refuses batches
larger than one). So the adapter folder of a classification run holds:

* a tokenizer that appends ``<|endoftext|>`` to every text (``tokenizer.json``'s post-processor, which
  truncation accounts for), pads on the right with ``<fim_pad>``, cuts at the recipe's ``data.max_length``
  on its ``data.truncation_side`` and splits special-token text in the input, as training did;
* ``classifier/config.json``: the base config with ``num_labels``, the label names and ``pad_token_id``.

Loading it then takes three lines (the README shows them)::

    config = AutoConfig.from_pretrained("RUN/adapter/classifier")
    tokenizer = AutoTokenizer.from_pretrained("RUN/adapter")
    model = AutoModelForSequenceClassification.from_pretrained("RUN/adapter", config=config)

The subfolder keeps ``config.json`` out of the adapter folder itself: transformers reads a folder with a
``config.json`` as a full model and would look for its weights there.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PretrainedConfig

from sc2tune.modeling import ModelSource, load_tokenizer
from sc2tune.recipe import DataSpec
from sc2tune.runs import CLASSIFIER_DIR


def save_classifier_files(folder: Path, config: PretrainedConfig, data: DataSpec) -> None:
    """Rewrite the tokenizer saved in ``folder`` to encode as training did and add ``classifier/``."""
    tokenizer = load_tokenizer(
        ModelSource(str(folder)), pad=False, add_eos_token=True, split_special_tokens=True, padding_side="right",
        truncation_side=data.truncation_side, model_max_length=data.max_length,
    )
    tokenizer.save_pretrained(str(folder))
    head = config.__class__.from_dict(config.to_dict())  # a copy; the trained model's config stays as it is
    head.pad_token_id = tokenizer.pad_token_id
    head.architectures = [f"{type(config).__name__.removesuffix('Config')}ForSequenceClassification"]
    head.save_pretrained(str(folder / CLASSIFIER_DIR))
