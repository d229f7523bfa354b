"""What ``livegen serve`` says when it cannot start: one line, exit 2, and soon.

A mistake on the command line gets argparse's usage line; a configuration that
parses but cannot run (a folder that is not there, an unknown pipeline) gets
``livegen: error: ...`` alone. Local paths are checked before torch is imported,
so a typo costs a second, not the 10 to 40 s that torch and diffusers take.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the CLI as ``livegen`` does, then tells whether torch was imported by then.
CLI = """
import sys
from server.cli import main
try:
    main(sys.argv[1:])
finally:
    print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""
PROCESS_WAIT_S = 120.0


def livegen(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *argv],
        capture_output=True,
        text=True,
        timeout=PROCESS_WAIT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--model", "model '{missing}' is not a folder: looked for {missing}"),
        ("--tiny-vae", "tiny VAE '{missing}' is not a folder: looked for {missing}"),
    ],
)
def test_a_missing_local_folder_fails_before_torch_is_imported(tmp_path: Path, flag, says):
    missing = tmp_path / "nope"
    argv = ["serve", "--pipeline", "sd-turbo", "--model", "stabilityai/sd-turbo"]
    result = livegen(*argv, flag, str(missing))

    first, last = result.stderr.splitlines()
    assert result.returncode == 2
    assert first.startswith("livegen: error: " + says.format(missing=missing))
    assert last == "torch imported: False"
    assert "usage:" not in result.stderr and result.stdout == ""


def test_a_configuration_that_cannot_run_gets_no_usage_line() -> None:
    result = livegen("serve", "--pipeline", "sdxl", "--port", "0")

    assert result.returncode == 2
    assert "livegen: error: unknown pipeline 'sdxl'; available: " in result.stderr
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr


def test_a_command_line_mistake_gets_the_usage_line() -> None:
    result = livegen("serve", "--cpu-lanes", "0")

    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        "usage: livegen [-h] {serve,token} ...",
        "livegen: error: --cpu-lanes must be at least 1, got 0",
    ]
