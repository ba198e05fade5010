"""The learner service: `a3c learner` / `python -m services.learner`."""
