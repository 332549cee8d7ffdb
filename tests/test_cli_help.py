"""`spiketok --help` and every `spiketok COMMAND --help` load no heavy package: the command modules import torch,
Lightning, h5py and matplotlib inside the commands, and the error policy catches spiketok's own error base class."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "h5py", "matplotlib", "pynwb", "optuna", "onnxruntime")
HELP_CODE = """
import sys
import typer
from typer.testing import CliRunner
from spiketok.cli import _register, app
_register()
runner = CliRunner()
commands = sorted(typer.main.get_command(app).commands)
for args in [["--help"], *[[name, "--help"] for name in commands]]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
print(len(commands), sorted(m for m in sys.modules if m.split(".")[0] in {heavy}))
"""


def test_help_imports_no_heavy_package() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = HELP_CODE.format(heavy=set(HEAVY))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    n_commands, loaded = res.stdout.strip().split(" ", 1)
    assert int(n_commands) > 10  # every command's --help ran, not just the group's
    assert loaded == "[]", f"--help imported {loaded}"


def test_help_texts_name_what_the_library_accepts() -> None:
    """The simulated tasks are spelled out in the CLI (to keep the library out of --help): the library's own."""
    from spiketok.cli.simulate_command import TASKS
    from spiketok.data.simulate import TASKS as LIBRARY_TASKS

    assert TASKS == LIBRARY_TASKS
