"""Builders shared by the planner tests: small model configs, StarCoder2's LoRA targets, a 15B recipe.

(The underscore names are kept from the files these tests came from, so the tests read as before.)
"""

from __future__ import annotations

from transformers import GPTBigCodeConfig, Starcoder2Config

STARCODER2_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]
#: A 2-layer StarCoder2 a real DoRA step runs on in about a second.
CONFIG = Starcoder2Config(vocab_size=1024, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=2, use_bias=True, bos_token_id=0,
                          eos_token_id=0, attn_implementation="sdpa", tie_word_embeddings=True)


def _small_configs() -> dict[str, object]:
    common = dict(bos_token_id=0, eos_token_id=0)
    return {
        # real vocabulary: the embeddings (kept 16-bit) weigh like in the real models
        "starcoder2-vocab": Starcoder2Config(vocab_size=49152, hidden_size=256, intermediate_size=1024,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             use_bias=True, tie_word_embeddings=True, **common),
        # small vocabulary, untied head: the quantised linears dominate
        "starcoder2-linear": Starcoder2Config(vocab_size=512, hidden_size=256, intermediate_size=1024,
                                              num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                              use_bias=True, tie_word_embeddings=False, **common),
        "gptbigcode-vocab": GPTBigCodeConfig(vocab_size=49152, n_embd=256, n_inner=1024, n_layer=2, n_head=4,
                                             n_positions=1024, multi_query=True, **common),
        "gptbigcode-linear": GPTBigCodeConfig(vocab_size=512, n_embd=256, n_inner=1024, n_layer=4, n_head=4,
                                              n_positions=256, multi_query=True, **common),
    }


def _recipe(**train: object) -> dict:
    return {"model": {"name_or_path": "bigcode/starcoder2-15b"}, "task": "instruct",
            "data": {"train": "x.jsonl", "max_length": 2048},
            "adapter": {"method": "lora", "r": 16}, "train": {"batch_size": 4, "grad_accum": 4, **train}}
