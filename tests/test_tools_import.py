"""Every tool and benchmark module imports and has a click command with --help (a moved helper
once broke ``python -m tools.train_cnn`` without any test noticing)."""

import importlib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(
    f"{folder}.{path.stem}" for folder in ("tools", "bench") for path in (REPO / folder).glob("*.py")
    if path.stem != "__init__" and not path.stem.startswith("nncodec_")  # those run in nncodec's own venv
)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_and_its_command_has_help(name):
    module = importlib.import_module(name)
    commands = [obj for obj in vars(module).values() if isinstance(obj, click.Command)
                and getattr(obj.callback, "__module__", None) == name]
    if not commands:  # a library module of tools/ or bench/ (common.py, records.py, ...)
        return
    for command in commands:
        result = CliRunner().invoke(command, ["--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
