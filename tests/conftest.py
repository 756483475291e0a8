"""Test-suite setup: service variables of the developer's shell are cleared, and the shared
fixtures are loaded from tests/fixtures/ (one module per layer; see its package docstring)."""

from __future__ import annotations

import os

pytest_plugins = [  # a module before those that import it
    "fixtures.processes",
    "fixtures.registry",
    "fixtures.broker",
    "fixtures.compose",
    "fixtures.models",
]

# Service variables of the developer's shell must not leak into the tests.
for _name in ("LD3_DATABASE_URL", "LD3_BROKER_URL", "LD3_API_TOKEN", "LD3_ARTIFACTS_DIR",
              "LD3_HOME", "LD3_KEY_PREFIX"):
    os.environ.pop(_name, None)
