"""Images and GPU wiring of docker-compose.yml, checked from the files (no Docker engine).

- every ``ld3 worker`` service reserves exactly one NVIDIA GPU of its own
  (``device_ids``), and inside its container that GPU is CUDA device 0, so a
  ``CUDA_VISIBLE_DEVICES`` in its environment may only say ``0``;
- the Dockerfiles take their base images and package indexes as build arguments whose
  defaults are the public ones (CPU torch index for the API, the CUDA PyTorch base for the
  worker), run as a non-root user and bake no secret in;
- ``.dockerignore`` lets in what the Dockerfiles copy and keeps out secrets and local state;
- ``docker-compose.check.yml`` (used by scripts/compose_check.sh) changes nothing but the
  postgres / redis images and the worker's GPU reservation.

The end-to-end run of the images is ``scripts/compose_check.sh`` (docs/service.md).
"""

from __future__ import annotations

import copy
import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures import REPO
from fixtures.compose import load_compose

DOCKERFILES = {"api": REPO / "docker" / "Dockerfile.api",
               "worker": REPO / "docker" / "Dockerfile.worker"}
CHECK_OVERRIDE = REPO / "docker-compose.check.yml"


# --------------------------------------------------------------------------- GPU wiring
def gpu_assignments(compose: dict[str, Any]) -> dict[str, str]:
    """``{worker service: GPU id}``; ValueError if a worker's GPU wiring is wrong.

    A worker must reserve one NVIDIA GPU by id (not ``count``), no two workers the same one;
    the NVIDIA runtime shows a container only its reserved GPU, as CUDA device 0, so a
    ``CUDA_VISIBLE_DEVICES`` other than ``0`` would hide it from torch.
    """
    seen: dict[str, str] = {}
    for name, service in compose["services"].items():
        if list(service.get("command", []))[:2] != ["ld3", "worker"]:
            continue
        try:
            devices = service["deploy"]["resources"]["reservations"]["devices"]
        except (KeyError, TypeError):
            raise ValueError(f"{name}: no GPU reservation") from None
        if len(devices) != 1:
            raise ValueError(f"{name}: {len(devices)} device requests, want 1")
        dev = devices[0]
        if dev.get("driver") != "nvidia" or "gpu" not in (dev.get("capabilities") or []):
            raise ValueError(f"{name}: not an NVIDIA GPU request")
        if "count" in dev or len(dev.get("device_ids") or []) != 1:
            raise ValueError(f"{name}: must reserve exactly one GPU by device_ids")
        gpu = str(dev["device_ids"][0])
        if gpu in seen.values():
            other = next(k for k, v in seen.items() if v == gpu)
            raise ValueError(f"{name}: GPU {gpu} already reserved by {other}")
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        visible = env.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and str(visible) != "0":
            raise ValueError(f"{name}: CUDA_VISIBLE_DEVICES={visible}, but the container's "
                             "only GPU is device 0")
        conc = service["command"]
        if "--concurrency" in conc and conc[conc.index("--concurrency") + 1] != "1":
            raise ValueError(f"{name}: one job per GPU (concurrency 1)")
        seen[name] = gpu
    if not seen:
        raise ValueError("no ld3 worker service")
    return seen


def _worker_copy(compose: dict[str, Any], name: str, gpu: str) -> dict[str, Any]:
    out = copy.deepcopy(compose)
    svc = copy.deepcopy(out["services"]["worker"])
    svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] = [gpu]
    out["services"][name] = svc
    return out


def _devices(compose: dict[str, Any], service: str = "worker") -> dict[str, Any]:
    return compose["services"][service]["deploy"]["resources"]["reservations"]["devices"][0]


def test_the_worker_reserves_gpu_0_and_sees_it_as_device_0():
    compose = load_compose()
    assert gpu_assignments(compose) == {"worker": "0"}
    env = compose["services"]["worker"]["environment"]
    assert env.get("CUDA_VISIBLE_DEVICES", "0") == "0"


def test_documented_scale_out_one_worker_per_gpu():
    compose = _worker_copy(_worker_copy(load_compose(), "worker-1", "1"), "worker-2", "2")
    assert gpu_assignments(compose) == {"worker": "0", "worker-1": "1", "worker-2": "2"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: _worker_copy(c, "worker-1", "0"), "already reserved by worker"),
        (lambda c: _devices(c).pop("device_ids") and _devices(c).update(count="all") or c,
         "exactly one GPU"),
        (lambda c: _devices(c).update(device_ids=["0", "1"]) or c, "exactly one GPU"),
        (lambda c: _devices(c).update(driver="amd") or c, "not an NVIDIA"),
        (lambda c: c["services"]["worker"].pop("deploy") and c, "no GPU reservation"),
        (lambda c: c["services"]["worker"]["environment"].update(CUDA_VISIBLE_DEVICES="1")
         or c, "CUDA_VISIBLE_DEVICES=1"),
        (lambda c: c["services"]["worker"].update(
            command=["ld3", "worker", "--concurrency", "2"]) or c, "one job per GPU"),
    ],
    ids=["same-gpu-twice", "count-all", "two-gpus", "not-nvidia", "no-reservation",
         "visible-devices-1", "concurrency-2"],
)
def test_gpu_wiring_mistakes_are_caught(mutate, message):
    broken = mutate(copy.deepcopy(load_compose()))
    with pytest.raises(ValueError, match=message):
        gpu_assignments(broken)


# ---------------------------------------------------------------------------- Dockerfiles
def _args(text: str) -> dict[str, str]:
    """The ARG defaults, which live before the first FROM (global build arguments)."""
    head = text[:re.search(r"^FROM ", text, flags=re.M).start()]
    return {m.group(1): m.group(2) or "" for m in
            re.finditer(r"^ARG (\w+)(?:=(\S*))?\s*$", head, flags=re.M)}


def test_dockerfile_bases_and_indexes_are_build_args_defaulting_to_the_public_ones():
    api = DOCKERFILES["api"].read_text()
    worker = DOCKERFILES["worker"].read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}\s*$", api, flags=re.M)
    assert re.search(r"^FROM \$\{TORCH_IMAGE\}\s*$", worker, flags=re.M)
    a, w = _args(api), _args(worker)
    assert a["PYTHON_IMAGE"] == "python:3.11-slim"
    assert a["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"  # CPU torch
    assert re.fullmatch(r"pytorch/pytorch:[\w.]+-cuda[\w.]+-cudnn\d+-runtime",
                        w["TORCH_IMAGE"])
    assert w["TORCH_INDEX_URL"] == ""  # keep the CUDA torch of the base image
    for args in (a, w):
        assert args["PIP_INDEX_URL"] == "https://pypi.org/simple"
    # the index arguments are really used by the pip commands
    for text in (api, worker):
        assert '--index-url "$TORCH_INDEX_URL"' in text
        assert '--index-url "$PIP_INDEX_URL" -r /tmp/deps.txt' in text
        assert "extras = ('service', 'diffusers', 'lpips', 'inception')" in text


def test_both_dockerfiles_are_the_same_up_to_the_source_install():
    """Built from one base, the two images share the torch and dependency layers."""
    def shared(path: Path) -> list[str]:
        lines = [ln for ln in path.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        start = next(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
        end = next(i for i, ln in enumerate(lines) if ln.startswith("RUN pip install --no-deps"))
        return lines[start + 1:end]

    api, worker = shared(DOCKERFILES["api"]), shared(DOCKERFILES["worker"])
    assert api == worker
    # an ARG with a value after FROM would be an image layer of its own and break the sharing
    assert all(re.fullmatch(r"ARG \w+", ln) for ln in api if ln.startswith("ARG"))
    assert any("torch" in ln for ln in api) and "COPY pyproject.toml ./" in api


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_run_as_non_root_and_bake_no_secret(name):
    text = DOCKERFILES[name].read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), users
    assert "useradd" in text and "--uid 1000 ld3" in text
    for line in re.findall(r"^(?:ENV|ARG)\b.*(?:\n\s+.*)*", text, flags=re.M):
        assert not re.search(r"(TOKEN|PASSWORD|SECRET)\w*[= ]", line), line
    assert "LD3_API_TOKEN" not in text and "LD3_DB_PASSWORD" not in text


# --------------------------------------------------------------------------- .dockerignore
def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.rstrip("/")
        globs = [pat] + ([pat[3:], "*/" + pat[3:]] if pat.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            ignored = not neg
    return ignored


def test_dockerignore_lets_in_the_sources_and_keeps_out_secrets_and_state():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for text in (p.read_text() for p in DOCKERFILES.values()):
        for src in re.findall(r"^COPY (\S+) \./", text, flags=re.M):
            assert not dockerignored(src, patterns), f"{src} is copied but ignored"
        for src in ("pyproject.toml", "alembic.ini", "README.md",
                    "ld3_core/weights/unet_digits.pt", "migrations/versions/x.py"):
            assert not dockerignored(src, patterns), src
    for path in (".git/config", ".env", "api/.env", "tests/test_api.py", ".ld3/home/db",
                 "artifacts/jobs/x", "api/__pycache__/app.cpython-311.pyc", "deploy.pem",
                 "ld3_core/secret.key", "docs/service.md", ".venv/bin/python"):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"


# ---------------------------------------------------------------------- the check override
class _ResetLoader(yaml.SafeLoader):
    pass


_ResetLoader.add_constructor("!reset", lambda loader, node: "!reset")


def test_check_override_changes_only_the_stand_in_images_and_the_gpu_reservation():
    override = yaml.load(CHECK_OVERRIDE.read_text(), Loader=_ResetLoader)  # noqa: S506
    assert set(override) == {"services"}
    services = override["services"]
    assert set(services) == {"postgres", "redis", "worker"}
    assert set(services["postgres"]) == {"image"} and set(services["redis"]) == {"image"}
    assert "standin" in services["postgres"]["image"] and "standin" in services["redis"]["image"]
    assert services["worker"] == {"deploy": "!reset"}


def test_check_scripts_parse():
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "compose_check.sh")], check=True)
    compile((REPO / "scripts" / "compose_check.py").read_text(), "compose_check.py", "exec")


@pytest.mark.parametrize(
    ("setting", "engine_answers", "wanted"),
    [("", False, False), ("", True, True), ("1", False, True), ("0", True, False),
     ("yes", False, True)],
)
def test_ci_runs_the_compose_check_only_when_asked_or_an_engine_runs(
        tmp_path, setting, engine_answers, wanted):
    """.ci/run calls ``compose_check.sh --wanted``; a fresh machine (no engine) skips it."""
    fake = tmp_path / "docker"
    fake.write_text(f"#!/bin/sh\nexit {0 if engine_answers else 1}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LD3_COMPOSE_CHECK": setting}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "compose_check.sh"), "--wanted"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == (0 if wanted else 1), proc.stderr
    ci = (REPO / ".ci" / "run").read_text()
    assert "if bash scripts/compose_check.sh --wanted; then" in ci
