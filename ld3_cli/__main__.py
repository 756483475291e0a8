"""``python -m ld3_cli``: the same as the ``ld3`` console script."""

import sys

from ld3_cli.main import main

sys.exit(main())
