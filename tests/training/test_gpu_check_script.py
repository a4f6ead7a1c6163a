"""bench/gpu_check.sh: refuses cleanly without a CUDA device, and its steps run (tiny, on CPU) with --cpu-dry-run.

The GPU run itself is not executed here (no GPU in CI); these tests only prove the script works as a script.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
STEPS = ["build model", "LoRA fine-tune", "QLoRA fine-tune", "merge LoRA", "generate (merged)", "FSDP, one process"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_no_cuda_device_is_a_clear_refusal(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GPU_CHECK_DIR": str(tmp_path / "work")})
    assert done.returncode == 2
    assert "gpu_check: no CUDA device" in done.stderr and "--cpu-dry-run" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "work").exists()  # nothing was run


@pytest.mark.slow
def test_cpu_dry_run_passes_every_step(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-dry-run"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GPU_CHECK_DIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("[gpu_check] summary", 1)[1]
    for name in STEPS:
        assert f"PASS  {name}" in summary, summary
    assert (tmp_path / "work" / "merged" / "config.json").is_file()
