"""A skip inside a trio test reports its reason and place (tests/conftest.py
restores what pytest-trio drops), so that no skip in the suite goes unexplained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_skip_in_a_trio_test_says_why_and_where(tmp_path: Path) -> None:
    test = tmp_path / "test_skipping.py"
    test.write_text(
        "import pytest, trio\n"
        "\n"
        "@pytest.mark.trio\n"
        "async def test_it():\n"
        "    await trio.sleep(0)\n"
        "    pytest.skip('no such thing here')\n"
    )
    options = ["-q", "-rs", "-p", "no:cacheprovider", "-p", "tests.conftest", "--rootdir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *options, "-c", "/dev/null", str(test)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 skipped" in run.stdout, run.stdout + run.stderr
    assert "test_skipping.py:6: no such thing here" in run.stdout, run.stdout
