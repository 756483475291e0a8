"""``ld3`` CLI: bad input -> one line on stderr and a non-zero exit; the console entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ld3_cli.main import main


def run_cli(argv, capsys, monkeypatch=None, env=None):
    if monkeypatch is not None:
        for key, value in (env or {}).items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["submit", "ld3", "builtin:gmm-digits", "heun", "5"], "solver"),
        (["submit", "ld3", "builtin:gmm-digits", "unipc", "0"], "must be >= 1"),
        (["submit", "ld3", "builtin:gmm-digits", "unipc", "five"], "not an integer"),
        (["submit", "ld3", "builtin:gmm-digits", "unipc", "5", "-o", "seed"], "key=value"),
        (["submit", "nope", "builtin:gmm-digits", "unipc", "5"], "kind"),
        (["get", "builtin:gmm-digits", "unipc", "5", "--format", "onnx"], "format"),
        (["serve", "--port", "70000"], "TCP port"),
        (["demo", "--kinds", "ld3,magic"], "--kinds"),
        (["demo", "--model", "builtin:no-such-model"], "unknown built-in model"),
        (["demo", "--solver", "euler", "--order", "3"], "order must be 1..1"),
        (["demo", "--report-nfes", "3,x"], "not an integer"),
    ],
)
def test_bad_input_one_line_nonzero_exit(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ld3"), err
    assert needle in lines[0]


def test_serve_refuses_public_bind_without_token(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["serve", "--host", "0.0.0.0", "--port", "8"], capsys, monkeypatch,
                           {"LD3_API_TOKEN": None})
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "LD3_API_TOKEN" in err and "127.0.0.1" in err


def test_worker_needs_a_broker(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["worker"], capsys, monkeypatch, {"LD3_BROKER_URL": None})
    assert code == 2 and "LD3_BROKER_URL" in err and len(err.strip().splitlines()) == 1


def test_client_commands_report_an_unreachable_api(capsys, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    for argv in (["status", "abc", "--url", url],
                 ["get", "builtin:gmm-digits", "unipc", "5", "--url", url],
                 ["submit", "trust_region", "builtin:gmm-digits", "unipc", "5", "--url", url]):
        code, _, err = run_cli(argv, capsys)
        assert code == 1, (argv, err)
        assert "cannot reach the API" in err and len(err.strip().splitlines()) == 1


def test_bad_url_and_options_json(capsys):
    code, _, err = run_cli(["status", "abc", "--url", "ftp://x"], capsys)
    assert code == 2 and "http://" in err
    code, _, err = run_cli(["submit", "ld3", "m", "unipc", "3", "--options-json", "[1]"], capsys)
    assert code == 2 and "JSON object" in err
    code, _, err = run_cli(["submit", "ld3", "m", "unipc", "3", "--options-json", "{"], capsys)
    assert code == 2 and "not valid JSON" in err


def test_bad_setting_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["migrate"], capsys, monkeypatch, {"LD3_MAX_NFE": "lots"})
    assert code == 2 and "LD3_MAX_NFE" in err and len(err.strip().splitlines()) == 1


def test_migrate_reports_unreachable_database(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(
        ["migrate"], capsys, monkeypatch,
        {"LD3_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x",
         "LD3_DB_CONNECT_TIMEOUT_S": "2"},
    )
    assert code == 1 and "cannot reach the database" in err
    assert len(err.strip().splitlines()) == 1


def test_migrate_creates_the_embedded_schema(capsys, monkeypatch, tmp_path):
    import sqlalchemy as sa

    db = tmp_path / "m.db"
    code, _, err = run_cli(["migrate"], capsys, monkeypatch,
                           {"LD3_DATABASE_URL": f"sqlite:///{db}"})
    assert code == 0, err
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        names = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"jobs", "schedules", "models", "artifacts", "alembic_version"} <= names


def test_module_entry_point_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ld3_cli", "submit", "ld3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("ld3 submit: error:")
    helped = subprocess.run([sys.executable, "-m", "ld3_cli", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0
    for command in ("demo", "serve", "worker", "submit", "status", "get", "migrate"):
        assert command in helped.stdout


def test_demo_help_shows_defaults(capsys):
    from ld3_cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "(default: 5)" in out and "(default: builtin:unet-digits)" in out


def test_broken_pipe_ends_quietly():
    import subprocess
    import sys

    # `ld3 demo --help | head -1`: the reader closes early; no traceback on stderr
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys\nfrom ld3_cli.main import main\n"
                             "sys.stdout.write('x' * 10)\nsys.stdout.flush()\n"
                             "import ld3_cli.commands as c\n"
                             "c.cmd_status = lambda a: print('y' * 1000000) or 0\n"
                             "sys.exit(main(['status', 'j']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(30)
    assert "Traceback" not in err and proc.returncode == 141, err


def test_broken_pipe_at_the_final_flush_ends_quietly():
    # `ld3 get ... | head -1` where the reader is gone before the (buffered) answer is
    # flushed: the error shows at the flush, which must not print a traceback either
    child = (
        "import select, sys\n"
        "import ld3_cli.commands as c\n"
        "from ld3_cli.main import main\n"
        "def fake(args):\n"
        "    p = select.poll()\n"
        "    p.register(sys.stdout.fileno(), select.POLLERR)\n"
        "    assert p.poll(30000), 'the reader did not go away'\n"
        "    print('{\"timesteps\": [1.0, 0.5]}')\n"
        "    return 0\n"
        "c.cmd_get = fake\n"
        "sys.exit(main(['get', 'm', 'unipc', '3']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_help_piped_into_head(tmp_path):
    done = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m ld3_cli demo --help | head -1"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )
    assert done.stdout.startswith("usage: ld3 demo"), done.stdout
    assert done.stderr == "", done.stderr


def test_cli_modules_import_no_circle_and_not_main():
    import ast

    package = Path(__file__).resolve().parents[1] / "ld3_cli"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        name = f"ld3_cli.{path.stem}"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "ld3_cli":
                    found |= {f"ld3_cli.{a.name}" for a in node.names}
                elif node.module.startswith("ld3_cli."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("ld3_cli.")}
        graph[name] = found - {name}
    assert {m for m, deps in graph.items() if "ld3_cli.main" in deps} == {"ld3_cli.__main__"}

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        for dep in graph.get(module, ()):
            visit(dep, (*trail, module))

    for module in graph:
        visit(module, ())
