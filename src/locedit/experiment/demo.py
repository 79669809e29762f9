"""The demo experiment that ``locedit demo`` runs: ``demo.toml``, shipped inside the package.

Its facts are chosen by name, never by the environment: ``demo`` (the shipped demo facts) or
``counterfact`` (the first known CounterFact facts from the shared data).

>>> cfg = demo_config()
>>> cfg.name, cfg.model.name, cfg.data.source, cfg.edit.methods
('demo', 'smollm2-135m', 'demo', ['ft-1', 'ft-5', 'rome', 'memit'])
>>> demo_config("counterfact").data.source
'counterfact'
"""

from __future__ import annotations

import tomllib
from importlib import resources

from locedit.experiment.config import ConfigError, DataConfig, ExperimentConfig, parse_config

DEMO_CONFIG = "demo.toml"
DEMO_DATA: dict[str, str] = {
    "demo": "the demo facts shipped with locedit",
    "counterfact": "the first known CounterFact facts of the shared data (LOCEDIT_DATA_DIR or ../shared/data)",
}


def demo_config_text() -> str:
    """The shipped ``demo.toml``, comments included (read from the installed package)."""
    return resources.files(__package__).joinpath(DEMO_CONFIG).read_text(encoding="utf-8")


def demo_config(data: str = "demo") -> ExperimentConfig:
    """The demo config on ``data``: ``demo`` (as shipped) or ``counterfact``.

    The CounterFact variant keeps the same number of facts (``data.limit``) and everything else, and is
    named ``demo-counterfact`` so its run directory differs.
    """
    if data not in DEMO_DATA:
        raise ConfigError(f"unknown demo data {data!r}; use one of {', '.join(DEMO_DATA)}")
    cfg = parse_config(tomllib.loads(demo_config_text()), origin=f"locedit/experiment/{DEMO_CONFIG}")
    if data == "demo":
        return cfg
    counterfact = DataConfig(source="counterfact", first_n=2000, known_only=True, limit=cfg.data.limit,
                             correctness_filter=cfg.data.correctness_filter)
    return cfg.model_copy(update={"name": f"{cfg.name}-counterfact", "data": counterfact})
