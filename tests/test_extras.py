"""The core install works without any extra, and a missing extra is one clear error naming it.

The suite runs with every extra installed, so "not installed" is simulated: a ``None`` entry
in ``sys.modules`` makes ``import name`` fail exactly as a missing package does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ld3_cli.main import main
from ld3_core.extras import EXTRA_OF_MODULE, MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]


def _forget(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Drop the loaded modules ``names`` (and their submodules): the next import runs them."""
    for loaded in list(sys.modules):
        if any(loaded == n or loaded.startswith(n + ".") for n in names):
            monkeypatch.delitem(sys.modules, loaded)


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``import name`` fail for each name, as for a package that is not installed."""
    _forget(monkeypatch, *names)
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_of_a_missing_package(monkeypatch):
    _hide(monkeypatch, "lpips")
    with pytest.raises(MissingExtraError) as info:
        require("lpips", "metric='lpips'")
    assert str(info.value) == ("metric='lpips' needs the optional package 'lpips', which is not "
                               "installed: pip install 'ld3-service[lpips]'")
    assert isinstance(info.value, ImportError)


def test_a_missing_dependency_names_the_extra_of_what_was_asked_for(monkeypatch):
    _forget(monkeypatch, "pytorch_fid")
    _hide(monkeypatch, "torchvision")
    with pytest.raises(MissingExtraError, match=r"'torchvision'.*ld3-service\[inception\]"):
        require("pytorch_fid.inception", "extractor='inception'")


def test_a_module_no_extra_provides_raises_the_plain_import_error(monkeypatch):
    _hide(monkeypatch, "no_such_module_xyz")
    with pytest.raises(ModuleNotFoundError) as info:
        require("no_such_module_xyz", "nothing")
    assert not isinstance(info.value, MissingExtraError)


def test_lpips_metric_without_the_package_names_the_extra_before_the_weights(monkeypatch):
    from ld3_core.ld3.distances import LPIPSDistance

    _hide(monkeypatch, "lpips")
    with pytest.raises(MissingExtraError, match=r"ld3-service\[lpips\]"):
        LPIPSDistance(backbone_path="/nonexistent/alexnet.pth")


def test_ld3_scheduler_without_diffusers_names_the_extra(monkeypatch):
    _forget(monkeypatch, "ld3_core.diffusers_scheduler")
    _hide(monkeypatch, "diffusers")
    with pytest.raises(MissingExtraError, match=r"LD3Scheduler.*ld3-service\[diffusers\]"):
        import ld3_core.diffusers_scheduler  # noqa: F401


@pytest.mark.parametrize(
    ("argv", "hidden", "who"),
    [
        (["serve"], "fastapi", "the API"),
        (["get", "builtin:gmm-digits", "unipc", "5"], "httpx", "the API client"),
        (["submit", "ld3", "builtin:gmm-digits", "unipc", "5"], "httpx", "the API client"),
    ],
)
def test_cli_commands_say_which_extra_they_need_in_one_line(monkeypatch, capsys, argv, hidden,
                                                            who):
    monkeypatch.delenv("LD3_BROKER_URL", raising=False)
    _hide(monkeypatch, hidden)
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"ld3 {argv[0]}: error: {who} needs the optional package '{hidden}', which "
                   "is not installed: pip install 'ld3-service[service]'\n")


LEAN_SCRIPT = """
import sys
for name in {optional!r}:
    sys.modules[name] = None  # as if no extra were installed
import ld3_core
from ld3_core.optimize import optimize_schedule
from ld3_core.export import to_format
from ld3_core.report import write_report
from ld3_cli.main import main
code = main(["demo", "--workdir", {workdir!r}, "--model", "builtin:gmm-digits", "--nfe", "3",
             "--n-train", "6", "--n-val", "4", "--epochs", "1", "--teacher-nfe", "6",
             "--n-score-samples", "48", "--n-tune", "24", "--report-nfes", "4",
             "--no-progress"])
sys.exit(code)
"""


@pytest.mark.slow
def test_the_core_and_the_demo_run_without_any_extra(tmp_path):
    optional = sorted(EXTRA_OF_MODULE) + ["k_diffusion"]  # every package an extra installs
    script = textwrap.dedent(LEAN_SCRIPT).format(optional=optional,
                                                 workdir=str(tmp_path / "store"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900,
                          env={**_env(), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(": succeeded") == 2, proc.stdout
    assert (tmp_path / "store" / "ld3.db").is_file()


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LD3_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return env
