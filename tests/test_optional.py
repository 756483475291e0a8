"""Optional packages (the ``models`` extra): a missing one gets an error that says what to
install; an installed one is returned; an import error inside an installed package is not
disguised as a missing package."""

from __future__ import annotations

import sys

import pytest

from ld3_core.models.diffusers_loader import resolve_folder, schedule_from_scheduler_config
from ld3_core.optional import require


def test_installed_package_is_returned():
    assert require("json", "reading a config") is sys.modules["json"]


def test_missing_package_names_itself_the_purpose_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> not found
    with pytest.raises(ModuleNotFoundError) as err:
        require("diffusers", "loading a diffusers model")
    message = str(err.value)
    assert err.value.name == "diffusers"
    assert message.startswith("loading a diffusers model needs the 'diffusers' package")
    assert "pip install 'ld3-service[models]'" in message and "pip install diffusers" in message


def test_a_broken_dependency_of_an_installed_package_is_not_reported_as_that_package(
    monkeypatch, tmp_path
):
    package = tmp_path / "ld3_broken_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import ld3_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ld3_broken_pkg", raising=False)
    with pytest.raises(ModuleNotFoundError) as err:
        require("ld3_broken_pkg", "a test")
    assert err.value.name == "ld3_missing_dependency"
    assert "pip install" not in str(err.value)


def test_loader_entry_points_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModuleNotFoundError, match=r"'diffusers' package.*ld3-service\[models\]"):
        schedule_from_scheduler_config({"_class_name": "DDPMScheduler"})
    with pytest.raises(ModuleNotFoundError, match=r"hub id needs the 'huggingface_hub' package"):
        resolve_folder("org/model", local_files_only=True, cache_dir=tmp_path)
