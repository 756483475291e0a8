"""Every code block of README.md runs, in order, in a fresh folder: the demo of line 1, the
Python example, ``ld3 serve`` on the store the demo wrote, the client commands and the
diffusers / k-diffusion / ComfyUI examples against that server.

What the run does differently from a person at a shell is in ``tests/readme_blocks.py``:
``pip install`` lines are not run (the extras they name must be part of the ``dev`` extra
this suite is installed with), the test-suite line is not run from inside the suite (it must
be the command ``.ci/run`` runs), and the API moves from port 8000 to a free port. ``ld3``
is ``python -m ld3_cli`` of this checkout, ``python3`` the interpreter running the tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from readme_blocks import (
    Block,
    code_blocks,
    free_port,
    is_pip_install,
    is_serve,
    is_test_suite,
    pip_extras,
    shell_lines,
    split_and,
    with_port,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
COMMAND_TIMEOUT_S = 900


def _dev_extras() -> set[str]:
    """The extras the ``dev`` extra pulls in (``ld3-service[a,b]`` entries of pyproject)."""
    text = (ROOT / "pyproject.toml").read_text()
    dev = re.search(r"^dev = \[(.*?)^\]", text, re.S | re.M)
    assert dev, "pyproject.toml has no dev extra"
    names: set[str] = {"dev"}
    for group in re.findall(r'"ld3-service\[([^\]]+)\]"', dev.group(1)):
        names.update(e.strip() for e in group.split(","))
    return names


def _defined_extras() -> set[str]:
    """Every extra pyproject.toml defines."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+) = \[", section, re.M))


# ------------------------------------------------------------------------- fast structure
def test_readme_opens_with_install_and_demo_then_the_ci_test_command():
    blocks = code_blocks(README)
    first = blocks[0]
    head = README.read_text().splitlines()[:3]
    assert head[0].startswith("# ") and head[2] == "```bash", "the commands open the README"
    lines = shell_lines(first.text)
    assert first.lang == "bash" and len(lines) == 2, lines
    install, demo = split_and(lines[0])
    assert is_pip_install(install) and "-e" in install and demo == "ld3 demo", lines[0]
    install_dev, suite = split_and(lines[1])
    assert is_pip_install(install_dev) and pip_extras(install_dev) == {"dev"}, lines[1]
    assert is_test_suite(suite), lines[1]
    ci = CI_RUN.read_text()
    assert suite in ci, f".ci/run does not run the README's test command {suite!r}"
    assert 'install -q -e ".[dev]"' in ci, ".ci/run does not install the dev extra"


def test_readme_blocks_are_bash_or_python_and_name_real_extras():
    blocks = code_blocks(README)
    assert blocks, "README.md has no code blocks"
    assert {b.lang for b in blocks} <= {"bash", "python"}, [b.lang for b in blocks]
    defined, dev = _defined_extras(), _dev_extras()
    named: set[str] = set()
    for block in blocks:
        if block.lang == "bash":
            for line in shell_lines(block.text):
                for command in split_and(line):
                    if is_pip_install(command):
                        named |= pip_extras(command)
    assert named, "the README installs no extra"
    assert named <= defined, f"README names extras pyproject.toml lacks: {named - defined}"
    assert named <= dev, f"extras the README uses but dev does not install: {named - dev}"


# ------------------------------------------------------------------------------ the run
class ReadmeRun:
    """Runs README blocks in ``workdir`` with the API on ``port``; keeps each output."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.outputs: list[tuple[str, str]] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = workdir / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LD3_")}
        env.update(
            LD3_PORT=str(port),
            LD3_URL=f"http://127.0.0.1:{port}",
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            PYTHONUNBUFFERED="1",
            LD3_TEST_PYTHON=sys.executable,
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        self.env = env

    def run_block(self, block: Block) -> None:
        """Run one block (bash: command by command; python: as a script)."""
        if block.lang == "python":
            script = self.workdir / f"block{len(self.outputs)}.py"
            script.write_text(with_port(block.text, self.port))
            self._run([sys.executable, str(script)], block.text)
            return
        for line in shell_lines(block.text):
            kept = [c for c in split_and(line) if not is_pip_install(c) and not is_test_suite(c)]
            if not kept:
                continue
            if len(kept) == 1 and is_serve(kept[0]):
                self.start_server(kept[0])
                continue
            assert not any(is_serve(c) for c in kept), f"ld3 serve inside a chain: {line}"
            prelude = ('set -o pipefail; ld3() { "$LD3_TEST_PYTHON" -m ld3_cli "$@"; }; '
                       'python3() { "$LD3_TEST_PYTHON" "$@"; }; ')
            command = with_port(" && ".join(kept), self.port)
            self._run(["bash", "-c", prelude + command], command)

    def _run(self, argv: list[str], label: str) -> None:
        proc = subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
        assert proc.returncode == 0, (
            f"README block failed (exit {proc.returncode}):\n{label}\n--- stdout\n"
            f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
        self.outputs.append((label, proc.stdout))

    def start_server(self, command: str) -> None:
        """Start ``ld3 serve ...`` in the background and wait for ``/healthz``."""
        args = command.split("#", 1)[0].split()[2:]
        log = self.server_log.open("wb")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "ld3_cli", "serve", *args], cwd=self.workdir, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 180
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            assert self.server.poll() is None, self.server_log.read_text()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"ld3 serve did not answer {url}:\n{self.server_log.read_text()}")

    def stop(self) -> None:
        """Stop the server started by a block (SIGTERM, then SIGKILL)."""
        if self.server is None or self.server.poll() is not None:
            return
        os.killpg(self.server.pid, signal.SIGTERM)
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(timeout=30)

    def output(self, pattern: str) -> str:
        """The stdout of the (first) command whose text matches ``pattern``."""
        for label, out in self.outputs:
            if re.search(pattern, label):
                return out
        raise AssertionError(f"no README command matched {pattern!r}")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_every_readme_block_runs_in_order(tmp_path):
    run = ReadmeRun(tmp_path, free_port())
    try:
        for block in code_blocks(README):
            run.run_block(block)
    finally:
        run.stop()

    demo = run.output(r"^ld3 demo$")
    assert re.search(r"== job \S+ \(ld3, [^)]*\): succeeded", demo), demo
    assert re.search(r"== job \S+ \(trust_region, [^)]*\): succeeded", demo), demo
    demo_jobs = set(re.findall(r"== job (\S+) \(\w+, [^)]*\): succeeded", demo))
    assert (tmp_path / ".ld3" / "ld3.db").is_file(), "the demo writes the default store"

    # the server started afterwards serves the demo's jobs and schedule
    listed = json.loads(run.output(r"/jobs$"))
    assert demo_jobs <= {job["id"] for job in listed["items"]}, listed
    native = json.loads(run.output(r"get builtin:unet-digits unipc 5$"))
    assert native["job_id"] in demo_jobs and len(native["timesteps"]) == 6, native
    kd = json.loads(run.output(r"unipc 8 --format k-diffusion"))
    assert kd["format"] == "k-diffusion" and len(kd["sigmas"]) == 9, kd

    python_outputs = [out for label, out in run.outputs if "import" in label]
    assert any("published" in out for out in python_outputs), python_outputs
    gap = re.search(r"max \|LD3Scheduler - ld3 solve\| = (\S+)", "".join(python_outputs))
    assert gap and float(gap.group(1)) < 1e-5, python_outputs
    assert any("torch.Size([8, 1, 8, 8])" in out for out in python_outputs), python_outputs
    comfy = run.output(r"--format comfyui").strip()
    assert len([float(v) for v in comfy.split(",")]) == 6, comfy
