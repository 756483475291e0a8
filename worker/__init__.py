"""Job execution: the pipeline (``run_job``), the Celery app and task, the dispatchers.

``worker.pipeline.run_job`` is the one function both the Celery task ``ld3.run_job`` and the
embedded in-process runner call. See docs/service.md ("Worker semantics").
"""
