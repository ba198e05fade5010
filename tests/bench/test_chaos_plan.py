"""The pure parts of `make chaos` (bench/chaos.py): the time-scaled alert rules, the fault
schedule and the report. The run itself needs Docker: tests/deploy/test_chaos.py."""

import random

import yaml

from bench.chaos import (
    ALERT_RULES,
    LEARNER_KINDS,
    PEER_KINDS,
    Fault,
    Invariants,
    lane_schedule,
    scale_rules,
    summarise,
)


def rules_by_name(text: str) -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_scaled_rules_keep_every_expression_and_divide_every_window():
    original = rules_by_name(ALERT_RULES.read_text())
    scaled = rules_by_name(scale_rules(ALERT_RULES.read_text(), 20))
    assert scaled.keys() == original.keys()
    assert scaled["A3CLearnerDown"]["for"] == "6s"  # 2m / 20
    assert "[30s]" in scaled["A3CNoUpdates"]["expr"]  # [10m] / 20
    assert "[180s]" in scaled["A3CWorkersLost"]["expr"]  # [1h] / 20
    assert "[45s]" in scaled["A3CCheckpointsStalled"]["expr"]  # [15m] / 20
    for name, rule in original.items():
        assert scaled[name]["labels"] == rule["labels"]
        assert "m]" not in scaled[name]["expr"] and "h]" not in scaled[name]["expr"]


def test_scaled_windows_stay_long_enough_for_rate():
    scaled = rules_by_name(scale_rules(ALERT_RULES.read_text(), 1000))
    assert "[15s]" in scaled["A3CNoUpdates"]["expr"]
    assert scaled["A3CLearnerDown"]["for"] == "1s"


def test_each_lane_comes_back_to_every_kind_of_fault():
    for kinds in (LEARNER_KINDS, PEER_KINDS):
        schedule = lane_schedule(kinds, random.Random(3))
        first_rounds = [next(schedule) for _ in range(2 * len(kinds))]
        assert sorted(first_rounds[: len(kinds)]) == sorted(kinds)
        assert sorted(first_rounds[len(kinds) :]) == sorted(kinds)
    again = lane_schedule(PEER_KINDS, random.Random(3))
    assert [next(again) for _ in range(6)] == [
        next(s) for s in [lane_schedule(PEER_KINDS, random.Random(3))] for _ in range(6)
    ]


def test_the_report_counts_faults_recoveries_losses_and_failed_invariants():
    faults = [
        Fault("worker_kill", "w1", 0.0, 1.0, 20.0),
        Fault("worker_kill", "w2", 30.0, 31.0, 40.0),
        Fault("learner_kill", "l", 50.0, 50.5, 10.0, {"updates_lost": 12.0, "frames_lost": 960}),
        Fault("disk_full", "v", 60.0, 135.0, None),
    ]
    invariants = Invariants()
    invariants.check("recovered_within_limit", True, "")
    invariants.check("recovered_within_limit", False, "disk_full not healed")
    report = summarise(faults, invariants, {}, {"exits": 3}, {"seed": 1})
    assert report["faults_injected"] == 4 and report["fault_kinds"] == 3
    assert report["faults_recovered"] == 3
    assert report["by_kind"]["worker_kill"] == {
        "injected": 2, "recovered": 2, "recover_s_p50": 20.0, "recover_s_max": 40.0,
    }  # fmt: skip
    assert report["learner_kills"]["updates_lost_max"] == 12.0
    assert report["learner_kills"]["frames_lost_mean"] == 960
    assert report["invariants"]["recovered_within_limit"] == {"passed": 1, "failed": 1}
    assert report["all_invariants_held"] is False
    assert report["invariant_failures"] == ["recovered_within_limit: disk_full not healed"]
