"""`make bench`: the distributed system against a Hogwild baseline and the learner's ceiling.

Benchmarks, not tests: they measure, they do not assert speed. See docs/benchmarks.md.
"""
