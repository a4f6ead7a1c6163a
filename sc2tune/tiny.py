"""The built-in tiny StarCoder2 (``sc2tune/tiny-starcoder2``): the embedded default for the quickstart and tests.

It is a real ``Starcoder2ForCausalLM`` (same modules, GELU MLP with ``c_fc``/``c_proj``, LayerNorm with
biases, grouped-query attention, tied embeddings like the 3B/7B) with few layers and a small hidden size,
randomly initialised from a fixed seed, and the real StarCoder2 tokenizer (49152 tokens) bundled in
``sc2tune/assets/tokenizer``. Building it needs no network and gives bit-identical weights every time.
"""

from __future__ import annotations

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


#: The tiny model's ``Starcoder2Config`` arguments (its config.json, less ``model_type``).
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 49152,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16384,
    "sliding_window": 4096,
    "rope_theta": 100000.0,
    "hidden_act": "gelu_pytorch_tanh",
    "use_bias": True,
    "norm_epsilon": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "tie_word_embeddings": True,
    "residual_dropout": 0.0,
    "embedding_dropout": 0.0,
    "attention_dropout": 0.0,
    "torch_dtype": "float32",
}


def tiny_config(*, num_labels: int | None = None) -> Starcoder2Config:
    """Config of the built-in tiny StarCoder2: StarCoder2's vocabulary, special ids and layout, small sizes."""
    from transformers import Starcoder2Config

    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    return Starcoder2Config(**TINY_CONFIG, **kwargs)


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

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        model = Starcoder2ForCausalLM(tiny_config())
    finally:
        torch.random.set_rng_state(generator_state)
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
