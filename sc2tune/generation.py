"""Generation with a trained model: left-to-right completion, FIM infilling, instructions, classification.

``PATH`` may be a model folder (base or merged), a PEFT adapter folder (its base is loaded as in
training, 4-bit for QLoRA, with the adapter on top) or a run folder holding ``adapter/``.

Prompts:

* completion: the text itself; the continuation is returned;
* FIM infill, PSM order: ``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>`` built from token ids
  (the user's text never turns into special tokens), generation stops at ``<|endoftext|>`` or
  ``<file_sep>`` and only the middle is returned; with a :class:`RepoContext`, in StarCoder2's repository
  layout exactly as training renders it (:func:`infill_prompt_ids`);
* instruction: the run's template (``data.template`` in ``recipe.yaml``, e.g. Alpaca) rendered with
  ``instruction`` and ``input``; the response is returned.

Sampling parameters, defaults and ranges are those of ``sc2tune serve`` (:mod:`sc2tune.sampling`: temperature 0
is greedy; presence and frequency penalties: :mod:`sc2tune.penalties`); ``stop`` strings cut the output at their
first occurrence; the ``*_responses`` functions return ``n`` responses (greedy: ``n`` copies of the one text).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sc2tune.decoding import context_length, cut_at_stop
from sc2tune.errors import UserError
from sc2tune.sampling import DEFAULTS, RANGES, BadParameter, check_parameters, check_stop

if TYPE_CHECKING:
    from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)

CURSOR = "<cursor>"


@dataclass(frozen=True)
class Sampling:
    """Decoding settings: the defaults and ranges of :mod:`sc2tune.sampling` (``max_new_tokens`` is its
    ``max_tokens``), checked there so that ``generate`` and ``serve`` accept exactly the same values."""

    max_new_tokens: int = DEFAULTS["max_tokens"]
    temperature: float = DEFAULTS["temperature"]  # 0 = greedy
    top_p: float = DEFAULTS["top_p"]
    top_k: int = DEFAULTS["top_k"]  # 0 = off
    repetition_penalty: float = DEFAULTS["repetition_penalty"]  # 1 = none
    presence_penalty: float = DEFAULTS["presence_penalty"]
    frequency_penalty: float = DEFAULTS["frequency_penalty"]
    n: int = DEFAULTS["n"]  # responses (the *_responses functions)
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in RANGES if name != "max_tokens"}
        try:
            check_parameters({**values, "max_tokens": self.max_new_tokens})
        except BadParameter as err:  # generate's own name for max_tokens
            if err.param != "max_tokens":
                raise
            raise BadParameter("max_new_tokens", str(err).replace("max_tokens", "max_new_tokens")) from None
        object.__setattr__(self, "stop", check_stop(self.stop if isinstance(self.stop, str) else list(self.stop)))


@dataclass
class InferenceModel:
    """A loaded model with its tokenizer and what the run says about it."""

    model: Any  # a transformers model or a PeftModel over one
    tokenizer: Any
    classifier: bool
    path: Path
    template: str | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    task: str | None = None  # the run's task (instruct, fim, classify) from its recipe.yaml, None if unknown
    recipe: Recipe | None = None  # the run's saved recipe.yaml, validated (None if there is none)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass(frozen=True)
class RepoContext:
    """Where the file being infilled lives: its path in the repository, the repository name and other files.

    ``files`` are (path, code) pairs placed before the infilled file, in order; ``name`` None leaves
    out the ``<repo_name>`` header.
    """

    path: str
    name: str | None = None
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Prediction:
    """Classification of one text: the most probable label and every class probability."""

    text: str
    label: str
    probabilities: dict[str, float]


# ---- loading -------------------------------------------------------------------------------------


def load_for_inference(path: str | Path, *, dtype: str = "auto", trust_remote_code: bool = False) -> InferenceModel:
    """Load a model folder, a merged folder, an adapter folder or a run folder (``adapter/`` inside).

    A run or adapter folder loads its base as trained with the adapter on top, a model folder loads as it
    is (:func:`sc2tune.runs.load_trained`). A run trained with remote code, a model folder whose config.json
    names its own code (``auto_map``: a merged one carries its base's) and a hub id fetched with its code load
    only with ``trust_remote_code`` (the caller's explicit say; the folder alone cannot turn it on).
    """
    from sc2tune.runs import load_trained, read_trained

    folder = read_trained(path, trust_remote_code=trust_remote_code)
    which = "merged" if folder.adapter_dir is None and folder.full_dir is None else "adapter"
    loaded = load_trained(folder, which, dtype=dtype)  # type: ignore[arg-type]
    recipe = folder.recipe
    return InferenceModel(loaded.model, loaded.tokenizer, loaded.classifier, folder.trained_dir,
                          recipe.data.template if recipe else None, loaded.labels, recipe.task if recipe else None,
                          recipe)


def _ensure(model: InferenceModel | str | Path, *, classifier: bool) -> InferenceModel:
    lm = model if isinstance(model, InferenceModel) else load_for_inference(model)
    if lm.classifier != classifier:
        kind = "a sequence classifier" if lm.classifier else "a causal language model"
        use = "classify" if lm.classifier else "generate"
        raise UserError(f"{lm.path} is {kind}; use {use}")
    return lm


# ---- generation ----------------------------------------------------------------------------------


def _decode(lm: InferenceModel, ids: list[int], sampling: Sampling, stop_ids: list[int]) -> list[str]:
    """Generate ``sampling.n`` responses after ``ids``; each is the new text before the first stop token or
    stop string. Greedy decoding (temperature 0) has one answer: it is generated once and given ``n`` times."""
    from transformers import LogitsProcessorList, set_seed

    from sc2tune.penalties import PresenceFrequencyPenalty

    if not ids:
        raise UserError("the prompt is empty: there is nothing to continue",
                        hint="give the text to complete (--prompt 'def fib(n):'), or --prefix/--suffix to infill")
    context = context_length(lm.model)
    if context is None:
        raise UserError(f"the model's config ({type(lm.model.config).__name__}) does not say how long its context is",
                        hint="set max_position_embeddings in its config.json")
    if len(ids) >= context:
        raise UserError(f"the prompt is {len(ids):,} tokens; the model reads at most {context:,} "
                        "(its max_position_embeddings), prompt and generated tokens together",
                        hint="shorten the prompt (keep the code nearest the cursor)")
    max_new_tokens = min(sampling.max_new_tokens, context - len(ids))
    if max_new_tokens < sampling.max_new_tokens:
        log.warning("max_new_tokens %d capped to %d: the prompt's %d tokens leave that much of the model's "
                    "%d-token context", sampling.max_new_tokens, max_new_tokens, len(ids), context)
    if sampling.seed is not None:
        set_seed(sampling.seed)
    input_ids = torch.tensor([ids], device=lm.device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "eos_token_id": stop_ids,
        "pad_token_id": lm.tokenizer.pad_token_id, "attention_mask": torch.ones_like(input_ids),
    }
    greedy = sampling.temperature == 0
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=float(sampling.temperature), top_p=float(sampling.top_p),
                      top_k=sampling.top_k, num_return_sequences=sampling.n)  # transformers wants floats
    kwargs["repetition_penalty"] = float(sampling.repetition_penalty)
    if sampling.presence_penalty or sampling.frequency_penalty:
        kwargs["logits_processor"] = LogitsProcessorList([PresenceFrequencyPenalty(
            len(ids), sampling.presence_penalty, sampling.frequency_penalty)])
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=lm.tokenizer)
    with torch.inference_mode():
        out = lm.model.generate(input_ids=input_ids, **kwargs)
    texts = []
    for row in out[:, len(ids):].tolist():
        text = lm.tokenizer.decode(cut_at_stop(row, stop_ids), skip_special_tokens=False)
        for stop in sampling.stop:
            text = text.split(stop, 1)[0]  # cut at its first occurrence
        texts.append(text)
    return texts * sampling.n if greedy else texts


def _single(sampling: Sampling, responses: str) -> Sampling:
    """``sampling`` for a function that returns one response (``n`` must be 1)."""
    if sampling.n != 1:
        raise UserError(f"n={sampling.n} asks for several responses, and this function returns one",
                        hint=f"call {responses}, which returns a list")
    return sampling


def generate_responses(model: InferenceModel | str | Path, prompt: str, sampling: Sampling = Sampling()) -> list[str]:
    """``sampling.n`` left-to-right completions of ``prompt`` (the continuations).

    Special tokens written in the prompt (``<repo_name>``, ``<file_sep>``) are read as special tokens.
    """
    from sc2tune.tokens import special_tokens

    lm = _ensure(model, classifier=False)
    eos = special_tokens(lm.tokenizer, need_fim=False).eos
    ids = lm.tokenizer(prompt, add_special_tokens=False, split_special_tokens=False)["input_ids"]
    return _decode(lm, ids, sampling, [eos])


def generate(model: InferenceModel | str | Path, prompt: str, sampling: Sampling = Sampling()) -> str:
    """Left-to-right completion of ``prompt`` (:func:`generate_responses` with ``n`` 1); returns the continuation."""
    return generate_responses(model, prompt, _single(sampling, "generate_responses"))[0]


def infill_prompt_ids(lm: InferenceModel, prefix: str, suffix: str, repo: RepoContext | None = None) -> list[int]:
    """PSM prompt ids (module doc), user text always literal.

    Without ``repo``: ``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>``. With it, as training
    renders a repository row whose file ``repo.path`` was FIM'd (path line inside the fragment,
    ``<file_sep>`` outside)::

        [<repo_name>{name}] (<file_sep>{path_i}\\n{code_i})* <file_sep><fim_prefix>{path}\\n{prefix}<fim_suffix>{suffix}<fim_middle>

    ``PATH\\n`` is tokenised apart from the code that follows it, as in training.
    """
    from sc2tune.tokens import encode_texts, special_tokens

    st = special_tokens(lm.tokenizer, need_fim=True)
    enc = lambda text: encode_texts(lm.tokenizer, [text])[0]  # noqa: E731 - the user's text stays text
    if repo is None:
        return [st.fim_prefix, *enc(prefix), st.fim_suffix, *enc(suffix), st.fim_middle]  # type: ignore[list-item]
    if st.file_sep is None or st.repo_name is None:
        raise UserError("repository context needs the <repo_name> and <file_sep> tokens, and this tokenizer "
                        "has not got them", hint="use a StarCoder2 tokenizer, or infill without repository context")
    ids: list[int] = [st.repo_name, *enc(repo.name)] if repo.name is not None else []
    for path, code in repo.files:
        ids += [st.file_sep, *enc(path + "\n"), *enc(code)]
    return [*ids, st.file_sep, st.fim_prefix, *enc(repo.path + "\n"), *enc(prefix), st.fim_suffix, *enc(suffix),
            st.fim_middle]  # type: ignore[list-item]


def infill(model: InferenceModel | str | Path, prefix: str, suffix: str, sampling: Sampling = Sampling(), *,
           repo: RepoContext | None = None) -> str:
    """Fill in the middle between ``prefix`` and ``suffix`` (PSM, :func:`infill_prompt_ids`); returns only
    the middle. ``repo`` puts the file in its repository as StarCoder2 was trained (module doc)."""
    return infill_responses(model, prefix, suffix, _single(sampling, "infill_responses"), repo=repo)[0]


def infill_responses(model: InferenceModel | str | Path, prefix: str, suffix: str, sampling: Sampling = Sampling(),
                     *, repo: RepoContext | None = None) -> list[str]:
    """``sampling.n`` middles between ``prefix`` and ``suffix`` (:func:`infill`)."""
    from sc2tune.tokens import special_tokens

    lm = _ensure(model, classifier=False)
    st = special_tokens(lm.tokenizer, need_fim=True)
    ids = infill_prompt_ids(lm, prefix, suffix, repo)
    stops = [st.eos] + ([st.file_sep] if st.file_sep is not None else [])
    return _decode(lm, ids, sampling, stops)  # type: ignore[list-item]


def instruct(model: InferenceModel | str | Path, instruction: str, input: str | None = None, *,
             template: str | None = None, sampling: Sampling = Sampling()) -> str:
    """Answer ``instruction`` (with optional ``input``) through the run's prompt template."""
    return instruct_responses(model, instruction, input, template=template,
                              sampling=_single(sampling, "instruct_responses"))[0]


def instruct_responses(model: InferenceModel | str | Path, instruction: str, input: str | None = None, *,
                       template: str | None = None, sampling: Sampling = Sampling()) -> list[str]:
    """``sampling.n`` answers to ``instruction`` (:func:`instruct`)."""
    from sc2tune.data.templates import load_template

    lm = _ensure(model, classifier=False)
    name = template or lm.template
    if name is None:
        raise UserError(f"{lm.path} has no recipe.yaml naming its instruction template",
                        hint="pass --template (e.g. alpaca) or a path to a template YAML")
    prompt = load_template(name).render_prompt({"instruction": instruction, "input": input or ""})
    return generate_responses(lm, prompt, sampling)


def split_cursor(text: str) -> tuple[str, str]:
    """Split a file at its single ``<cursor>`` marker into (prefix, suffix)."""
    count = text.count(CURSOR)
    if count != 1:
        raise UserError(f"FIM needs exactly one {CURSOR} marker in the file (found {count})")
    prefix, suffix = text.split(CURSOR)
    return prefix, suffix


# ---- classification ------------------------------------------------------------------------------


def classify(model: InferenceModel | str | Path, texts: Sequence[str], *, batch_size: int = 8,
             max_length: int | None = None) -> list[Prediction]:
    """Class probabilities ``softmax(logits)`` of each text.

    A model sc2tune trained (its folder holds ``recipe.yaml``) sees each text exactly as in training:
    ``tokens(text)[:max_length - 1] + [<|endoftext|>]``, cut on the recipe's ``data.truncation_side``
    (``sc2tune.data.classification``), so the score head reads the token it was trained to read.
    ``max_length`` defaults to the recipe's ``data.max_length``. Other models get the plain token ids,
    cut to ``max_length`` when given. Rows are right-padded; the head reads the last non-pad token.
    """
    from sc2tune.data.classification import classification_ids, encode_texts

    lm = _ensure(model, classifier=True)
    names = lm.id2label or {int(k): v for k, v in lm.model.config.id2label.items()}
    data = lm.recipe.data if lm.recipe is not None else None  # trained here: encoded as in training
    limit = max_length or (data.max_length if data is not None else None)
    eos = int(lm.tokenizer.eos_token_id)
    results: list[Prediction] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        ids = encode_texts(lm.tokenizer, chunk)
        if data is not None:
            ids = [classification_ids(a, None, limit or len(a) + 1, data.truncation_side, eos)[0] for a in ids]
        elif limit is not None:
            ids = [a[:limit] for a in ids]
        enc = lm.tokenizer.pad({"input_ids": ids}, padding=True, padding_side="right",  # as the docstring says
                               return_tensors="pt").to(lm.device)
        with torch.inference_mode():
            probs = torch.softmax(lm.model(**enc).logits.float(), dim=-1).cpu()
        for text, row in zip(chunk, probs, strict=True):
            table = {names.get(i, f"LABEL_{i}"): float(p) for i, p in enumerate(row)}
            results.append(Prediction(text, max(table, key=table.__getitem__), table))
    return results


def read_texts(file: str | Path, *, column: str = "text") -> list[str]:
    """Texts to classify: JSONL (one object per line, ``column`` field) or plain text (one per line)."""
    path = Path(file)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get(column), str):
            raise UserError(f"{path}:{number}: no string field '{column}'", hint="pass --column NAME")
        texts.append(record[column])
    return texts
