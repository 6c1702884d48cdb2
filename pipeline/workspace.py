"""A self-contained copy of the project (code, dvc.yaml, params) in its own git + DVC repo.

The offline demo and the pipeline tests run the real ``dvc repro`` in such a workspace,
with params overridden (data root, random weights, a small input size), so nothing they do
touches this checkout's params, data or DVC state.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PROJECT_ROOT", "create_workspace", "merge", "run_in", "workspace_env"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", "features", "classifiers", "pipeline")


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a mapping replaces by key."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def workspace_env() -> dict[str, str]:
    """The environment for commands in a workspace: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GIT_AUTHOR_NAME", "feature-store")
    env.setdefault("GIT_AUTHOR_EMAIL", "feature-store@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "feature-store")
    env.setdefault("GIT_COMMITTER_EMAIL", "feature-store@localhost")
    return env


def run_in(workspace: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``command`` in ``workspace``, capturing output; raise with it on failure."""
    result = subprocess.run(
        command, cwd=workspace, env=workspace_env(), text=True, capture_output=True
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}) in {workspace}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def _copy_code(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in _COPIED:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, destination / name)


def create_workspace(
    destination: Path,
    overrides: Mapping[str, Any],
    extra_ignores: Sequence[str] = (),
    *,
    base: Path = PROJECT_ROOT / "params.yaml",
) -> Path:
    """Copy the project into ``destination``, apply ``overrides`` to ``base``, init git + DVC.

    Tests pass their own ``base``: the project's params.yaml is the user's to edit.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    _copy_code(destination)
    params = yaml.safe_load(Path(base).read_text())
    (destination / "params.yaml").write_text(
        yaml.safe_dump(merge(params, overrides), sort_keys=False)
    )
    gitignore = [(PROJECT_ROOT / ".gitignore").read_text().rstrip(), *extra_ignores]
    (destination / ".gitignore").write_text("\n".join(gitignore) + "\n")
    run_in(destination, "git", "init", "-q", "-b", "main")
    run_in(destination, "dvc", "init", "-q")
    run_in(destination, "dvc", "config", "core.autostage", "true")
    run_in(destination, "dvc", "config", "core.analytics", "false")
    run_in(destination, "git", "add", "-A")
    run_in(destination, "git", "commit", "-q", "-m", "workspace")
    return destination
