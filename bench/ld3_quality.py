"""LD3 quality benchmark: Frechet distance (digits features) of heuristics vs LD3 schedules.

For each model, solver and NFE it samples ``--samples`` images from the SAME prior draws
(seed ``--eval-seed``, never used for training) with every heuristic discretization and with
the LD3 schedules learned with xi^c (``LD3``), without xi^c (``LD3-noc``, a plain time vector)
and, with ``--variants ...,ld3-tr``, from the trust-region initialization (``LD3-TR``). Scores:

- FD vs teacher: Frechet distance in the feature space of the shipped digits classifier
  (``ld3_core.evaluation.get_extractor("digits")``) to the teacher's samples (the teacher
  solver of ``ld3_core.teacher``, 20-step UniPC-3 by default) from the same prior draws: the
  discretization error that LD3 is meant to remove.
- FD vs data: the same distance to the 1797 real scikit-learn digits (includes the model's own
  error, a floor no schedule can go below).

LD3 runs use the paper's defaults (50/50 teacher pairs, 2+5 epochs, L2 distance) unless
overridden; their states live in ``--out-dir`` (resumable; finished runs are reused).

Usage::

    OMP_NUM_THREADS=1 python bench/ld3_quality.py                      # the full table
    OMP_NUM_THREADS=1 python bench/ld3_quality.py --models builtin:gmm-digits --nfes 4 \\
        --solvers unipc:2 --samples 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ld3_core.heuristics import HEURISTICS, discretize
from ld3_core.models import load
from ld3_core.solvers import solve
from ld3_core.teacher import TeacherConfig, TeacherData, choose_discretization, generate

VARIANTS = {
    "ld3": {"decoupled": True, "init": "best_heuristic"},
    "ld3-noc": {"decoupled": False, "init": "best_heuristic"},
    "ld3-tr": {"decoupled": True, "init": "trust_region"},
}
LABELS = {"ld3": "LD3", "ld3-noc": "LD3-noc", "ld3-tr": "LD3-TR"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample(model: Any, timesteps: torch.Tensor, solver: str, order: int, n: int, seed: int,
           model_timesteps: torch.Tensor | None = None, batch: int = 500) -> torch.Tensor:
    """n images (decoded if the model has ``decode``) from prior draws fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    cond = model.sample_cond(n, gen)
    x_T = model.sample_prior(n, gen)
    outs = []
    with torch.no_grad():
        for i in range(0, n, batch):
            sl = slice(i, min(i + batch, n))
            cb = None if cond is None else {k: v[sl] for k, v in cond.items()}
            x = solve(model, x_T[sl], timesteps, solver, order, model_timesteps=model_timesteps,
                      cond=cb)
            outs.append(x if model.decode is None else model.decode(x))
    return torch.cat(outs)


class Scorer:
    """FD in digits features against the teacher samples and against the real digits."""

    def __init__(self, teacher_images: torch.Tensor) -> None:
        from ld3_core.data import load_digits
        from ld3_core.evaluation import feature_stats, get_extractor

        self.extractor = get_extractor("digits")
        self.ref = {
            "teacher": feature_stats(self.extractor(teacher_images)),
            "data": feature_stats(self.extractor(load_digits()[0])),
        }

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        from ld3_core.evaluation import feature_stats, frechet_distance

        mu, sigma = feature_stats(self.extractor(images))
        return {k: float(frechet_distance(mu, sigma, *ref)) for k, ref in self.ref.items()}


def run_model(model_id: str, args: argparse.Namespace, results: dict[str, Any]) -> None:
    model = load(model_id)
    tag = model_id.replace(":", "_")
    out = Path(args.out_dir) / tag
    tcfg = TeacherConfig().resolve(model)
    name, _ = choose_discretization(model, tcfg, 0, torch.device("cpu"))
    t0 = time.perf_counter()
    teacher_imgs = sample(model, discretize(name, tcfg.nfe, model.schedule), tcfg.solver,
                          tcfg.order, args.samples, args.eval_seed)
    scorer = Scorer(teacher_imgs)
    log(f"[{model_id}] teacher {tcfg.solver}-{tcfg.order} {tcfg.nfe} NFE {name}: "
        f"{time.perf_counter() - t0:.1f}s; FD(teacher, data) = "
        f"{scorer(teacher_imgs)['data']:.3f}")
    results.setdefault(model_id, {})["_teacher"] = {
        "solver": tcfg.solver, "order": tcfg.order, "nfe": tcfg.nfe, "discretization": name,
        "fd_vs_data": scorer(teacher_imgs)["data"],
    }
    n_pairs = args.n_train + args.n_val
    teacher_data: TeacherData = generate(model, n_pairs, tcfg, seed=0,
                                         path=out / "teacher.pt")
    for solver, order in args.solvers:
        for nfe in args.nfes:
            key = f"{solver}-{order}/NFE{nfe}"
            row: dict[str, Any] = results[model_id].setdefault(key, {})
            for h in HEURISTICS:
                imgs = sample(model, discretize(h, nfe, model.schedule), solver, order,
                              args.samples, args.eval_seed)
                row[h] = scorer(imgs)
            for variant in args.variants:
                t0 = time.perf_counter()
                res = learn_variant(model, solver, order, nfe, variant, teacher_data, args,
                                    out / f"{solver}{order}_nfe{nfe}_{variant}")
                took = time.perf_counter() - t0
                imgs = sample(model, res.timesteps, solver, order, args.samples,
                              args.eval_seed, model_timesteps=res.model_timesteps)
                row[variant] = {**scorer(imgs), "train_s": took, "val_loss": res.val_loss,
                                "init": res.config["init_name"],
                                "timesteps": [float(v) for v in res.timesteps]}
            best_h = min(HEURISTICS, key=lambda k: row[k]["teacher"])
            log(f"[{model_id}] {key}: best heuristic {best_h} "
                f"{row[best_h]['teacher']:.4f}; " + ", ".join(
                    f"{LABELS[v]} {row[v]['teacher']:.4f} ({row[v]['train_s']:.0f}s)"
                    for v in args.variants))
            save(results, args)


def learn_variant(model: Any, solver: str, order: int, nfe: int, variant: str,
                  teacher: TeacherData, args: argparse.Namespace, ckdir: Path) -> Any:
    from ld3_core.ld3 import learn

    spec = VARIANTS[variant]
    overrides = {"n_train": args.n_train, "n_val": args.n_val,
                 "epochs_phase1": args.epochs[0], "epochs_phase2": args.epochs[1]}
    return learn(model, solver, order, nfe, teacher=teacher, metric="l2",
                 decoupled=spec["decoupled"], init=spec["init"], seed=args.seed,
                 checkpoint_dir=ckdir, progress=lambda info: None, **overrides)


def save(results: dict[str, Any], args: argparse.Namespace) -> None:
    path = Path(args.out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True))


def print_tables(results: dict[str, Any], args: argparse.Namespace) -> None:
    variants = args.variants
    wanted = {f"{s}-{o}/NFE{n}" for s, o in args.solvers for n in args.nfes}
    for ref, title in (("teacher", "FD vs teacher samples"), ("data", "FD vs real digits")):
        print(f"\n{title} (digits features; lower is better)")
        cols = [*HEURISTICS, "best", *[LABELS[v] for v in variants], "LD3/best"]
        print(f"{'model':<20} {'solver':<8} {'NFE':>3} " + " ".join(f"{c:>9}" for c in cols))
        for model_id, rows in results.items():
            for key, row in rows.items():
                if key not in wanted or not all(h in row for h in HEURISTICS):
                    continue
                solver, nfe = key.split("/NFE")
                vals = [row[h][ref] for h in HEURISTICS]
                best = min(vals)
                lv = [row[v][ref] if v in row else float("nan") for v in variants]
                ratio = lv[0] / best if variants else float("nan")
                cells = [*vals, best, *lv, ratio]
                print(f"{model_id:<20} {solver:<8} {nfe:>3} "
                      + " ".join(f"{c:>9.4f}" for c in cells))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="builtin:unet-digits,builtin:gmm-digits")
    p.add_argument("--nfes", default="4,5,6,8")
    p.add_argument("--solvers", default="unipc:2,dpm++:2,euler:1",
                   help="comma-separated solver:order")
    p.add_argument("--variants", default="ld3,ld3-noc,ld3-tr")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--epochs", default="2,5", help="phase1,phase2")
    p.add_argument("--seed", type=int, default=0, help="LD3 seed")
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--out-dir", default="artifacts/ld3_quality")
    p.add_argument("--print-only", action="store_true", help="print the saved results")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.nfes = [int(v) for v in args.nfes.split(",")]
    args.solvers = [(s.split(":")[0], int(s.split(":")[1]) if ":" in s else 2)
                    for s in args.solvers.split(",")]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    args.epochs = [int(v) for v in args.epochs.split(",")]
    if len(args.epochs) != 2 or args.samples < 2:
        raise ValueError("--epochs needs two numbers and --samples >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.out_dir) / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if not args.print_only:
        print(f"samples={args.samples} n_train={args.n_train} n_val={args.n_val} "
              f"epochs={args.epochs} eval_seed={args.eval_seed} threads="
              f"{torch.get_num_threads()}")
        for model_id in args.models:
            run_model(model_id, args, results)
    print_tables({m: results[m] for m in args.models if m in results}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
