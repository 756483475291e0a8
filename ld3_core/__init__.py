"""ld3_core: noise schedules, model wrappers, ODE solvers on arbitrary time vectors,
heuristic discretizations, LD3 and trust-region schedule optimization, and evaluation.

Importable without any server component.
"""

__version__ = "0.1.0"
