"""What every command line shares: --debug listed in its help, a closed pipe ends it quietly."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_BROKEN_PIPE
from pipeline.workspace import PROJECT_ROOT, workspace_env
from tests.conftest import TEST_PARAMS_FILE

CLIS = ("prepare", "extract", "train", "compare", "download", "predict", "store", "params", "demo")


@pytest.mark.parametrize("name", CLIS)
def test_every_cli_lists_debug_in_its_help(name, capsys):
    module = importlib.import_module(f"pipeline.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "--debug" in capsys.readouterr().out


def test_a_reader_that_goes_away_ends_the_cli_quietly():
    """``python -m pipeline.params | head -0``: no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.params", str(TEST_PARAMS_FILE)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env=workspace_env(),
    )
    os.close(write_end)
    assert result.returncode == EXIT_BROKEN_PIPE
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr


def test_tests_never_read_the_working_params_yaml():
    """The README has users edit params.yaml; the suite must pass whatever they wrote."""
    tests = Path(__file__).resolve().parents[1]
    reading = re.compile(r"PROJECT_ROOT\s*/\s*[\"']params\.yaml")
    offenders = [
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if path != Path(__file__).resolve() and reading.search(path.read_text())
    ]
    assert not offenders, f"read the working params.yaml: {offenders}"
