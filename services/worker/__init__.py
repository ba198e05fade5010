"""The worker service: `a3c worker` / `python -m services.worker`."""
