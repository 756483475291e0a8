"""API routers: health, jobs (+ reports), schedules, models."""
