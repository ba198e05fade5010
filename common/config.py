"""The one typed configuration of every service: defaults < `A3C_*` env vars < CLI flags.

All roles share one flat config, so a ConfigMap or a compose `.env` can set anything for any
role with `A3C_<FIELD>`; each command's flags are only the fields it reads (COMMAND_FIELDS),
so a flag that would change nothing is refused. Validation runs in one pass and reports every
invalid value at once, as a ConfigError that `services.cli` turns into exit code 2.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import UsageError

FRAME_SIZES = (42, 84)
"""Atari frame sizes the encoder is built for (common/envs.py resizes to one)."""

GradDtype = Literal["float32", "float16", "bfloat16"]
WeightsDtype = Literal["float32", "float16", "bfloat16"]
EvalPolicy = Literal["greedy", "sample"]
LogFormat = Literal["text", "json"]
RewardScale = Literal["return_std", "return_rms"]
OptimizerName = Literal["adam", "rmsprop"]
MemoryReset = Literal["game", "life"]


class ConfigError(UsageError):
    """Every invalid setting, one per line, ready to print."""


class Config(BaseSettings):
    """Settings of the learner, workers, evaluator and the local launcher."""

    model_config = SettingsConfigDict(
        env_prefix="A3C_",
        frozen=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    # --- Environment --------------------------------------------------------------------
    env: str = "ALE/Breakout-v5"
    """Gymnasium id: an `ALE/*` game (pixels, conv encoder) or a vector env such as CartPole-v1."""
    seed: int = Field(0, ge=0)
    """Base seed; each worker and env derives its own from it."""
    train_sticky_actions: float = Field(0.25, ge=0.0, le=1.0)
    """Atari repeat_action_probability while training; evaluation always uses 0.25, and so
    does training by default (Machado et al. 2018). Continuing a Breakout model trained with
    0, training with 0.25 raised its evaluation mean from ~14 to ~21 within 1.5M frames:
    a policy that never saw its paddle stick misses the ball when it does."""

    # --- Algorithm (worker side) ------------------------------------------------------------
    n_steps: int = Field(5, ge=1, le=1000)
    """Rollout length per update; the LSTM state is carried across rollouts. 5: with 16 envs,
    CartPole-v1 was solved by 500k frames on seeds 1 and 2 (500.0 and 500.0) where 20 steps
    left it at 324.6 and 367.7 (docs/learning.md)."""
    num_envs: int = Field(4, ge=1, le=256)
    """Environments per worker, stepped as one batch through the model; each keeps its own
    LSTM state, and the gradient is the loss averaged over them. 4 by default (with 5 steps:
    one gradient per 80 agent frames, as the classic batch-1 worker with 20 steps): on
    Breakout it learned more per frame than 16 envs on both training seeds (6.0 against 4.2
    at 5M frames; 10.5 at 10M; docs/learning.md), because it takes 4x the optimizer steps
    per frame. 16 plays about 2x the frames/s on the same cores (smaller batches cost more
    per frame), so choose 16 for throughput; 1 is the classic A3C worker."""
    frame_size: int = 42
    """Atari frames are resized to frame_size x frame_size: 42 (the classic A3C input) or 84
    (the DQN input; Breakout's 2-pixel ball keeps about twice its contrast, and the encoder's
    four stride-2 convolutions give 1,152 features instead of 288). Learner, workers and
    evaluator must agree; a model file remembers its own."""
    memory_reset: MemoryReset = "game"
    """When the LSTM's memory is zeroed: at the end of each game ("game": it spans all lives, and
    a lost life only ends the return), or also at every lost life ("life", as the life-loss
    episodes of DQN-style training do), in training and evaluation alike, so the evaluated
    policy runs on the memory states training produced. Learner, workers and evaluator must
    agree; a model file remembers its own."""
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0)
    """GAE lambda; 1.0 gives the classic n-step return advantage."""
    entropy_coef: float = Field(0.01, ge=0.0)
    value_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(50.0, gt=0.0)
    normalize_advantages: bool = False
    """Standardise advantages per rollout; off by default: over one env's 20 steps it is mostly
    noise (measured on CartPole: slower), with many envs per worker it can help."""
    normalize_rewards: bool = True
    """Vector envs: divide training rewards by a running statistic of the discounted return
    (reward_scale), so the critic's targets stay near unit scale. Atari rewards are clipped to
    [-1, 1] instead."""
    reward_scale: RewardScale = "return_std"
    """With normalize_rewards: divide by the running std of the discounted return
    (return_std, as Gymnasium's NormalizeReward), or by its root mean square, sqrt(mean^2 +
    var) (return_rms), which also scales a large constant part away. Under return_std a game
    of constant -1 rewards (Acrobot) leaves the critic a target of about -16, which Adam fits
    by saturating the LSTM: its cells then count steps, the output stops depending on the
    observation, and no gradient reaches the gates again (docs/learning.md)."""
    grad_dtype: GradDtype = "float16"
    """Gradient precision on the wire. float16 (loss-scaled per message, so small gradients do
    not flush to zero) halves the bytes of float32 (1.18 vs 2.35 MB for Breakout's model) and
    raises the learner's ceiling; the learner's weights and Adam stay float32."""
    sync_interval: int = Field(1, ge=1, le=1000)
    """A worker asks for fresh weights with every sync_interval-th gradient. 1 is the classic
    A3C (every rollout starts from the global model); more saves learner bandwidth (a 2.35 MB
    reply per update) at the cost of staleness."""
    max_inflight: int = Field(1, ge=1, le=16)
    """Gradients a worker may have unacknowledged; bounds its backlog and its staleness."""

    # --- Learner ------------------------------------------------------------------------
    lr: float = Field(3e-4, gt=0.0, lt=1.0)
    """Adam learning rate of the one shared optimizer. 3e-4 goes with the default 4 envs per
    gradient (less noisy than one env's; 1e-3 with 16 envs was no better at 2.5M frames);
    the classic batch-1 A3C used 1e-4."""
    optimizer: OptimizerName = "adam"
    """The learner's one shared optimizer: adam (betas 0.9/0.999), or rmsprop, the A3C
    paper's shared RMSProp (decay 0.99, no momentum). Both keep one set of statistics for
    every worker's gradients, as the paper's shared variant does."""
    optimizer_eps: float | None = Field(None, gt=0.0)
    """The optimizer's epsilon; None is the optimizer's usual one (adam 1e-8, rmsprop 0.1, the
    A3C paper's). With eps far below the gradients' typical size (about 6e-4 per parameter
    for Breakout's model), Adam turns even a vanishing gradient into a step of size lr."""
    host: str = "127.0.0.1"
    """Learner bind address; 0.0.0.0 inside containers."""
    port: int = Field(5555, ge=1, le=65534)
    """Learner gradient port (ROUTER); weights are published on port + 1 (PUB)."""
    checkpoint_dir: Path = Path("checkpoints")
    init_from: Path | None = None
    """With no checkpoint in checkpoint_dir yet: start from this model file's weights (fresh
    Adam). A checkpoint in checkpoint_dir always wins, so restarts resume, not restart."""
    checkpoint_interval: float = Field(60.0, gt=0.0)
    """Seconds between periodic checkpoints (one is also written on SIGTERM)."""
    keep_checkpoints: int = Field(3, ge=1)
    max_staleness: int = Field(64, ge=0)
    """Gradients computed on a model more than this many versions old are dropped."""
    publish_interval: float = Field(1.0, ge=0.0)
    """Minimum seconds between weight broadcasts to subscribers (evaluators)."""
    max_message_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    """Messages larger than this are refused by the socket and the decoder."""

    # --- Wire of the weights (learner side) ----------------------------------------------
    weights_dtype: WeightsDtype = "float32"
    """Precision of the weights the learner sends (welcome, acks, broadcast); its own weights
    and Adam stay float32, and workers and the evaluator decode whatever dtype arrives into
    their float32 model. float16 halves the bytes of every ack with weights (1.18 vs 2.35 MB
    for Breakout's model; weights are O(1), so no scaling is needed); bfloat16 keeps float32's
    range at 3 significant digits, and only peers of protocol 1.2 or later decode it. float32
    stays the default until the learning benchmark has measured the others."""

    # --- Worker / evaluator connection ---------------------------------------------------
    learner: str = "127.0.0.1:5555"
    """Learner address HOST:PORT as seen from workers and the evaluator."""
    worker_id: str = ""
    """Stable worker name; empty means hostname-pid (unique per container replica)."""
    learner_timeout: float = Field(10.0, gt=0.0)
    """Seconds a worker waits for the ack of one gradient while the learner otherwise answers
    (its heartbeats), then reconnects with backoff; a learner that answers nothing at all is
    given up on sooner, after 3 heartbeat intervals."""
    heartbeat_interval: float = Field(2.0, gt=0.0, le=3600.0)
    """A worker that has sent nothing for this many seconds sends a heartbeat, between env
    steps, so a long rollout is no silence; the learner answers it. Each side counts the other
    gone after 3 intervals without a word (HEARTBEAT_LIVENESS): the learner forgets the worker,
    the worker reconnects. The worker's hello tells the learner its interval, by which the
    learner then judges it; the learner's own is for peers that do not say."""

    # --- Evaluator ----------------------------------------------------------------------
    eval_window: int = Field(10, ge=1)
    """Score reported is the mean over the last this-many evaluation episodes."""
    eval_interval: float = Field(5.0, ge=0.0)
    """Seconds of rest between the end of one evaluation game and the next (CPU for workers)."""
    eval_policy: EvalPolicy = "sample"
    """sample (the stochastic policy A3C trains, the default) or greedy (argmax). Greedy play
    of an entropy-regularised policy is a policy nobody trained: once no ball is in play, a
    frame that does not change gives the same argmax forever, and a greedy Breakout agent
    that prefers to move over serving parks its paddle until the 108,000-frame cap
    (docs/learning.md)."""
    eval_log: Path | None = None
    """Append one JSON line per evaluation episode here (the run directory's eval.jsonl)."""
    best_model_path: Path | None = None
    """Where the evaluator keeps the best-scoring weights."""

    # --- Local embedded cluster (`a3c run`) ---------------------------------------------
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=512)
    """Worker processes `a3c run` starts; one per CPU core by default."""
    max_frames: int | None = Field(None, ge=1)
    duration: float | None = Field(None, gt=0.0)
    run_dir: Path | None = None
    """Run directory; default runs/<env>-<timestamp>."""
    target_score: float | None = None
    """Stop the run early once the evaluation mean reaches this."""
    progress_interval: float = Field(5.0, gt=0.0)
    run_evaluator: bool = True
    """`a3c run` starts an evaluator beside the workers. The learning benchmark turns it off
    and scores its frame marks afterwards, so training has both cores to itself."""

    # --- Watching it learn (the evaluator's page, TensorBoard) ---------------------------
    game_max_frames: int = Field(1024, ge=0, le=65536)
    """Most frames the evaluator keeps of a game, for /game/latest.gif and /game/best.gif
    (0 records none). A longer game is thinned to every 2nd, 4th, 8th step and so on, so the
    GIF spans the whole game. Frames are downsampled so no side exceeds 160 pixels (Breakout:
    80x105 RGB, 25,200 bytes): at 1024 the evaluator holds at most 64 MB for its games,
    encoding included (a3c_evaluator_game_bytes_bound, services/evaluator/gallery.py)."""
    page_links: str = ""
    """Links the evaluator's page shows, as space-separated NAME=URL pairs (e.g. the learner's
    and workers' /metrics, Prometheus, Grafana); `a3c run` fills it in."""
    tensorboard_dir: Path | None = None
    """Write TensorBoard scalars (losses, entropy, gradient norm, staleness, frames/s,
    updates/s, evaluation scores) under this directory; needs the `tensorboard` extra."""

    # --- Offline tools (`a3c evaluate`, `a3c record`) -------------------------------------
    checkpoint: Path | None = None
    episodes: int = Field(10, ge=1)
    out: Path | None = None

    # --- Operations ---------------------------------------------------------------------
    metrics_port: int = Field(9100, ge=0, le=65535)
    """Port for /metrics and /healthz; 0 disables the endpoint."""
    metrics_host: str = "127.0.0.1"
    """Bind address of the metrics endpoint; 0.0.0.0 inside containers."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: LogFormat = "text"
    """json writes one JSON object per line (containers)."""
    auth_key: SecretStr | None = None
    """Shared key: every message is HMAC-signed and unsigned ones are refused."""
    auth_key_file: Path | None = None
    """File holding the shared key (Kubernetes Secret / compose secret mount)."""
    curve_key_file: Path | None = None
    """This service's CurveZMQ certificate with its secret key (NAME.key_secret, made by
    `a3c keys`). Set, every connection to the learner is encrypted and authenticated: the
    learner admits only the clients in curve_clients_dir, so a peer without an admitted key can
    neither push gradients nor read the weight broadcast (signing alone lets anyone who
    connects read the weights). Workers and the evaluator also need curve_server_key_file."""
    curve_server_key_file: Path | None = None
    """Workers and the evaluator with CURVE: the learner's public certificate (learner.key)."""
    curve_clients_dir: Path | None = None
    """The learner with CURVE: the directory of the public certificates (*.key) it admits;
    read again when it changes, so adding or removing a file admits or revokes a client
    without a restart."""

    @field_validator("frame_size")
    @classmethod
    def _check_frame_size(cls, value: int) -> int:
        if value not in FRAME_SIZES:
            raise ValueError(f"must be one of {FRAME_SIZES}")
        return value

    @field_validator("learner")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("auth_key_file", "curve_key_file", "curve_server_key_file")
    @classmethod
    def _check_key_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("curve_clients_dir")
    @classmethod
    def _check_clients_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @property
    def training_reward_scale(self) -> RewardScale | None:
        """How the workers' vector envs scale rewards (None: not at all)."""
        return self.reward_scale if self.normalize_rewards else None

    @property
    def resolved_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    def shared_key(self) -> bytes | None:
        """The signing key from `auth_key` or `auth_key_file`, or None when signing is off."""
        if self.auth_key is not None and self.auth_key.get_secret_value():
            return self.auth_key.get_secret_value().encode()
        if self.auth_key_file is not None:
            return self.auth_key_file.read_bytes().strip() or None
        return None

    def to_public_dict(self) -> dict[str, Any]:
        """JSON-able settings without secrets, for config.json and checkpoints."""
        data = self.model_dump(mode="json", exclude={"auth_key"})
        data["auth_key_set"] = self.auth_key is not None
        return data

    def to_cli_args(self, command: str, **overrides: Any) -> list[str]:
        """Flags that reproduce this config (plus overrides) for `a3c <command>` in a child
        process: only the command's own fields; overrides it does not read are left out."""
        fields = set(COMMAND_FIELDS[command]) - {"auth_key"}
        return to_cli_args(command, **{**self.model_dump(include=fields), **overrides})


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SERVICE = _names(
    "max_message_bytes auth_key auth_key_file curve_key_file log_level log_format"
    " metrics_host metrics_port"
)
"""What every service reads: its sessions' limits and key, and `start_service`'s settings."""
_LEARNER = _names(
    "env frame_size memory_reset lr optimizer optimizer_eps host port checkpoint_dir init_from"
    " checkpoint_interval keep_checkpoints"
    " max_staleness publish_interval heartbeat_interval weights_dtype curve_clients_dir"
)
_WORKER = _names(
    "env frame_size memory_reset seed train_sticky_actions n_steps num_envs gamma gae_lambda"
    " entropy_coef value_coef max_grad_norm normalize_advantages normalize_rewards reward_scale"
    " grad_dtype sync_interval max_inflight learner worker_id learner_timeout heartbeat_interval"
    " curve_server_key_file"
)
_EVALUATOR = _names(
    "env frame_size memory_reset seed learner worker_id eval_window eval_interval eval_policy"
    " eval_log best_model_path curve_server_key_file"
)
_WATCH = _names("game_max_frames page_links tensorboard_dir")
"""The evaluator's page and TensorBoard scalars; `a3c run` also writes the learner's."""
SET_BY_LAUNCHER = frozenset(
    _names(
        "host port learner metrics_host metrics_port log_format"
        " checkpoint_dir worker_id eval_log best_model_path page_links"
    )
)
"""What `a3c run` sets itself for its children (loopback addresses, free ports, the run
directory's paths), so `a3c run` has no flag for them."""
CLUSTER_ONLY = frozenset(_names("curve_key_file curve_server_key_file curve_clients_dir"))
"""Settings that differ per role (each service has its own CURVE certificate), so the one
set of flags `a3c run` hands all its children cannot carry them; its children talk over
loopback, where CURVE protects nothing."""
_LAUNCHER = _names(
    "workers max_frames duration run_dir target_score progress_interval run_evaluator"
)
_PLAY = _names("checkpoint env seed eval_policy out log_level log_format")

COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "run": tuple(
        dict.fromkeys(
            name
            for name in (*_LAUNCHER, *_LEARNER, *_WORKER, *_EVALUATOR, *_WATCH, *_SERVICE)
            if name not in SET_BY_LAUNCHER | CLUSTER_ONLY
        )
    ),
    "learner": (*_LEARNER, "tensorboard_dir", *_SERVICE),
    "worker": _WORKER + _SERVICE,
    "evaluator": _EVALUATOR + _WATCH + _SERVICE,
    "evaluate": (*_PLAY, "episodes"),
    "record": _PLAY,
    "plot": ("run_dir", "out", "eval_window"),
    "export": ("checkpoint", "out"),
    "keys": ("out",),
}
"""The fields each command reads, and so its flags. A3C_* env vars are read for every field
by every command (one ConfigMap serves all roles); a flag is accepted only where it acts."""


def to_cli_args(command: str, **values: Any) -> list[str]:
    """Flags for `a3c <command>` that set exactly these values: those the command does not
    read are left out (one dict of wiring serves every role), None means unset, and the key
    is never put on a command line (children get it as A3C_AUTH_KEY)."""
    unknown = set(values) - set(Config.model_fields)
    if unknown:
        raise ValueError(f"not settings: {sorted(unknown)}")
    fields = set(COMMAND_FIELDS[command]) - {"auth_key"}
    args: list[str] = []
    for name, value in values.items():
        if value is None or name not in fields:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def split_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port), with a message that says what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not HOST:PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65534:
        raise ValueError(f"{address!r} has no valid port (1-65534; the next port is used too)")
    return host, int(port)


def load_config(cli_values: dict[str, Any] | None = None) -> Config:
    """Build the config from defaults, `A3C_*` env vars and CLI values (highest precedence).

    Raises ConfigError listing every invalid value."""
    try:
        return Config(**(cli_values or {}))
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "config"
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
