"""The ``ld3`` command-line interface (entry point :func:`ld3_cli.main.main`)."""
