"""llama.cpp's own quantiser (``llama_model_quantize``, through llama-cpp-python) for the GGUF types the
``gguf`` writer does not produce (the k-quants such as Q4_K_M, Q4_0, ...): an F32 GGUF in, the quantised
GGUF out. llama.cpp picks per tensor (a Q4_K_M file keeps some tensors in Q6_K, and a row length its 256-value
super-blocks do not divide falls back to a type that fits), exactly as ``llama-quantize`` does."""

from __future__ import annotations

from pathlib import Path

from sc2tune.errors import UserError

#: ``--dtype`` values quantised by llama.cpp -> llama_ftype name (``LLAMA_FTYPE_MOSTLY_*``).
LLAMA_TYPES: dict[str, str] = {
    "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q2_k": "Q2_K", "q3_k_s": "Q3_K_S",
    "q3_k_m": "Q3_K_M", "q3_k_l": "Q3_K_L", "q4_k_s": "Q4_K_S", "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S",
    "q5_k_m": "Q5_K_M", "q6_k": "Q6_K",
}


def llama_cpp_module() -> object:
    """``llama_cpp``, or a UserError saying which extra installs it."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("llama-cpp-python is not installed: it quantises, verifies and serves GGUF files",
                        hint="pip install 'sc2tune[serve]' (it builds llama.cpp; minutes)") from None
    return llama_cpp


def require_serve_extra(*modules: str) -> None:
    """A UserError naming the ``serve`` extra when one of ``modules`` (``gguf``, ``llama_cpp``, ``uvicorn``) is
    missing: export and serve check this before any work, so a missing extra is never an ImportError."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{', '.join(missing)} not installed: sc2tune export and serve need the serve extra",
                        hint="pip install 'sc2tune[serve]' (it builds llama.cpp; minutes)")


def quantize(source: Path, out: Path, dtype: str) -> None:
    """Quantise the GGUF ``source`` (F32 or F16) into ``out`` as ``dtype`` (a key of :data:`LLAMA_TYPES`), on
    llama.cpp's default thread count (``nthread`` 0: the hardware's)."""
    llama_cpp = llama_cpp_module()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{LLAMA_TYPES[dtype]}")
    params = llama_cpp.llama_model_quantize_default_params()  # type: ignore[attr-defined]
    params.ftype = ftype
    import ctypes

    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(),  # type: ignore[attr-defined]
                                            ctypes.byref(params))
    if status != 0 or not out.is_file():
        raise UserError(f"llama.cpp's quantiser failed to make {dtype} from {source.name} (status {status})",
                        hint="its log above says why; export --dtype f16 or q8_0 instead")
