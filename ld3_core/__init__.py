"""ld3_core: noise schedules, model wrappers, ODE solvers on arbitrary time vectors,
heuristic discretizations, LD3 and trust-region schedule optimization, and evaluation.

Importable without any server component.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # diffusers records a saved pipeline's scheduler as ("ld3_core", "LD3Scheduler") and
    # reloads it from here; imported lazily so ld3_core itself does not need diffusers.
    if name == "LD3Scheduler":
        from ld3_core.diffusers_scheduler import LD3Scheduler

        return LD3Scheduler
    raise AttributeError(f"module 'ld3_core' has no attribute {name!r}")
