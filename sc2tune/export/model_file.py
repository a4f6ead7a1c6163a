"""The whole-model GGUF file of a :class:`~sc2tune.export.weights.Weights`: vocabulary, chat template of an
instruction run, tensors in the writer's own types, or llama.cpp's quantised types through an F32 file."""

from __future__ import annotations

from pathlib import Path

from sc2tune.atomic import clear_leftovers, sibling
from sc2tune.atomic import remove as remove_path
from sc2tune.export.weights import Weights


def describe_source(weights: Weights) -> str:
    """The exported model in words (the adapter merged into its base, or the model folder)."""
    folder = weights.folder
    if folder.adapter_dir is not None:  # merged on the fly
        return f"adapter {folder.adapter_dir} merged into {folder.base_name}"
    return f"model {folder.trained_dir}"


def write_gguf(weights: Weights, file: Path, dtype: str) -> tuple[int, bool]:
    """Write the model GGUF into ``file`` (a staging path; not atomic: the caller publishes it): the writer's own
    types directly, llama.cpp's quantised types through an F32 file quantised by llama.cpp. Returns the tensor
    count and whether a chat template went in."""
    from sc2tune.data.chat_template import recipe_chat_template
    from sc2tune.export.gguf_model import WRITER_DTYPES, write_model
    from sc2tune.export.gguf_tokenizer import gguf_vocab

    name = (weights.folder.run_dir or weights.folder.path).name
    vocab = gguf_vocab(weights.tokenizer(), int(weights.config.vocab_size))
    template = recipe_chat_template(weights.folder.recipe)  # an instruction run's data.template as Jinja, else None
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
