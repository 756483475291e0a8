"""The ``api`` package does not depend on ``worker``: the dispatcher is injected.

``api.app.create_app(settings, dispatcher)`` takes the dispatcher; the composition (the
worker's dispatcher into the app) lives in ``ld3_cli.server``, used by ``ld3 serve`` and as
the uvicorn factory.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_importing_the_api_loads_no_worker_module():
    done = _fresh_python(
        "import api.app, sys; "
        "assert not any(m.startswith('worker') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('worker'))"
    )
    assert done.returncode == 0, done.stderr


def test_every_api_module_imports_without_worker():
    done = _fresh_python(
        "import importlib, pkgutil, sys, api; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(api.__path__, 'api.')]; "
        "bad = sorted(m for m in sys.modules if m.startswith('worker')); "
        "assert not bad, bad; print(len([m for m in sys.modules if m.startswith('api.')]))"
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 15  # the walk did import the package's modules


def test_no_api_source_names_the_worker_package():
    offenders = []
    for path in sorted((REPO / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names
                          if n == "worker" or n.startswith("worker.")]
    assert offenders == []


def test_the_composition_gives_the_app_the_worker_dispatcher(tmp_path):
    from ld3_cli.server import build_app
    from registry.settings import Settings
    from worker.dispatch import CeleryDispatcher, reset_dispatchers

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", home=tmp_path,
                        broker_url="redis://127.0.0.1:1/0", api_token=None)
    try:
        app = build_app(settings)
        assert isinstance(app.state.dispatcher, CeleryDispatcher)
        assert app.state.settings is settings
    finally:
        reset_dispatchers()
