#!/usr/bin/env bash
# GPU check: on one CUDA GPU, in about 5 minutes (<= 8), with this repository and nothing else:
#   a LoRA and a QLoRA fine-tune of a randomly initialised StarCoder2 of real width (the 3B config with
#   4 layers, bf16, flash attention when installed else SDPA), a merge, generation, and FSDP with one process
#   (wrapping, mixed precision and saving; nothing is sharded on one GPU); tokens per second, peak GPU memory
#   against `sc2tune plan`, PASS/FAIL per step. The steps are in bench/_gpu_check.py.
#
#   bash bench/gpu_check.sh                 # on the GPU machine, from anywhere
#   bash bench/gpu_check.sh --cpu-dry-run   # the same steps, tiny, on CPU: checks the script, not a GPU
#                                           # (a few files of data, the merge unverified: bench/_gpu_check.py)
#   bash bench/gpu_check.sh --layers 8 --steps 50
#
# Install (done here when a package is missing; nothing is fetched when all are there):
#   * torch: the machine's own CUDA build is used when present (GPU images ship one). Otherwise the script
#     stops and says to install it first, e.g. `pip install torch --index-url https://download.pytorch.org/whl/cu130`
#     (pick the CUDA version of the driver, `nvidia-smi`), since a plain `pip install torch` may pick a CPU build.
#   * sc2tune and its dependencies: `pip install -e .` from this repository. On a machine without network,
#     point WHEELS at a folder of wheels (`pip download -d DIR -e .` on a machine with network, same Python):
#     `WHEELS=DIR bash bench/gpu_check.sh` installs from it only.
# Offline: HF_HUB_OFFLINE=1; the model is built from the config and tokenizer shipped in sc2tune/assets.
# Settings: PYTHON (default python3), GPU_CHECK_DIR (scratch folder; default a new temporary folder).
# Exit status: 0 all steps passed, 1 a step failed, 2 no CUDA device (or torch missing), 3 install failed
# (or sc2tune still does not import after it).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
DRY=0
for arg in "$@"; do [[ "$arg" == "--cpu-dry-run" ]] && DRY=1; done

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: torch is not installed for $PY: install the CUDA build first, e.g." >&2
  echo "  $PY -m pip install torch --index-url https://download.pytorch.org/whl/cu130" >&2
  exit 2
fi
if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no GPU" \
       "(a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES empty). Nothing was run." >&2
  echo "  To check the script itself on CPU: bash bench/gpu_check.sh --cpu-dry-run" >&2
  exit 2
fi

WORK=${GPU_CHECK_DIR:-$(mktemp -d -t sc2tune-gpu-check.XXXXXX)}
export SC2TUNE_CACHE="$WORK/cache"
cd "$ROOT" || exit 3

# sc2tune and its dependencies (peft, bitsandbytes, accelerate, datasets, pydantic, ...): the steps' script
# imports them before anything else and exits 4 (none of its own statuses) when they do not import with this
# repository's sc2tune; they are installed then and the script is run again (one import, not a probe process
# and then the script's own).
"$PY" bench/_gpu_check.py --work "$WORK" "$@"
status=$?
[[ $status == 4 ]] || exit $status
echo "gpu_check: installing sc2tune from $ROOT" >&2
if [[ -n "${WHEELS:-}" ]]; then
  "$PY" -m pip install --no-index --find-links "$WHEELS" -e "$ROOT" || exit 3
else
  "$PY" -m pip install -e "$ROOT" || exit 3
fi
"$PY" bench/_gpu_check.py --work "$WORK" "$@"
status=$?
if [[ $status == 4 ]]; then
  echo "gpu_check: sc2tune still does not import after installing it (the error is above)" >&2
  exit 3
fi
exit $status
