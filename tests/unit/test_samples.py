"""Reading /metrics pages back: samples by name and labels, windows, histogram quantiles."""

from prometheus_client import CollectorRegistry, Counter, generate_latest

from common.samples import Samples, bucket_quantile, exposed_names, metric_names


def page(h_counts: dict[str, int], rejected: dict[str, int]) -> Samples:
    """A page with a histogram h (cumulative bucket counts given by bound) and a counter."""
    lines = ["# TYPE h histogram"]
    lines += [f'h_bucket{{le="{le}"}} {n}' for le, n in h_counts.items()]
    lines += [f"h_count {h_counts['+Inf']}", "h_sum 0", "# TYPE x counter"]
    lines += [f'x_total{{reason="{r}"}} {n}' for r, n in rejected.items()]
    return Samples.parse("\n".join(lines) + "\n")


def test_samples_are_found_by_name_and_labels():
    registry = CollectorRegistry()
    counter = Counter("a3c_things", "things", ["reason"], registry=registry)
    counter.labels(reason="a").inc(3)
    counter.labels(reason="b").inc(2)
    samples = Samples.parse(generate_latest(registry).decode())
    assert samples.get("a3c_things_total", reason="a") == 3
    assert samples.has("a3c_things_total", reason="b")
    assert not samples.has("a3c_things_total") and samples.get("a3c_things_total") == 0
    assert samples.total("a3c_things_total") == 5
    assert samples and not Samples()


def test_quantiles_come_from_the_window_only():
    before = page({"0.0": 10, "1.0": 10, "+Inf": 10}, {"a": 1})
    after = page({"0.0": 11, "1.0": 19, "+Inf": 20}, {"a": 4, "b": 2})
    window = after.delta(before)
    assert window.buckets("h") == [(0.0, 1), (1.0, 9), (float("inf"), 10)]
    assert window.quantile("h", 0.5) == 1.0
    assert window.quantile("h", 0.99) == float("inf")
    assert before.quantile("h", 0.5) == 0.0
    assert bucket_quantile([], 0.5) is None
    assert window.total("x_total") == 5 and window.get("x_total", reason="b") == 2
    assert window.mean("h") == 0.0 and Samples().mean("h") is None


def test_metric_names_in_queries_and_the_names_services_expose():
    assert metric_names("rate(a3c_learner_updates_total[1m]) / a3c_x2_y") == {
        "a3c_learner_updates_total",
        "a3c_x2_y",
    }
    names = exposed_names()
    assert {"a3c_learner_updates_total", "a3c_learner_gradient_staleness_bucket"} <= names
    assert "a3c_learner_gradients_rejected_total" in names
