"""The command table: lazily imported commands, their listed help, and what `--help` costs to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from valdrix.cli import COMMANDS, load


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_listed_help_is_the_commands_own(command: object) -> None:
    loaded = load(command)  # type: ignore[arg-type]
    assert loaded.name == command.name  # type: ignore[attr-defined]
    first_paragraph = " ".join((loaded.help or "").strip().split("\n\n")[0].split())
    assert first_paragraph == command.help  # type: ignore[attr-defined]


def _modules_after(*argv: str) -> set[str]:
    code = ("import sys\nfrom valdrix.cli import app\ntry:\n    app(args=sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return set(result.stderr.split())


def test_help_imports_no_command_module_and_nothing_heavy() -> None:
    modules = _modules_after("--help")
    assert not {m for m in modules if m.startswith("valdrix.") and m != "valdrix.cli"}
    assert not modules & {"httpx", "sqlalchemy", "fastapi", "valdrix.pricing.terraform"}


def test_preflight_help_imports_only_the_preflight_module() -> None:
    modules = _modules_after("preflight", "--help")
    ours = {m for m in modules if m.startswith("valdrix.")}
    assert ours == {"valdrix.cli", "valdrix.cli.preflight"}
    assert not modules & {"httpx", "sqlalchemy", "yaml", "valdrix.cli.continuation"}
