"""One reading of sizes for the whole package: GB = 10^9 bytes, GiB = 2^30 (transformers/accelerate)."""

from __future__ import annotations

import pytest

from sc2tune.errors import UserError
from sc2tune.sizes import parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("2GB", 2 * 10**9), ("2GiB", 2 * 2**30), ("2gb", 2 * 10**9), ("2 gib", 2 * 2**30),
    ("500MB", 500 * 10**6), ("512MiB", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("1TB", 10**12),
    ("64KiB", 65536), ("100B", 100), (4096, 4096),
])
def test_decimal_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "80", "24G", "GB", "", "-1GB", "0GB", "2 GB extra", 0, -5])
def test_bad_text_is_a_user_error_naming_the_setting(text):
    with pytest.raises(UserError, match="--gpu-memory") as err:
        parse_size(text, what="--gpu-memory")
    assert "Traceback" not in str(err.value)


def test_the_cli_reports_a_bad_size_without_a_traceback(run_cli):
    result = run_cli("plan", "recipes/quickstart/fim.yaml", "--gpu-memory", "lots")
    assert result.returncode != 0 and "--gpu-memory 'lots' is not a size" in result.stderr
