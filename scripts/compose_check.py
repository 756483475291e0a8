#!/usr/bin/env python3
"""The stack steps of scripts/compose_check.sh: run docker-compose.yml for real and break it.

Standard library only (it runs before, and independently of, any install of the project).
Expects the images ld3-api:latest, ld3-worker:latest and the postgres / redis stand-ins to
exist (the shell script builds them). Every step prints its wall time; any failed check
raises ``CheckFailed`` and the script exits 1 (the shell script then runs ``down -v``).

Steps: up (every service healthy) -> bearer token (401 without / with a wrong one, 202 with
it) -> trust-region job succeeds and GET /schedules serves it -> LD3 job, ``docker kill`` of
the worker mid-training, ``up -d worker`` again: the job resumes from its checkpoint and
publishes exactly one schedule -> postgres stopped then started, redis stopped then started
while the API runs: 503 problem+json during, ready again after, the API container never
restarted, a new job still runs -> ``down`` + ``up``: jobs, schedules and reports survive
(volumes) -> ``down -v``: volumes gone.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("LD3_CHECK_PROJECT", "ld3check")
API_PORT = int(os.environ.get("LD3_CHECK_API_PORT", "18000"))
API = f"http://127.0.0.1:{API_PORT}"
MODEL = os.environ.get("LD3_CHECK_MODEL", "builtin:gmm-digits")
TR_OPTIONS = {"n_score_samples": 64, "teacher_nfe": 10, "seed": 3}
LD3_OPTIONS = {"n_train": 8, "n_val": 6, "epochs": 150, "teacher_nfe": 10,
               "n_score_samples": 64, "seed": 5, "n_tune": 16, "ld3_inits": 1,
               "refine_max_evals": 10}
SERVICES = ("postgres", "redis", "api", "worker")
TIMINGS: list[tuple[str, float]] = []


class CheckFailed(RuntimeError):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)
    print(f"    ok: {what}", flush=True)


# ------------------------------------------------------------------------------ processes
ENV = dict(os.environ)
ENV.setdefault("LD3_API_TOKEN", secrets.token_hex(16))
ENV.setdefault("LD3_DB_PASSWORD", secrets.token_hex(12))
ENV["LD3_API_PORT"] = str(API_PORT)
# A SIGKILLed worker's job comes back after this many seconds (compose's default is 7200).
ENV.setdefault("LD3_VISIBILITY_TIMEOUT", "45")
TOKEN = ENV["LD3_API_TOKEN"]
COMPOSE = ["docker", "compose", "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"),
           "-f", str(REPO / "docker-compose.check.yml")]


def run(args: list[str], check_rc: bool = True, quiet: bool = False) -> str:
    proc = subprocess.run(args, env=ENV, cwd=REPO, text=True, capture_output=True)
    if check_rc and proc.returncode != 0:
        raise CheckFailed(f"{' '.join(args)} -> exit {proc.returncode}\n{proc.stdout}"
                          f"{proc.stderr}")
    if not quiet and proc.stderr.strip():
        print("      " + proc.stderr.strip().replace("\n", "\n      "), flush=True)
    return proc.stdout


def compose(*args: str, **kw: Any) -> str:
    kw.setdefault("quiet", True)  # compose reports progress on stderr
    return run([*COMPOSE, *args], **kw)


def container(service: str) -> str:
    cid = compose("ps", "-a", "-q", service).strip()
    if not cid:
        raise CheckFailed(f"no container for service {service}")
    return cid.splitlines()[0]


def inspect(cid: str) -> dict[str, Any]:
    return json.loads(run(["docker", "inspect", cid], quiet=True))[0]


def in_api(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMPOSE, "exec", "-T", "api", *cmd], env=ENV, cwd=REPO,
                          text=True, capture_output=True)


def psql(sql: str) -> str:
    return compose("exec", "-T", "postgres", "psql", "-U", "ld3", "-d", "ld3", "-tAc",
                   sql).strip()


# ----------------------------------------------------------------------------------- HTTP
def http(method: str, path: str, body: Any = None, token: str | None = TOKEN,
         timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read()
    try:
        payload: Any = json.loads(raw) if raw else None
    except ValueError:
        payload = raw
    return status, {k.lower(): v for k, v in headers.items()}, payload


def wait_for(what: str, fn: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (OSError, urllib.error.URLError, CheckFailed) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def job(job_id: str) -> dict[str, Any]:
    status, _, body = http("GET", f"/jobs/{job_id}")
    if status != 200:
        raise CheckFailed(f"GET /jobs/{job_id} -> {status} {body}")
    return body


def wait_job(job_id: str, timeout: float, until: Any = None) -> dict[str, Any]:
    until = until or (lambda j: j["state"] in ("succeeded", "failed", "cancelled"))
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        last.update(job(job_id))
        return dict(last) if until(last) else None

    try:
        return wait_for(f"job {job_id}", probe, timeout, interval=0.5)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc}; job: {json.dumps(last)[:600]}") from None


def submit(body: dict[str, Any]) -> dict[str, Any]:
    status, headers, payload = http("POST", "/jobs", body)
    if status != 202:
        raise CheckFailed(f"POST /jobs -> {status} {payload}")
    check(headers.get("location", "").endswith(payload["id"]),
          f"POST /jobs -> 202 + Location for {body['kind']} job {payload['id']}")
    return payload


def is_problem(status: int, headers: dict[str, str], body: Any, want: int) -> bool:
    return (status == want and headers.get("content-type", "").startswith(
        "application/problem+json") and isinstance(body, dict) and body.get("status") == want)


# ---------------------------------------------------------------------------------- steps
def health() -> dict[str, str]:
    out = {}
    for service in SERVICES:
        state = inspect(container(service))["State"]
        out[service] = (state.get("Health") or {}).get("Status", state["Status"])
    return out


def wait_healthy(timeout: float = 240) -> None:
    states = wait_for("every service healthy",
                      lambda: (lambda h: h if set(h.values()) == {"healthy"} else None)(
                          health()), timeout, interval=2)
    migrate = inspect(container("migrate"))["State"]
    check(migrate["Status"] == "exited" and migrate["ExitCode"] == 0,
          "migrate ran once and exited 0")
    check(True, "healthy: " + ", ".join(f"{k}={v}" for k, v in states.items()))


def step_up() -> None:
    compose("up", "-d", "--no-build")
    wait_healthy()
    status, _, body = http("GET", "/readyz", token=None)
    check(status == 200, f"GET /readyz -> 200 {body}")
    worker = inspect(container("worker"))
    check(worker["Config"]["User"] == "ld3", "worker container runs as user ld3")
    uid = in_api("id", "-u").stdout.strip()
    check(uid == "1000", f"api container runs as uid {uid} (non-root)")


def step_auth() -> dict[str, Any]:
    body = {"kind": "trust_region", "model": MODEL, "solver": "unipc", "order": 2, "nfe": 6,
            "options": TR_OPTIONS}
    status, headers, payload = http("POST", "/jobs", body, token=None)
    check(is_problem(status, headers, payload, 401), "POST /jobs without token -> 401 problem")
    status, headers, payload = http("POST", "/jobs", body, token="wrong-" + TOKEN)
    check(is_problem(status, headers, payload, 401), "POST /jobs, wrong token -> 401 problem")
    check(psql("select count(*) from jobs") == "0", "no job row written by the 401s")
    return submit(body)


def check_schedule_served(done: dict[str, Any]) -> None:
    key = f"/schedules/{done['model']}/{done['solver']}/{done['nfe']}?order={done['order']}"
    status, headers, body = http("GET", key, token=None)
    check(status == 200 and body["schedule_id"] == done["schedule_id"]
          and body["job_id"] == done["id"] and bool(headers.get("etag")),
          f"GET {key} -> 200, schedule {body.get('schedule_id')} of the job, ETag")
    status, _, by_id = http("GET", f"/schedules/id/{done['schedule_id']}", token=None)
    check(status == 200 and by_id["timesteps"] == body["timesteps"],
          f"GET /schedules/id/{done['schedule_id']} -> 200, timesteps "
          + "[" + ", ".join(f"{t:.4f}" for t in by_id["timesteps"]) + "]")
    status, _, exported = http("GET", key + "&format=diffusers", token=None)
    check(status == 200 and exported, f"GET {key}&format=diffusers -> 200")
    status, _, report = http("GET", f"/jobs/{done['id']}/report", token=None)
    check(status == 200 and isinstance(report, dict), f"GET /jobs/{done['id']}/report -> 200")


def step_trust_region(tr: dict[str, Any]) -> dict[str, Any]:
    done = wait_job(tr["id"], timeout=600)
    check(done["state"] == "succeeded", f"trust-region job {done['state']} "
          f"(attempts {done['attempts']}, worker {done['worker']})")
    check_schedule_served(done)
    return done


def step_ld3_kill() -> dict[str, Any]:
    ld3 = submit({"kind": "ld3", "model": MODEL, "solver": "unipc", "order": 2, "nfe": 6,
                  "options": LD3_OPTIONS})
    state_pt = f"/data/artifacts/jobs/{ld3['id']}/ckpt/optimize/ld3/*/state.pt"
    # kill once training iterations are checkpointed (LD3 spans 0.35 .. 0.65 of optimize)
    seen = wait_job(ld3["id"], timeout=600, until=lambda j: j["state"] == "running"
                    and j["progress"] >= 0.3
                    and in_api("sh", "-c", f"ls {state_pt}").returncode == 0)
    worker = container("worker")
    run(["docker", "kill", worker], quiet=True)
    check(True, f"docker kill worker at stage {seen['stage']}, progress {seen['progress']:.2f}"
          f", checkpoint {state_pt} on the volume")
    check(inspect(worker)["State"]["Status"] == "exited", "worker container exited")
    check(job(ld3["id"])["state"] == "running", "job still 'running' after the kill")
    compose("up", "-d", "--no-build", "worker")
    done = wait_job(ld3["id"], timeout=600)
    check(done["state"] == "succeeded" and done["attempts"] == 2,
          f"LD3 job {done['state']} on attempt {done['attempts']}")
    rows = psql(f"select count(*) from schedules where job_id = '{ld3['id']}'")
    check(rows == "1", f"exactly one published schedule for the job ({rows})")
    events_raw = in_api("cat", f"/data/artifacts/jobs/{ld3['id']}/ckpt/events.jsonl").stdout
    events = [json.loads(line) for line in events_raw.splitlines() if line.strip()]
    starts = [e for e in events if e.get("event") == "start"]
    check(len(starts) == 2 and starts[1].get("ld3_checkpoint") is True,
          "second attempt started from the LD3 checkpoint")
    optimized = [e for e in events if e.get("event") == "optimized"]
    first = optimized[0].get("first_iteration", 0) if optimized else None
    check(len(optimized) == 1 and (first or 0) > 1,
          f"training resumed at iteration {first} (not restarted)")
    check_schedule_served(done)
    return done


def api_identity() -> tuple[str, int]:
    info = inspect(container("api"))
    return info["State"]["StartedAt"], int(info["RestartCount"])


def outage(service: str) -> None:
    before = api_identity()
    compose("stop", service)
    status, headers, body = http("GET", "/readyz", token=None)
    check(is_problem(status, headers, body, 503), f"{service} stopped: GET /readyz -> 503 "
          f"problem+json ({(body or {}).get('detail') if isinstance(body, dict) else body})")
    probe = {"kind": "trust_region", "model": MODEL, "solver": "unipc", "order": 2, "nfe": 4,
             "options": TR_OPTIONS}
    status, headers, body = http("POST", "/jobs", probe, timeout=30)
    check(is_problem(status, headers, body, 503), f"{service} stopped: POST /jobs -> 503 "
          "problem+json")
    compose("start", service)
    wait_for("/readyz 200", lambda: http("GET", "/readyz", token=None)[0] == 200, 120)
    check(True, f"{service} started again: GET /readyz -> 200")
    check(api_identity() == before, "the API container was not restarted")


def step_outages() -> dict[str, Any]:
    outage("postgres")
    outage("redis")
    if psql("select count(*) from jobs where nfe = 4") != "0":
        raise CheckFailed("a job refused with 503 left a row behind")
    check(True, "no job row left by the refused submissions")
    tr = submit({"kind": "trust_region", "model": MODEL, "solver": "unipc", "order": 2,
                 "nfe": 4, "options": TR_OPTIONS})
    done = wait_job(tr["id"], timeout=600)
    check(done["state"] == "succeeded", "a job submitted after both restarts succeeded "
          "(worker reconnected to the broker and the database)")
    return done


def step_down_up(done: list[dict[str, Any]]) -> None:
    compose("down")
    check(not compose("ps", "-a", "-q").strip(), "down: no container left")
    compose("up", "-d", "--no-build")
    wait_healthy()
    for d in done:
        again = job(d["id"])
        check(again["state"] == "succeeded" and again["schedule_id"] == d["schedule_id"],
              f"job {d['id']} ({d['kind']}) still succeeded with schedule {d['schedule_id']}")
        status, _, _ = http("GET", f"/jobs/{d['id']}/report", token=None)
        check(status == 200, f"its report is still served (artifacts volume) -> {status}")
    status, _, page = http("GET", "/schedules", token=None)
    check(status == 200 and page["total"] == len(done), f"GET /schedules total {page['total']}")


def step_down_v() -> None:
    compose("down", "-v")
    left = run(["docker", "volume", "ls", "-q", "--filter",
                f"label=com.docker.compose.project={PROJECT}"], quiet=True).split()
    check(not left, "down -v: no volume of the project left")


def timed(name: str, fn: Any, *args: Any) -> Any:
    print(f"\n== {name}", flush=True)
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        TIMINGS.append((name, time.monotonic() - t0))
        print(f"-- {name}: {TIMINGS[-1][1]:.1f} s", flush=True)


def main() -> int:
    t0 = time.monotonic()
    ok = False
    try:
        timed("compose up, every service healthy", step_up)
        tr = timed("bearer token on POST /jobs", step_auth)
        tr_done = timed("trust-region job on the CPU worker, GET /schedules", step_trust_region,
                        tr)
        ld3_done = timed("LD3 job, docker kill worker mid-job, up -d worker",
                         step_ld3_kill)
        tr2_done = timed("postgres and redis restarted under the running API", step_outages)
        timed("compose down + up: data kept in the volumes", step_down_up,
              [tr_done, ld3_done, tr2_done])
        timed("compose down -v", step_down_v)
        ok = True
    except CheckFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - an unexpected answer is a failed check too
        import traceback

        traceback.print_exc()
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        print("\nstack step timings:")
        for name, secs in TIMINGS:
            print(f"  {secs:7.1f} s  {name}")
        print(f"  {time.monotonic() - t0:7.1f} s  total of the stack steps "
              f"({'all passed' if ok else 'FAILED'})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
