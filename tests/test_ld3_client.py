"""``ld3_client``: the service's URL format, ServiceError from problem+json, ServiceClient."""

from __future__ import annotations

import httpx
import pytest

from ld3_client import (
    ServiceClient,
    ServiceError,
    job_cancel_path,
    job_path,
    model_path,
    schedule_path,
)


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("builtin:gmm-digits", "unipc", 6), "/schedules/builtin:gmm-digits/unipc/6"),
        (("org/tiny-sd", "dpm++", 8), "/schedules/org/tiny-sd/dpm++/8"),
        (("my model?#", "euler", 3), "/schedules/my%20model%3F%23/euler/3"),
    ],
)
def test_schedule_path_keeps_the_model_ids_slash_and_colon(args, path):
    assert schedule_path(*args) == path


def test_other_paths_and_bad_arguments():
    assert job_path("a/b c") == "/jobs/a%2Fb%20c"
    assert job_cancel_path("0f3") == "/jobs/0f3/cancel"
    assert model_path("hf:org/m") == "/models/hf:org/m"
    for bad in (0, -1, True, 2.5, "6"):
        with pytest.raises(ValueError, match="nfe"):
            schedule_path("m", "unipc", bad)
    with pytest.raises(ValueError):
        schedule_path("", "unipc", 6)
    with pytest.raises(ValueError):
        job_path("")


def test_the_api_builds_its_links_with_the_same_paths():
    from api.serialize import job_url, schedule_key_url

    link = schedule_key_url("org/tiny-sd", "dpm++", 8, 3)
    assert link == "/schedules/org/tiny-sd/dpm++/8?order=3"
    assert job_url("abc") == job_path("abc")


PROBLEM_422 = {
    "type": "urn:ld3:problem:validation-error", "title": "Unprocessable Content", "status": 422,
    "detail": "unknown model 'x'", "instance": "/jobs",
    "errors": [{"pointer": "#/model", "detail": "unknown model 'x'"},
               {"pointer": "#/nfe", "detail": "nfe must be 1..1000"}],
}


def _client(handler, **kw) -> tuple[ServiceClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record))
    return ServiceClient("http://svc/prefix/", http=http, **kw), seen


def test_service_error_carries_the_problem_and_says_it_once():
    client, _ = _client(lambda r: httpx.Response(422, json=PROBLEM_422))
    with pytest.raises(ServiceError) as info:
        client.submit_job({"kind": "ld3", "model": "x", "solver": "unipc", "nfe": 0})
    exc = info.value
    assert (exc.status, exc.title) == (422, "Unprocessable Content")
    assert exc.detail == "unknown model 'x'"
    assert exc.problem == PROBLEM_422 and exc.slug == "validation-error"
    text = str(exc)
    assert text.count("unknown model 'x'") == 1, text
    assert text == ("HTTP 422 Unprocessable Content: unknown model 'x' "
                    "(#/nfe: nfe must be 1..1000)")


def test_service_error_of_plain_text_and_unreachable_api():
    client, _ = _client(lambda r: httpx.Response(502, text="<html>\n bad gateway </html>"))
    with pytest.raises(ServiceError, match=r"^HTTP 502 Bad Gateway: <html> bad gateway") as info:
        client.job("j")
    assert info.value.problem == {} and info.value.slug is None

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = _client(refuse)
    with pytest.raises(ServiceError, match="cannot reach the API at http://svc/prefix") as info:
        client.models()
    assert info.value.status is None
    client, _ = _client(lambda r: httpx.Response(200, text="not json"))
    with pytest.raises(ServiceError, match="not JSON"):
        client.job("j")


def test_requests_use_the_url_builder_token_and_headers():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "j1", "state": "queued"})

    client, seen = _client(answer, token="tok", headers={"X-Extra": "1"})
    client.submit_job({"kind": "ld3"}, idempotency_key="k1")
    client.job("j1")
    client.cancel_job("j1")
    client.schedule("org/m", "dpm++", 5, order=3, fmt="comfyui")
    client.model("builtin:gmm-digits")
    got = [(r.method, r.url.raw_path.decode()) for r in seen]
    assert got == [
        ("POST", "/prefix/jobs"),
        ("GET", "/prefix" + job_path("j1")),
        ("POST", "/prefix" + job_cancel_path("j1")),
        ("GET", "/prefix" + schedule_path("org/m", "dpm++", 5) + "?format=comfyui&order=3"),
        ("GET", "/prefix" + model_path("builtin:gmm-digits")),
    ]
    assert all(r.headers["authorization"] == "Bearer tok" for r in seen)
    assert all(r.headers["x-extra"] == "1" for r in seen)
    assert seen[0].headers["idempotency-key"] == "k1"
    assert "idempotency-key" not in seen[1].headers


def test_models_reads_every_page():
    catalog = [{"id": f"m{i}"} for i in range(7)]

    def page(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", 0))
        return httpx.Response(200, json={"items": catalog[offset:offset + 3],
                                         "total": len(catalog), "limit": 3, "offset": offset})

    client, seen = _client(page)
    assert [m["id"] for m in client.models()] == [m["id"] for m in catalog]
    assert len(seen) == 3


def test_bad_base_url_and_own_client_lifecycle():
    with pytest.raises(ValueError, match="http:// or https://"):
        ServiceClient("ftp://x")
    with ServiceClient("http://127.0.0.1:9", timeout=1.0) as own:
        assert own.url("/jobs") == "http://127.0.0.1:9/jobs"
        assert own.url("https://elsewhere/x") == "https://elsewhere/x"
    assert own.http.is_closed


def test_ld3_core_does_not_import_the_client_until_asked():
    import subprocess
    import sys

    code = ("import sys\nimport ld3_core.diffusers_scheduler\n"
            "assert 'ld3_client' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
