"""Learner pieces that need no sockets."""

from services.learner import learner as learner_module


def test_rejection_logs_are_rate_limited_but_say_what_they_held_back(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(learner_module.time, "monotonic", lambda: clock[0])
    limiter = learner_module.LogLimiter(per_minute=2)
    assert [limiter.allow("decode") for _ in range(5)] == [0, 0, None, None, None]
    assert limiter.allow("shape") == 0
    clock[0] = 61.0
    assert limiter.allow("decode") == 3
