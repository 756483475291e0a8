"""``ld3 demo`` end to end (small settings) and the client commands against ``ld3 serve``
(embedded mode: SQLite + in-process runner, a bearer token set)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from fixtures.processes import wait_http

from ld3_cli.main import main

MODEL = "builtin:gmm-digits"


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_runs_both_jobs_and_writes_the_report(tmp_path, capsys):
    workdir = tmp_path / "demo"
    code, out, err = _run(
        ["demo", "--workdir", str(workdir), "--model", MODEL, "--nfe", "3", "--n-train", "6",
         "--n-val", "4", "--epochs", "1", "--teacher-nfe", "6", "--n-score-samples", "48",
         "--n-tune", "24",
         "--report-nfes", "4", "--no-progress"],
        capsys,
    )
    assert code == 0, out + err
    for kind in ("ld3", "trust_region"):
        assert re.search(rf"^== job \S+ \({kind}, {MODEL} unipc-2 NFE 3\): succeeded \(",
                         out, flags=re.M), out
    for heuristic in ("uniform", "quadratic", "edm", "logsnr"):
        assert re.search(rf"^\s+{heuristic}\s+\d+\.\d+", out, flags=re.M), out
    assert out.count("<- published") == 2
    assert len(re.findall(r"^\s+published the ", out, flags=re.M)) == 2, out
    timesteps = re.findall(r"timesteps \(t\): \[([^\]]+)\]", out)
    assert len(timesteps) == 2
    for line in timesteps:
        values = [float(v) for v in line.split(",")]
        assert len(values) == 4 and values == sorted(values, reverse=True)
    pngs = re.findall(r"(?:grid_png|fd_plot_png)\s+(\S+\.png)", out)
    assert len(pngs) == 4, out
    for png in pngs:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(png).is_relative_to(workdir)
    assert (workdir / "ld3.db").is_file()
    reports = [json.loads(Path(p).read_text()) for p in re.findall(r"report_json\s+(\S+)", out)]
    # trust region: also scored at --report-nfes
    assert sorted(sorted(r["details"].get("other_nfes", {})) for r in reports) == [[], ["4"]]
    for report in reports:
        assert {"uniform", "quadratic", "edm", "logsnr", "trust_region"} <= set(report["scores"])
        assert report["winner"] in report["scores"] and report["summary"].startswith("published")


@pytest.fixture
def embedded_server(tmp_path, start_process, free_port, service_env):
    port = free_port()
    env = service_env(f"sqlite:///{tmp_path / 'serve.db'}", LD3_API_TOKEN="s3cret")
    proc = start_process([sys.executable, "-m", "ld3_cli", "serve", "--port", str(port)], env,
                         name="serve")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", timeout=120)
    except AssertionError:
        raise AssertionError(proc.log()) from None
    return url


def test_submit_status_get_against_ld3_serve(embedded_server, capsys):
    url = embedded_server
    code, out, err = _run(["submit", "trust_region", MODEL, "unipc", "3", "--url", url], capsys)
    assert code == 1 and "401" in err and len(err.strip().splitlines()) == 1

    code, out, err = _run(
        ["submit", "trust_region", MODEL, "unipc", "3", "--order", "2", "-o",
         "n_score_samples=32", "-o", "teacher_nfe=6", "--wait", "--url", url,
         "--token", "s3cret"],
        capsys,
    )
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("job ") and first.endswith(": succeeded"), out
    job = {"id": first.split()[1]}
    assert "published the " in out and "95% CI" in out, out
    assert f"{url}/jobs/{job['id']}/report" in out, "absolute links to the report"
    assert f"report page:      {url}/jobs/{job['id']}/report?format=html" in out, out
    assert not out.lstrip().startswith("{"), "a summary, not raw JSON"

    code, out, err = _run(["status", job["id"], "--url", url], capsys)
    assert code == 0 and json.loads(out)["id"] == job["id"]

    code, out, err = _run(["get", MODEL, "unipc", "3", "--url", url], capsys)
    native = json.loads(out)
    assert code == 0 and native["job_id"] == job["id"] and len(native["timesteps"]) == 4
    for fmt in ("diffusers", "k-diffusion", "comfyui"):
        code, out, err = _run(["get", MODEL, "unipc", "3", "--format", fmt, "--url", url],
                              capsys)
        assert code == 0, err
        assert json.loads(out)["format"] == fmt
    code, out, err = _run(["get", MODEL, "unipc", "4", "--url", url], capsys)
    assert code == 0 and json.loads(out)["interpolated"] is True, err

    # NFE 1: every schedule is [t_max, t_min], so nothing beats the heuristics: the job must
    # publish one, and say so, with source "heuristic:<name>"
    code, out, err = _run(
        ["submit", "trust_region", MODEL, "dpm++", "1", "--order", "1", "-o",
         "n_score_samples=32", "-o", "teacher_nfe=6", "--wait", "--url", url,
         "--token", "s3cret"],
        capsys,
    )
    assert code == 0, err
    assert "published the heuristic" in out and "no learned schedule beat it" in out, out
    code, out, err = _run(["get", MODEL, "dpm++", "1", "--order", "1", "--url", url], capsys)
    native = json.loads(out)
    assert code == 0 and native["source"].startswith("heuristic:"), out
    assert native["best_heuristic"] == native["source"].split(":", 1)[1]
    assert native["ratio_to_best_heuristic"] == pytest.approx(1.0)

    # a long LD3 job, cancelled from the CLI
    code, out, err = _run(
        ["submit", "ld3", MODEL, "unipc", "5", "-o", "epochs=500", "-o", "n_train=20", "-o",
         "n_val=10", "-o", "n_tune=20", "-o", "teacher_nfe=6", "-o", "n_score_samples=16",
         "--url", url, "--token", "s3cret"], capsys)
    assert code == 0, err
    long_job = json.loads(out)["id"]
    code, out, err = _run(["cancel", long_job, "--wait", "--url", url, "--token", "s3cret"],
                          capsys)
    assert code == 0 and out.strip() == f"job {long_job}: cancelled", out + err
    code, out, err = _run(["cancel", "nope", "--url", url, "--token", "s3cret"], capsys)
    assert code == 1 and "404" in err and len(err.strip().splitlines()) == 1

    code, out, err = _run(["get", MODEL, "euler", "3", "--url", url], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"no schedule published yet for {MODEL} with solver euler" in err
    assert f"`ld3 submit trust_region {MODEL} euler 3 --wait`" in err
    code, out, err = _run(["get", "builtin:nope", "unipc", "3", "--url", url], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"unknown model 'builtin:nope'; known models: {MODEL}" in err, err
    code, out, err = _run(["submit", "ld3", "builtin:nope", "unipc", "3", "--url", url,
                           "--token", "s3cret"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "unknown model 'builtin:nope'; known models: " in err, err
