"""The demo experiment: ``configs/demo.toml``, optionally switched to known CounterFact facts."""

from __future__ import annotations

from pathlib import Path

from locedit.experiment.config import ConfigError, DataConfig, ExperimentConfig, load_config


def demo_config_path() -> Path:
    """``configs/demo.toml`` of the checkout locedit runs from."""
    return Path(__file__).resolve().parents[3] / "configs" / "demo.toml"


def demo_config(use_counterfact: bool = False) -> ExperimentConfig:
    """The demo config; ``use_counterfact`` swaps the demo facts for the first known CounterFact facts.

    The CounterFact variant keeps the same number of facts (``data.limit``) and everything else, and is
    named ``demo-counterfact`` so its run directory differs.
    """
    path = demo_config_path()
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from a locedit checkout or use `locedit run CONFIG`")
    cfg = load_config(path)
    if not use_counterfact:
        return cfg
    data = DataConfig(source="counterfact", first_n=2000, known_only=True, limit=cfg.data.limit,
                      correctness_filter=cfg.data.correctness_filter)
    return cfg.model_copy(update={"name": f"{cfg.name}-counterfact", "data": data})
