"""`.env.example` is generated from the config (deploy/env_example.py), not kept by hand."""

import importlib.util
import re

from common.config import Config
from tests.conftest import REPO


def load_generator():
    spec = importlib.util.spec_from_file_location("env_example", REPO / "deploy/env_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_example_is_what_the_generator_writes():
    generator = load_generator()
    assert (REPO / ".env.example").read_text() == generator.render(), "run `make env-example`"


def test_its_settings_are_real_and_restate_the_defaults():
    text = (REPO / ".env.example").read_text()
    lines = dict(re.findall(r"^#?\s*A3C_(\w+)=(.*)$", text, re.M))
    assert "N_STEPS" in lines and "AUTH_KEY" in lines
    assert all(name.lower() in Config.model_fields for name in lines)
    given = {k.lower(): v for k, v in lines.items() if v and k != "AUTH_KEY"}
    restated, defaults = Config(**given), Config()
    assert {k: getattr(restated, k) for k in given} == {k: getattr(defaults, k) for k in given}


def test_settings_compose_fixes_are_left_out():
    generator = load_generator()
    fixed = generator.fixed_by_compose()
    assert {"host", "port", "learner", "checkpoint_dir", "log_format"} <= fixed
    assert not any(f"A3C_{name.upper()}=" in generator.render() for name in fixed)
