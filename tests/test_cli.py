import subprocess
import sys

import minifit
from minifit.cli import main


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "minifit.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"minifit {minifit.__version__}"
    out = subprocess.run([sys.executable, "-m", "minifit.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("run", "summary", "data"):
        assert command in out.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: minifit" in capsys.readouterr().out
