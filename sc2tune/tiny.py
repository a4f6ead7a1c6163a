"""The built-in tiny StarCoder2 (``sc2tune/tiny-starcoder2``): the embedded default for the quickstart and tests.

It is a real ``Starcoder2ForCausalLM`` (same modules, GELU MLP with ``c_fc``/``c_proj``, LayerNorm with
biases, grouped-query attention, tied embeddings like the 3B/7B) with few layers and a small hidden size,
randomly initialised from a fixed seed, and the real StarCoder2 tokenizer (49152 tokens) bundled in
``sc2tune/assets/tokenizer``. Building it needs no network and gives bit-identical weights every time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from sc2tune.clihelp import Help
from sc2tune.errors import UserError
from sc2tune.recipe import TINY_MODEL

if TYPE_CHECKING:  # torch and transformers are imported where they are used: `is_tiny` and the config stay light
    from transformers import PreTrainedTokenizerBase, Starcoder2Config, Starcoder2ForCausalLM

ASSETS = Path(__file__).parent / "assets"
TOKENIZER_DIR = ASSETS / "tokenizer"

#: Weights are drawn from this seed, so the tiny model is the same on every machine.
TINY_SEED = 1234


#: The tiny model's config.json, shipped with the bundled configs (:mod:`sc2tune.configs` reads it there too).
TINY_CONFIG_FILE = ASSETS / "configs" / "tiny-starcoder2.json"
#: The tiny model's ``Starcoder2Config`` arguments (its config.json, less ``model_type``).
TINY_CONFIG: dict[str, Any] = {k: v for k, v in json.loads(TINY_CONFIG_FILE.read_text(encoding="utf-8")).items()
                               if k != "model_type"}


def tiny_config(*, num_labels: int | None = None) -> Starcoder2Config:
    """Config of the built-in tiny StarCoder2: StarCoder2's vocabulary, special ids and layout, small sizes."""
    from transformers import Starcoder2Config

    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    return Starcoder2Config(**TINY_CONFIG, **kwargs)


def cache_dir() -> Path:
    """Where sc2tune keeps materialised assets (``$SC2TUNE_CACHE`` or ``~/.cache/sc2tune``): the built-in
    model written as a checkpoint, and the prepared data of ``data.cache_dir: auto`` (``cache_dir() / "data"``).

    ``SC2TUNE_CACHE`` is a user setting like ``HF_HOME`` (docs/data.md, "Where"); this is the one place that reads it.
    """
    return Path(os.environ.get("SC2TUNE_CACHE", Path.home() / ".cache" / "sc2tune"))


def is_tiny(name_or_path: str) -> bool:
    """True for the reserved name of the built-in model."""
    return name_or_path == TINY_MODEL


def load_bundled_tokenizer() -> PreTrainedTokenizerBase:
    """The real StarCoder2 tokenizer shipped inside the package (no pad token, like the original)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def build_tiny_model() -> Starcoder2ForCausalLM:
    """A freshly initialised tiny StarCoder2 causal LM, identical on every call (seeded)."""
    import torch
    from transformers import Starcoder2ForCausalLM

    with torch.random.fork_rng(devices=[]):  # the caller's (CPU) random state is left as it was
        torch.manual_seed(TINY_SEED)
        model = Starcoder2ForCausalLM(tiny_config())
    model.eval()
    return model


def write_tiny_model(
    out_dir: Annotated[str | Path, Help("folder to write (config.json, model.safetensors, tokenizer)",
                                        metavar="OUT_DIR", positional=True)],
    *,
    overwrite: Annotated[bool, Help("write into a non-empty folder", flag="--overwrite")] = False,
) -> Path:
    """Write the tiny model as an ordinary Hugging Face folder (config, safetensors, tokenizer)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty", hint="choose a new folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model()
    model.generation_config.pad_token_id = None
    model.save_pretrained(out)
    if not (out / "model.safetensors").is_file():  # under a launcher transformers writes on rank 0 only
        from safetensors.torch import save_model

        model.config.save_pretrained(out)
        model.generation_config.save_pretrained(out)
        save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    load_bundled_tokenizer().save_pretrained(out)
    return out
