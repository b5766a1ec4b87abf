"""What operators do: `pip install .` into a fresh venv, then `twistd axigen-fe`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]


def test_plain_pip_install_into_a_fresh_venv_gives_twistd_the_plugin(tmp_path: Path) -> None:
    # a copy of the tracked files, so the build leaves nothing in the checkout
    src = tmp_path / "src"
    files = _run(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0")
    for name in filter(None, files):
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            target.write_bytes((REPO / name).read_bytes())
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    assert _run([base_python, "-m", "venv", str(venv)]).returncode == 0
    install = _run([str(venv / "bin" / "pip"), "install", "-q", str(src)])
    assert install.returncode == 0, install.stderr[-3000:]
    plugin = list((venv / "lib").glob("python3*/site-packages/twisted/plugins/axigen_fe_plugin.py"))
    assert plugin, "the plugin file was not installed into twisted/plugins"
    helped = _run([str(venv / "bin" / "twistd"), "axigen-fe", "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--demo" in helped.stdout and "--config" in helped.stdout
    listed = _run([str(venv / "bin" / "twistd"), "--help"], cwd=tmp_path)
    assert "axigen-fe" in listed.stdout
    check = _run(
        [str(venv / "bin" / "axigen-fe"), "check-config", str(tmp_path / "missing.toml")],
        cwd=tmp_path,
    )
    assert check.returncode == 2 and "cannot read the file" in check.stdout
