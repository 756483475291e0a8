"""Per-job reports: JSON of every candidate schedule with its score, a sample grid, an FD plot.

:func:`write_report` writes into a caller-given folder

- ``report.json``: model, solver, order, NFEs, and for every NFE every candidate schedule
  (the heuristics, the trust-region result, LD3 if present, anything else given) with its
  times, its kind, its FD score and the feature extractor's name, plus the best candidate;
- ``grid.png``: samples from the same x_T (same seed), one row per candidate, at one NFE;
- ``fd_vs_nfe.png``: FD against NFE, one line per candidate name (matplotlib, Agg backend);

and returns the JSON dict (with the written paths under ``report_json``, ``grid``,
``fd_vs_nfe``). Candidates without an ``fd`` are scored when a ``reference`` is given.

:func:`candidate_schedules` builds the usual candidates (heuristics + trust region) and
:func:`score_schedules` scores candidates at several NFEs cheaply (small n by default).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ld3_core.evaluation.grid import save_figure
from ld3_core.heuristics import NAMES, all_heuristics

REPORT_JSON = "report.json"
GRID_PNG = "grid.png"
FD_PLOT_PNG = "fd_vs_nfe.png"
SCHEDULE_PNG = "schedule.png"
REFERENCE_SEED_OFFSET = 1_000_003
TEACHER = {"solver": "unipc", "order": 3, "nfe": 50, "discretization": "logsnr"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _times(value: Any, what: str) -> list[float]:
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"{what} must be a 1-D list of at least 2 times")
    return [float(v) for v in t]


def schedule_kind(name: str) -> str:
    """Kind of a candidate by its name: "heuristic", "trust_region", "ld3" or "other"."""
    if name in NAMES:
        return "heuristic"
    if name in ("trust_region", "ld3"):
        return name
    return "other"


def _normalize(
    nfes: Sequence[int], schedules_by_nfe: Mapping[int, Mapping[str, Any]]
) -> dict[int, dict[str, dict[str, Any]]]:
    """Validate and copy the candidates into plain JSON-able dicts."""
    if not isinstance(nfes, Sequence) or isinstance(nfes, str) or not nfes:
        raise ValueError("nfes must be a non-empty list of positive integers")
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for nfe in nfes:
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
            raise ValueError(f"nfes must be positive integers, got {nfe!r}")
        entries = schedules_by_nfe.get(nfe, schedules_by_nfe.get(str(nfe)))  # type: ignore[call-overload]
        if not entries:
            raise ValueError(f"no schedules given for NFE {nfe}")
        table: dict[str, dict[str, Any]] = {}
        for name, entry in entries.items():
            if isinstance(entry, Tensor | list | tuple):
                entry = {"timesteps": entry}
            if not isinstance(entry, Mapping) or "timesteps" not in entry:
                raise ValueError(f"schedule {name!r} (NFE {nfe}) needs 'timesteps'")
            ts = _times(entry["timesteps"], f"timesteps of {name!r}")
            if len(ts) != nfe + 1:
                raise ValueError(f"schedule {name!r} has {len(ts) - 1} steps, expected NFE {nfe}")
            item: dict[str, Any] = {
                k: v for k, v in entry.items() if k not in ("timesteps", "model_timesteps")
            }
            item["timesteps"] = ts
            mts = entry.get("model_timesteps")
            item["model_timesteps"] = None if mts is None else _times(mts, "model_timesteps")
            item["kind"] = str(entry.get("kind") or schedule_kind(str(name)))
            item["fd"] = _float_or_none(entry.get("fd"))
            item.setdefault("extractor", None)
            table[str(name)] = item
        out[nfe] = table
    return out


def _as_images(x: Tensor) -> Tensor:
    """Samples as (B, C, H, W) for a grid: vectors become 1-pixel-high strips."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], 1, 1, -1)


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def _sanitize(value: Any) -> Any:
    """Replace non-finite floats by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# candidates and scores
# --------------------------------------------------------------------------------------------
def candidate_schedules(
    schedule: Any,
    nfe: int,
    solver: str = "unipc",
    order: int = 2,
    *,
    p: float = 1.0,
    trust_region: bool = True,
    extra: Mapping[str, Any] | None = None,
    **tr_options: Any,
) -> dict[str, dict[str, Any]]:
    """Candidates for one NFE: every heuristic, the trust-region result (``trust_region``;
    ``p`` and ``tr_options`` go to :func:`ld3_core.trust_region.optimize`) and ``extra``
    ({name: timesteps or entry dict}, e.g. an LD3 result). Returns {name: {"timesteps": list}}.
    """
    out: dict[str, dict[str, Any]] = {
        name: {"timesteps": ts.tolist()} for name, ts in all_heuristics(nfe, schedule).items()
    }
    if trust_region:
        from ld3_core.trust_region import optimize

        ts = optimize(schedule, nfe, solver, order, p=p, **tr_options)
        out["trust_region"] = {"timesteps": ts.tolist()}
    for name, entry in (extra or {}).items():
        out[name] = dict(entry) if isinstance(entry, Mapping) else {"timesteps": entry}
    return out


def reference_samples(model: Any, n: int, seed: int = 0, batch_size: int = 256) -> Tensor:
    """Reference for FD scores when none is given: ``n`` samples of the model itself, solved
    accurately (UniPC order 3, 50 logSNR steps) from x_T of another seed (``seed`` +
    1000003). Returns pixels (decoded for latent models), as :func:`ld3_core.evaluation.sample`.
    """
    from ld3_core.evaluation import sample
    from ld3_core.heuristics import discretize

    ts = discretize(TEACHER["discretization"], TEACHER["nfe"], model.schedule)
    return sample(
        model, ts, TEACHER["solver"], TEACHER["order"], n, seed=seed + REFERENCE_SEED_OFFSET,
        batch_size=batch_size,
    )


def score_schedules(
    model: Any,
    solver: str,
    order: int,
    schedules_by_nfe: Mapping[int, Mapping[str, Any]],
    *,
    n: int = 64,
    seed: int = 0,
    extractor: Any = None,
    reference: Any = None,
    batch_size: int = 256,
) -> dict[int, dict[str, dict[str, Any]]]:
    """FD score of every candidate at every NFE, cheaply (``n`` samples each, default 64).

    schedules_by_nfe: {nfe: {name: {"timesteps": ..., "model_timesteps": optional}}} (or
    {name: timesteps}); extractor: a name/instance (default
    ``evaluation.default_extractor_for(model)``); reference: images, a pytorch-fid .npz path or
    (mu, sigma) (default :func:`reference_samples` with n samples). All candidates use the same
    x_T (``seed``). Returns the same structure with ``fd``, ``extractor`` and ``n`` filled in.
    Small n gives a biased FD: compare candidates scored with the same n only.
    """
    from ld3_core import evaluation

    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    nfes = sorted(int(k) for k in schedules_by_nfe)
    table = _normalize(nfes, schedules_by_nfe)
    ext = evaluation.get_extractor(extractor or evaluation.default_extractor_for(model))
    if reference is None:
        reference = reference_samples(model, n, seed, batch_size)
    mu, sigma, _ = evaluation.reference_stats(reference, ext)
    for entries in table.values():
        for entry in entries.values():
            mts = entry.get("model_timesteps")
            samples = evaluation.sample(
                model, torch.tensor(entry["timesteps"], dtype=torch.float64), solver, order, n,
                seed=seed, batch_size=batch_size,
                model_timesteps=None if mts is None else torch.tensor(mts, dtype=torch.float64),
            )
            res = evaluation.score_samples(samples, (mu, sigma), ext)
            entry.update(fd=_float_or_none(res["fd"]), extractor=res["extractor"], n=int(res["n"]))
    return table


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def plot_fd_vs_nfe(
    table: Mapping[int, Mapping[str, Mapping[str, Any]]], path: str | Path, title: str = ""
) -> Path:
    """Write a PNG of FD against NFE, one line per candidate name (missing scores skipped)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names: list[str] = []
    for entries in table.values():
        names += [n for n in entries if n not in names]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    extractors = set()
    plotted = False
    for name in names:
        xs, ys = [], []
        for nfe in sorted(table):
            entry = table[nfe].get(name)
            if entry is not None and entry.get("fd") is not None:
                xs.append(nfe)
                ys.append(float(entry["fd"]))
                if entry.get("extractor"):
                    extractors.add(str(entry["extractor"]))
        if xs:
            heuristic = schedule_kind(name) == "heuristic"
            ax.plot(
                xs, ys, "--" if heuristic else "-", marker="o", label=name,
                linewidth=1.0 if heuristic else 2.2,
            )
            plotted = True
    if plotted:
        fds = [e["fd"] for entries in table.values() for e in entries.values() if e["fd"]]
        if fds and min(fds) > 0 and max(fds) / min(fds) > 20:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"FD ({', '.join(sorted(extractors)) or 'no extractor'})")
    ax.set_xticks(sorted(table))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _grid(
    model: Any, solver: str, order: int, nfe: int, entries: Mapping[str, Mapping[str, Any]],
    path: Path, n: int, seed: int, title: str,
) -> Path:
    from ld3_core import evaluation

    rows: dict[str, Tensor] = {}
    for name, entry in entries.items():
        mts = entry.get("model_timesteps")
        x = evaluation.sample(
            model, torch.tensor(entry["timesteps"], dtype=torch.float64), solver, order, n,
            seed=seed, model_timesteps=None if mts is None else torch.tensor(mts).double(),
        )
        fd = entry.get("fd")
        label = name if fd is None else f"{name}\nFD {fd:.3g}"
        rows[label] = _as_images(x)
    return evaluation.save_grid(rows, path, title=title)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def write_report(
    out_dir: str | Path,
    model: Any,
    solver: str,
    order: int,
    nfes: Sequence[int],
    schedules_by_nfe: Mapping[int, Mapping[str, Any]],
    *,
    seed: int = 0,
    reference: Any = None,
    extractor: Any = None,
    n_score: int = 64,
    grid_nfe: int | None = None,
    n_grid: int = 8,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json, grid.png and fd_vs_nfe.png into ``out_dir``; return the JSON dict.

    Args:
        out_dir: folder to write into (created if missing).
        model: the :class:`~ld3_core.models.DiffusionModel` the schedules are for.
        solver, order: the sampler the schedules were made for (also used for the grid).
        nfes: the NFEs to report, e.g. ``[6]`` for one job.
        schedules_by_nfe: {nfe: {name: entry}}; an entry is a dict with ``timesteps`` ((nfe+1,)
            decreasing t, list or tensor) and optionally ``model_timesteps`` (LD3's decoupled
            times), ``fd``, ``extractor``, ``n``, ``kind`` and any other JSON-able fields (kept
            as is); a bare list/tensor means ``{"timesteps": it}``. Names: the heuristics
            (``ld3_core.heuristics.NAMES``), "trust_region", "ld3", or anything else.
        seed: seed of the grid's x_T (every row starts from the same x_T) and of scoring.
        reference, extractor, n_score: when given a ``reference`` (images, .npz path or (mu,
            sigma)), entries without ``fd`` are scored with :func:`score_schedules` (``n_score``
            samples, ``extractor`` or the model's default). Without a reference such entries
            keep ``fd: null``.
        grid_nfe: the NFE whose candidates form the grid (default: the smallest of ``nfes``).
        n_grid: samples per grid row.
        title: figure title (default "<model> <solver>-<order>").
        extra: more JSON-able fields for the report (e.g. job id, options).

    Returns the report dict: ``model``, ``solver``, ``order``, ``nfes``, ``seed``,
    ``schedule`` (the noise schedule's name), ``results`` {str(nfe): {name: entry}}, ``best``
    {str(nfe): name of the lowest FD or None}, ``extractors`` (names used), and the paths
    ``report_json``, ``grid``, ``fd_vs_nfe`` (str). Raises ``ValueError`` on bad input.
    """
    if not isinstance(solver, str) or not solver:
        raise ValueError("solver must be a non-empty string")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 1:
        raise ValueError(f"n_grid must be a positive integer, got {n_grid!r}")
    table = _normalize(nfes, schedules_by_nfe)
    if grid_nfe is None:
        grid_nfe = min(table)
    if grid_nfe not in table:
        raise ValueError(f"grid_nfe {grid_nfe} is not one of the NFEs {sorted(table)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if reference is not None:
        missing = {
            nfe: {name: e for name, e in entries.items() if e.get("fd") is None}
            for nfe, entries in table.items()
        }
        missing = {nfe: entries for nfe, entries in missing.items() if entries}
        if missing:
            scored = score_schedules(
                model, solver, order, missing, n=n_score, seed=seed, extractor=extractor,
                reference=reference,
            )
            for nfe, entries in scored.items():
                for name, entry in entries.items():
                    table[nfe][name].update(
                        fd=entry["fd"], extractor=entry["extractor"], n=entry["n"]
                    )

    name = str(getattr(model, "name", type(model).__name__))
    title = title or f"{name} {solver}-{order}"
    best: dict[str, str | None] = {}
    for nfe, entries in table.items():
        scored_names = [k for k, e in entries.items() if e.get("fd") is not None]
        best[str(nfe)] = min(scored_names, key=lambda k: entries[k]["fd"]) if scored_names else None
    schedule = getattr(model, "schedule", None)
    report: dict[str, Any] = {
        "model": name,
        "solver": solver,
        "order": order,
        "nfes": sorted(table),
        "seed": int(seed),
        "schedule": getattr(schedule, "name", None),
        "results": {str(nfe): entries for nfe, entries in sorted(table.items())},
        "best": best,
        "extractors": sorted(
            {str(e["extractor"]) for en in table.values() for e in en.values() if e["extractor"]}
        ),
        "grid_nfe": grid_nfe,
    }
    if extra:
        report["extra"] = dict(extra)

    grid_path = _grid(
        model, solver, order, grid_nfe, table[grid_nfe], out / GRID_PNG, n_grid, seed,
        f"{title}, NFE {grid_nfe}",
    )
    plot_path = plot_fd_vs_nfe(table, out / FD_PLOT_PNG, title)
    json_path = out / REPORT_JSON
    report.update(report_json=str(json_path), grid=str(grid_path), fd_vs_nfe=str(plot_path))
    report = _sanitize(json.loads(json.dumps(report, default=_json_default)))
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False))
    return report


# --------------------------------------------------------------------------------------------
# the report of one optimize_schedule job
# --------------------------------------------------------------------------------------------
def plot_job_fd(outcome: Any, path: str | Path, title: str = "") -> Path:
    """FD (with its 95 % interval) against NFE: a point per scored NFE for every heuristic
    and the trust region, and the job's candidates at its own NFE (the winner starred)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nfe = int(outcome.details["nfe"])
    by_nfe: dict[int, dict[str, dict[str, Any]]] = {nfe: dict(outcome.scores)}
    for key, entries in (outcome.details.get("other_nfes") or {}).items():
        by_nfe[int(key)] = dict(entries)
    names: list[str] = []
    for entries in by_nfe.values():
        names += [n for n in entries if n not in names]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in names:
        xs, ys, lo, hi = [], [], [], []
        for n in sorted(by_nfe):
            e = by_nfe[n].get(name)
            if e is None or e.get("fd") is None:
                continue
            xs.append(n)
            ys.append(float(e["fd"]))
            ci = e.get("fd_ci") or [e["fd"], e["fd"]]
            lo.append(max(0.0, float(e["fd"]) - float(ci[0])))
            hi.append(max(0.0, float(ci[1]) - float(e["fd"])))
        if not xs:
            continue
        heuristic = name in NAMES
        label = f"{name} *published*" if name == outcome.winner else name
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="--o" if heuristic else "-s", capsize=3,
                    label=label, linewidth=1.0 if heuristic else 2.0, markersize=5)
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"FD to teacher ({outcome.details.get('extractor', '?')} features)")
    ax.set_xticks(sorted(by_nfe))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fds = [float(e["fd"]) for en in by_nfe.values() for e in en.values() if e.get("fd")]
    if fds and min(fds) > 0 and max(fds) / min(fds) > 20:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_job_schedules(outcome: Any, path: str | Path, title: str = "") -> Path:
    """Write a PNG of the time steps t_i against the step i of the job's candidates: the
    published one (the winner) bold red, the best heuristic dashed blue, every other
    candidate thin, on a log t axis (the small times are where schedules differ). Returns
    ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    winner, best = outcome.winner, outcome.best_heuristic
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    others = [n for n in outcome.scores if n not in (winner, best)]
    colors = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
              "tab:cyan", "tab:gray")
    for i, name in enumerate(others):
        ts = outcome.scores[name].get("timesteps")
        if ts:
            ax.plot(range(len(ts)), ts, "-", marker=".", color=colors[i % len(colors)],
                    linewidth=0.9, markersize=4, alpha=0.75, label=name)
    if best in outcome.scores and best != winner:
        ts = outcome.scores[best]["timesteps"]
        ax.plot(range(len(ts)), ts, "--o", color="tab:blue", linewidth=1.6, markersize=4,
                label=f"{best} (best heuristic)")
    ts = [float(v) for v in outcome.timesteps]
    role = "published, best heuristic" if winner == best else "published"
    ax.plot(range(len(ts)), ts, "-s", color="tab:red", linewidth=2.4, markersize=5,
            label=f"{winner} ({role})")
    if all(float(v) > 0 for v in ts):
        ax.set_yscale("log")
    ax.set_xlabel("step i")
    ax.set_ylabel("time t_i")
    ax.set_xticks(range(len(ts)))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def write_job_report(
    out_dir: str | Path, outcome: Any, *, title: str = "", extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Write ``report.json`` (the outcome: winner, every candidate's FD with its interval,
    the gain, the noise floor, the splits), ``grid.png`` (held-out samples: the teacher row
    first, then one row per candidate), ``fd_vs_nfe.png`` and ``schedule.png`` (the time
    steps of the winner, the best heuristic and the others) into ``out_dir``.

    ``outcome``: an :class:`ld3_core.optimize.Outcome`; ``extra``: more JSON-able fields.
    Returns ``{"report_json", "grid", "fd_vs_nfe", "schedule"}`` -> the file names written
    (relative to ``out_dir``, so no server path leaks into what is served).
    """
    from ld3_core.evaluation import save_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Tensor] = {}
    if "teacher" in outcome.samples:
        rows["teacher"] = _as_images(outcome.samples["teacher"])
    order = sorted(outcome.scores, key=lambda k: outcome.scores[k]["fd"])
    for name in order:
        if name in outcome.samples:
            e = outcome.scores[name]
            star = "\n(published)" if name == outcome.winner else ""
            rows[f"{name}{star}\nFD {e['fd']:.3g}"] = _as_images(outcome.samples[name])
    save_grid(rows, out / GRID_PNG, title=f"{title}, NFE {outcome.details['nfe']}")
    plot_job_fd(outcome, out / FD_PLOT_PNG, title)
    plot_job_schedules(outcome, out / SCHEDULE_PNG, f"{title}, NFE {outcome.details['nfe']}")
    report = {**outcome.to_dict(), "summary": outcome.summary(), "title": title,
              "extra": dict(extra or {})}
    report = _sanitize(json.loads(json.dumps(report, default=_json_default)))
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2, allow_nan=False))
    return {"report_json": REPORT_JSON, "grid": GRID_PNG, "fd_vs_nfe": FD_PLOT_PNG,
            "schedule": SCHEDULE_PNG}
