"""The evaluator service: `a3c evaluator` / `python -m services.evaluator`."""
