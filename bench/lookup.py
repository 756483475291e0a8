"""Lookup throughput: ``GET /schedules/{model}/{solver}/{nfe}`` vs a bare FastAPI endpoint.

For each backend (SQLite file, a throw-away PostgreSQL database), the script publishes one
schedule, starts two uvicorn servers with the same settings (one worker, no access log,
``--log-level warning``):

- **service**: ``ld3_cli.server.build_app()`` (middleware, validation, the lookup cache);
- **bare**: a FastAPI app whose one ``async`` endpoint returns the same JSON as a dict;

and loads each with ``wrk`` (``apt-get install wrk``; 2 threads, 16 connections by default):
service 200s, service 304s (``If-None-Match`` with the ETag), bare. It prints the three
rates and the ratios service/bare (target >= 0.5).

Usage::

    python bench/lookup.py                                  # both backends, 10 s per run
    python bench/lookup.py --backends sqlite --duration 5
    python bench/lookup.py --pg-admin postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ld3_core.spec import JobSpec

REPO = Path(__file__).resolve().parent.parent
MODEL, SOLVER, ORDER, NFE = "builtin:gmm-digits", "unipc", 2, 6
PATH = f"/schedules/{MODEL}/{SOLVER}/{NFE}"


# ------------------------------------------------------------------------------ the apps
def bare_app() -> Any:
    """uvicorn factory: a bare FastAPI app serving the JSON in ``$LD3_BENCH_PAYLOAD``."""
    from fastapi import FastAPI

    payload = json.loads(Path(os.environ["LD3_BENCH_PAYLOAD"]).read_text())
    app = FastAPI()

    @app.get("/schedules/{key:path}")
    async def lookup(key: str) -> dict[str, Any]:
        return payload

    return app


def service_app() -> Any:
    """uvicorn factory: the service app from the ``LD3_*`` environment (as ``ld3 serve``)."""
    sys.path.insert(0, str(REPO))
    from ld3_cli.server import build_app

    return build_app()


# ------------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish_one(url: str) -> None:
    """Migrate ``url`` and publish one schedule for MODEL/SOLVER/ORDER/NFE (as a worker)."""
    sys.path.insert(0, str(REPO))
    from ld3_core.heuristics import discretize
    from ld3_core.schedules import VPLinear
    from registry import db
    from registry.jobs import claim_job, create_job
    from registry.schedules import publish_result
    from registry.settings import Settings

    settings = Settings(database_url=url)
    db.init_db(settings)
    cfg = VPLinear().config()
    times = discretize("logsnr", NFE, VPLinear()).tolist()
    with db.session_scope(settings) as s:
        job, _ = create_job(s, JobSpec.parse("trust_region", MODEL, SOLVER, NFE, ORDER))
        claim_job(s, job.id, "bench")
        publish_result(s, job.id, timesteps=times, score=1.0, metric="fd", extractor="digits",
                       noise_schedule=cfg)
    db.dispose_engines()


def start_server(factory: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start uvicorn with ``factory``; returns (process, base URL) once it answers."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{factory} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(base + PATH, timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{factory} did not answer in 90 s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process (SIGKILL after 10 s)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wrk(url: str, args: argparse.Namespace, headers: dict[str, str] | None = None) -> float:
    """Requests/s of ``wrk`` on ``url`` (raises when any answer was not 2xx/3xx)."""
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx or 3xx responses" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def pg_database(admin: str) -> tuple[str, Any]:
    """Create a throw-away database on the server of ``admin``; returns (URL, drop())."""
    import psycopg

    name = f"ld3_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Measure one backend; returns the rates."""
    import httpx

    drop = None
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    else:
        url, drop = pg_database(args.pg_admin)
    try:
        publish_one(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LD3_")}
        env.update(LD3_DATABASE_URL=url, LD3_HOME=str(workdir / "home"),
                   LD3_AUTO_MIGRATE="0", LD3_LOG_LEVEL="WARNING",
                   OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        service, service_url = start_server("bench.lookup:service_app", env)
        try:
            first = httpx.get(service_url + PATH, timeout=5)
            payload = workdir / f"payload-{backend}.json"
            payload.write_bytes(first.content)
            env["LD3_BENCH_PAYLOAD"] = str(payload)
            bare, bare_url = start_server("bench.lookup:bare_app", env)
            try:
                assert httpx.get(bare_url + PATH).json() == first.json()
                rates = {
                    "bare": wrk(bare_url + PATH, args),
                    "service": wrk(service_url + PATH, args),
                    "service_304": wrk(service_url + PATH, args,
                                       {"If-None-Match": first.headers["etag"]}),
                }
            finally:
                stop(bare)
        finally:
            stop(service)
    finally:
        if drop is not None:
            drop()
    return rates


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--pg-admin", default=os.environ.get(
        "LD3_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s {PATH}; uvicorn, "
          f"1 worker, no access log; {os.cpu_count()} CPUs")
    print(f"{'backend':<9} {'bare req/s':>11} {'service 200':>12} {'ratio':>6} "
          f"{'service 304':>12} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="ld3-bench-lookup-") as tmp:
        for backend in args.backends.split(","):
            folder = Path(tmp) / backend
            folder.mkdir()
            r = run_backend(backend, args, folder)
            print(f"{backend:<9} {r['bare']:>11.0f} {r['service']:>12.0f} "
                  f"{r['service'] / r['bare']:>6.2f} {r['service_304']:>12.0f} "
                  f"{r['service_304'] / r['bare']:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
