"""The schema of bench/results.json: what `bench.run` summarises and `bench.report` renders.

Each headline figure is a typed field (None where that benchmark did not run or failed) and a
`Figure` beside it with its unit, configuration and the machine's load while it was measured;
`details` keeps every benchmark's raw output. `to_json()` writes the file's layout: unmeasured
figures are left out, not written as null.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 2
"""2: bytes per update measured by the learner's byte counters, keyed by gradient and weights
dtype, with KB per training frame beside them."""


@dataclass(kw_only=True)
class Figure:
    """One headline figure and what it was measured under (one entry per run of it)."""

    value: Any
    unit: str
    configuration: Any
    loadavg_1m: list[list[float]]
    """[start, end] of the 1-minute load average, per run."""
    machine_busy_cores: list[float]
    our_cores: list[float]
    extra: dict[str, Any] = field(default_factory=dict)
    """Figure-specific context (the runs behind a mean, the ceiling by wire, ...)."""

    @classmethod
    def measured(
        cls, value: Any, unit: str, configuration: Any, cpus: list[dict[str, Any]], **extra: Any
    ) -> Figure:
        """From the CpuWindow reports of the runs behind it."""
        return cls(
            value=value,
            unit=unit,
            configuration=configuration,
            loadavg_1m=[[cpu["loadavg_start"][0], cpu["loadavg_end"][0]] for cpu in cpus],
            machine_busy_cores=[cpu["machine_busy_cores"] for cpu in cpus],
            our_cores=[cpu["our_cores"] for cpu in cpus],
            extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}


@dataclass(kw_only=True)
class ScalingRow:
    """One phase of the learner ceiling: a sender count on one wire setting."""

    senders: int
    wire_dtype: str
    sync_interval: int
    weights_dtype: str
    updates_per_s: float
    learner_cores: float
    updates_per_learner_cpu_s: float | None
    sender_cores: float
    apply_ms_mean: float | None
    staleness_p50: float | None
    staleness_p99: float | None
    bytes_in_per_update: int | None
    bytes_out_per_update: int | None
    kb_per_frame: float | None
    loadavg_1m: float
    machine_busy_cores: float

    @classmethod
    def from_phase(cls, phase: dict[str, Any]) -> ScalingRow:
        """From a phase of bench.learner_ceiling's output."""
        derived = {"loadavg_1m", "machine_busy_cores", "bytes_in_per_update"}
        derived |= {"bytes_out_per_update", "kb_per_frame"}
        names = {f.name for f in fields(cls)} - derived
        sizes = phase["bytes_per_update"]
        return cls(
            **{name: phase[name] for name in names},
            bytes_in_per_update=sizes["in"],
            bytes_out_per_update=sizes["out"],
            kb_per_frame=sizes["kb_per_frame"],
            loadavg_1m=phase["cpu"]["loadavg_start"][0],
            machine_busy_cores=phase["cpu"]["machine_busy_cores"],
        )


@dataclass(kw_only=True)
class Results:
    """bench/results.json, field by field in file order."""

    schema: int = SCHEMA_VERSION
    created: str = ""
    command: str = ""
    quick: bool = False
    git: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    hogwild_frames_per_s: float | None = None
    """Mean of the Hogwild runs (before and after the system, when bracketed)."""
    system_frames_per_s: float | None = None
    staleness_p50: float | None = None
    staleness_p99: float | None = None
    worker_time_split: dict[str, float] | None = None
    """Share of the workers' wall time by phase."""
    ratio_vs_hogwild: float | None = None
    ratio_vs_hogwild_per_cpu: float | None = None
    batched_frames_per_s: dict[int, float] = field(default_factory=dict)
    """System frames/s by num_envs of the extra runs (`--also-num-envs`); written as
    `system_num_envs_<n>_frames_per_s`."""
    learner_max_updates_per_s: float | None = None
    learner_max_updates_per_s_at: dict[str, Any] | None = None
    learner_default_wire_max_updates_per_s: float | None = None
    learner_updates_per_cpu_s: float | None = None
    bytes_per_update: dict[str, int] | None = None
    """Measured bytes in + out of the learner per update, weights in every ack, by
    "<gradient dtype> gradients, <weights dtype> weights" (the learner ceiling)."""
    kb_per_frame: dict[str, float] | None = None
    """The same over the frames behind one update, in KB per training frame."""
    system_bytes_per_update: dict[str, Any] | None = None
    """In, out, broadcast and total bytes per update through the learner in the system run."""
    system_kb_per_frame: float | None = None
    learner_scaling: list[ScalingRow] | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """Each benchmark's raw output, by name (system, hogwild, learner_ceiling, ...)."""
    errors: dict[str, str] = field(default_factory=dict)
    wall_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batched_frames_per_s":
                for num_envs, frames in value.items():
                    data[batched_key(num_envs)] = frames
            elif f.name == "figures":
                data["figures"] = {name: figure.to_json() for name, figure in value.items()}
            elif f.name == "learner_scaling" and value is not None:
                data[f.name] = [asdict(row) for row in value]
            elif value is not None and not (f.name == "errors" and not value):
                data[f.name] = value
        return data


def batched_key(num_envs: int) -> str:
    """The name of an extra system run's figure, as in results.json."""
    return f"system_num_envs_{num_envs}_frames_per_s"
