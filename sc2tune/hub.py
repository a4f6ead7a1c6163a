"""Reaching the Hugging Face Hub: fail in seconds, with the fixes, when a hub id cannot be fetched.

A hub id (``bigcode/starcoder2-3b``) on a machine without hub access made transformers retry each file
with back-off for over a minute, printing dozens of warnings, before its error. Before the first hub call
sc2tune now asks once per process whether the hub's host accepts a connection (a plain TCP connect with a
short timeout, no request sent). When it does not, the caller gets one :class:`UserError` naming the
fixes. Nothing is probed when the hub is switched off (``HF_HUB_OFFLINE=1``, read by huggingface_hub
itself): then only the local cache is used, as the user asked.
"""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlsplit

from sc2tune.errors import UserError

#: Seconds to wait for the hub's host to accept a connection.
PROBE_TIMEOUT = 4.0


@functools.lru_cache(maxsize=4)
def _reachable(endpoint: str) -> str | None:
    """None when ``endpoint``'s host accepts a TCP connection, else why not (cached per process)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return None
    except OSError as err:
        return str(err) or type(err).__name__


def ensure_hub_reachable(repo_id: str, what: str = "model.name_or_path") -> None:
    """Raise a clear :class:`UserError` at once when ``repo_id`` would have to come from an unreachable hub.

    Returns quietly when huggingface_hub is in offline mode (the cache answers, or it raises its own error).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # huggingface_hub's own setting
        return
    problem = _reachable(constants.ENDPOINT)
    if problem is None:
        return
    raise UserError(
        f"{what} '{repo_id}' is a hub id, and the hub ({constants.ENDPOINT}) cannot be reached from this "
        f"machine ({problem})",
        hint="work offline from the local cache with HF_HUB_OFFLINE=1 (after downloading the model once where "
        "the hub is reachable), point to a local model folder instead, or try the path with the built-in "
        "model: sc2tune tiny-model DIR",
    )
