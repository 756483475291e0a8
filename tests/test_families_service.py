"""SD3, FLUX (distilled and true-CFG), SDXL and DiT folders end to end through the service.

For each tiny pipeline folder (tests/family_helpers.py): ``POST /models`` registers the folder,
``POST /jobs`` runs a short LD3 job (teacher generation, training, scoring, publishing) and a
trust-region job on it with the embedded runner (SQLite), and ``GET /schedules`` returns the
published schedules (native and diffusers formats) inside the model's own time range.
Settings are tiny (2 teacher pairs, 1 epoch, 4 score samples, pixel features).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from ld3_core.spec import TERMINAL_STATES

pytest.importorskip("diffusers")

import family_helpers as F  # noqa: E402

from ld3_client import schedule_path  # noqa: E402
from ld3_core.models import load  # noqa: E402

NFE = 3
SCORING = {"n_score_samples": 8, "score_batch_size": 4, "extractor": "pixels", "seed": 1}
REGISTER = {
    "sd3": ("text2img", {}),
    "flux": ("text2img", {"resolution": 16}),
    "flux_cfg": ("text2img", {"resolution": 16, "guidance_scale": 2.0}),
    "sdxl": ("text2img", {}),
    "dit": ("latent", {"class_labels": [1, 2]}),
}


def _wait(client: Any, job_id: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in TERMINAL_STATES:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.mark.parametrize("kind", list(REGISTER))
def test_ld3_and_trust_region_jobs_through_the_service(family_folders, make_settings, tmp_path,
                                                       kind):
    from fastapi.testclient import TestClient

    from ld3_cli.server import build_app
    from worker.dispatch import reset_dispatchers

    model_kind, options = REGISTER[kind]
    model_id = f"tiny-{kind.replace('_', '-')}"
    prompts = None if kind == "dit" else F.PROMPTS[:2]
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'fam.db'}",
                             model_roots=str(family_folders[kind].parent))
    try:
        with TestClient(build_app(settings)) as client:
            resp = client.post("/models", json={"id": model_id, "source": str(family_folders[kind]),
                                                "kind": model_kind, "options": options})
            assert resp.status_code == 201, resp.text
            ld3_opts = {**SCORING, "n_train": 2, "n_val": 2, "epochs": 1, "batch_size": 2,
                        "n_tune": 8, "ld3_inits": 1, "refine_max_evals": 4,
                        "teacher_nfe": 4, "teacher_solver": "unipc", "teacher_order": 2}
            if prompts:
                ld3_opts["prompts"] = prompts
            jobs = {
                "ld3": {"kind": "ld3", "model": model_id, "solver": "unipc", "order": 2,
                        "nfe": NFE, "options": ld3_opts},
                "trust_region": {"kind": "trust_region", "model": model_id, "solver": "dpm++",
                                 "order": 2, "nfe": NFE,
                                 "options": {**SCORING, "teacher_nfe": 4,
                                             **({"prompts": prompts} if prompts else {})}},
            }
            for name, body in jobs.items():
                resp = client.post("/jobs", json=body)
                assert resp.status_code == 202, resp.text
                job = _wait(client, resp.json()["id"])
                assert job["state"] == "succeeded", (name, job)
                solver = body["solver"]
                native = client.get(schedule_path(model_id, solver, NFE),
                                    params={"format": "native"})
                assert native.status_code == 200, native.text
                body_n = native.json()
                assert body_n["job_id"] == job["id"]
                t = torch.tensor(body_n["timesteps"], dtype=torch.float64)
                assert t.shape == (NFE + 1,) and bool((t[1:] < t[:-1]).all())
                diff = client.get(schedule_path(model_id, solver, NFE),
                                  params={"format": "diffusers"})
                assert diff.status_code == 200, diff.text
                if kind in ("sd3", "flux", "flux_cfg"):
                    assert "pipeline_sigmas" in diff.json()
    finally:
        reset_dispatchers()
    # the published schedules live in the model's own time range (flow: t in (0, 1))
    model = load(str(family_folders[kind]), **options)
    assert float(t[0]) == pytest.approx(model.schedule.t_max, rel=1e-6)
    assert float(t[-1]) == pytest.approx(model.schedule.t_min, rel=1e-6)
