"""The sampling parameters that ``sc2tune generate`` and ``sc2tune serve`` share: their ranges and defaults,
stated once (the hosted StarCoder2 page's parameter set, named as in OpenAI's API).

=====================  ==============================  ===========  ==============================================
parameter              allowed                         default      meaning
=====================  ==============================  ===========  ==============================================
``max_tokens``         integer >= 1 (<= the context)   128          tokens to generate at most
``temperature``        0 <= t <= 2                     0.2          0 = greedy (deterministic)
``top_p``              0 < p <= 1                      0.95         nucleus sampling
``top_k``              integer >= 0                    0            the k most probable tokens only; 0 = off
``repetition_penalty`` r > 0                           1.0          CTRL penalty on seen tokens; 1 = none
``presence_penalty``   -2 <= a <= 2                    0.0          ``logit -= a * (count > 0)``
``frequency_penalty``  -2 <= a <= 2                    0.0          ``logit -= a * count``
``stop``               at most 16 non-empty strings    none         cut the output at the first one
``n``                  integer 1 or 2                  1            responses per request
``seed``               integer 0 <= s < 2**32          none         the sampling seed (response i uses seed + i)
=====================  ==============================  ===========  ==============================================

Temperature 0.2 and top-p 0.95 are the StarCoder2 model card's; every penalty defaults to none (the hosted
page's default; llama-cpp-python's own server would apply a repeat penalty of 1.1). Nothing heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sc2tune.errors import UserError

#: Stop strings per request, at most (the hosted page's limit).
MAX_STOP = 16
#: Responses per request, at most.
MAX_N = 2
#: Seeds are unsigned 32-bit (llama.cpp's sampler, numpy's generator).
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class Range:
    """An interval ``low (<|<=) x (<|<=) high`` (None: unbounded), integer or real."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            return f"{kind} in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        return kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


#: Every numeric parameter's range (OpenAI's names).
RANGES: dict[str, Range] = {
    "max_tokens": Range(low=1, integer=True),
    "temperature": Range(low=0, high=2),
    "top_p": Range(low=0, high=1, low_open=True),
    "top_k": Range(low=0, integer=True),
    "repetition_penalty": Range(low=0, low_open=True),
    "presence_penalty": Range(low=-2, high=2),
    "frequency_penalty": Range(low=-2, high=2),
    "n": Range(low=1, high=MAX_N, integer=True),
    "seed": Range(low=0, high=SEED_LIMIT, high_open=True, integer=True),
}

#: The defaults of generate and serve alike (``stop`` and ``seed``: none).
DEFAULTS: dict[str, Any] = {
    "max_tokens": 128, "temperature": 0.2, "top_p": 0.95, "top_k": 0, "repetition_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "n": 1,
}


class BadParameter(UserError):
    """A sampling parameter out of its range; ``param`` names it (OpenAI's name)."""

    exit_code = 2

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


def check_value(name: str, value: Any, *, context: int | None = None) -> float | int:
    """``value`` if it is in ``name``'s range (:data:`RANGES`), else :class:`BadParameter` naming it.

    ``max_tokens`` is also at most ``context`` when given (the model's context length). A bool is not a number.
    """
    bounds = RANGES[name]
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if (not numeric or (bounds.integer and not isinstance(value, int))
            or (isinstance(value, float) and not math.isfinite(value)) or not bounds.contains(value)):
        raise BadParameter(name, f"{name} must be {bounds.describe()} (got {value!r})")
    if name == "max_tokens" and context is not None and value > context:
        raise BadParameter(name, f"max_tokens must be at most {context:,}, the model's context length "
                                 f"(got {value:,})")
    return value


def check_stop(value: Any) -> tuple[str, ...]:
    """``stop`` as a tuple: None, one string or a list of at most :data:`MAX_STOP` non-empty strings."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(s, str) for s in items):
        raise BadParameter("stop", f"stop must be a string or a list of strings (got {value!r})")
    if len(items) > MAX_STOP:
        raise BadParameter("stop", f"stop holds at most {MAX_STOP} strings (got {len(items)})")
    if any(s == "" for s in items):
        raise BadParameter("stop", "stop strings must not be empty")
    return tuple(items)


def check_parameters(values: Mapping[str, Any], *, context: int | None = None) -> None:
    """Check each parameter present in ``values`` (OpenAI's names; None means "not given", other keys are
    ignored); the first one out of range raises :class:`BadParameter`."""
    for name in RANGES:
        if values.get(name) is not None:
            check_value(name, values[name], context=context)
    if "stop" in values:
        check_stop(values["stop"])
