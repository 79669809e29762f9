"""The typed experiment config (TOML): what to load, which facts, how to localize, what to edit.

An experiment is declared, not scripted: a config names the model, the facts, the localization
settings, the edit methods (with hyperparameter overrides), problems and layers, the statistics corpus
and the seeds. Its hash (sha256 of the canonical JSON of the fully resolved config) identifies the run,
so a run directory can refuse to be resumed with a different config.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from locedit.edit.methods import METHODS
from locedit.edit.problems import PROBLEMS
from locedit.paths import data_dir

COUNTERFACT_FILES = ("counterfact_mend_edit.json", "counterfact_mend_train.json", "counterfact_mend_val.json")
ZSRE_FILE = "zsre_mend_train_1k.json"


class ConfigError(ValueError):
    """A config that cannot be run; the message names the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """The model: an HF id, a local folder, an alias, ``tiny:<family>`` (random weights, for tests) or
    ``random:<preset or config.json>`` (a real architecture with random weights, for timings)."""

    name: str = "smollm2-135m"
    device: str = "cpu"
    dtype: str = "float32"


class DataConfig(_Strict):
    """Which facts: a source, a candidate window, and the filters of docs/algorithms.md#selection."""

    source: str | list[str] = Field("demo", description="'demo', 'counterfact', 'zsre' (the shared 1k slice), "
                                    "or a path / list of paths")
    first_n: int | None = Field(None, ge=1, description="candidates = the first N records by case_id")
    case_ids: list[int] | None = Field(None, description="candidates = exactly these case ids (after first_n)")
    known_only: bool = Field(False, description="keep only the case ids in the known-ids list shipped for the "
                       "configured model (smollm2-135m, gemma3-270m)")
    limit: int | None = Field(None, ge=1, description="at most this many facts after the selections above")
    correctness_filter: bool = Field(True, description="trace and edit only facts the model knows "
                                     "(docs/algorithms.md#correctness-filter)")
    filter_mode: Literal["compat", "fixed"] = Field("compat", description="correctness continuation rule "
                                                    "(docs/algorithms.md#correctness-filter)")
    erasure_threshold: float = Field(0.02, ge=0.0, lt=1.0, description="Fact Erasure needs p(o_true) > this")
    compat_skips: bool = Field(True, description="reference hard skips: case 1531 always, 1517 for some runs")


class LocalizeConfig(_Strict):
    """Causal tracing (docs/algorithms.md#causal-tracing) and optional representation zeroing
    (docs/algorithms.md#representation-zeroing)."""

    enabled: bool = True
    kinds: list[Literal["mlp", "attn", "block"]] = ["mlp"]
    windows: list[int] = [5]
    samples: int = Field(10, ge=1)
    noise: float | None = Field(None, gt=0.0, description="noise sigma; None = the family default / 3 x std")
    zeroing: bool = False
    zeroing_window: int = Field(5, ge=1)

    @field_validator("windows")
    @classmethod
    def _positive_windows(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("windows must be a non-empty list of integers >= 1")
        return v


class EditConfig(_Strict):
    """The edit grid: every (fact, method, problem, central layer), with per-method overrides.

    ``hparams`` maps a method name to overrides, e.g. ``{rome = {kl_factor = 1.0}}``; a nested table
    keyed by a problem name overrides for that problem only, e.g. ``{rome = {fact-forcing = {v_lr = 0.05}}}``.
    Methods and problems are checked against their registries and stored by their registered names
    (``ff`` and ``FF`` become ``fact-forcing``), so two spellings of one config hash alike.
    """

    methods: list[str] = ["rome"]
    problems: list[str] = ["error-injection"]
    layers: list[int] = [0]
    hparams: dict[str, dict[str, Any]] = {}
    noise: float | None = Field(None, gt=0.0, description="editing noise sigma (Fact Forcing, Tracing Reversal)")
    o_noise_mode: Literal["compat", "continuation", "argmax"] = "compat"
    ff_noise_mode: Literal["compat", "fixed"] = "compat"
    essence: bool = Field(True, description="compute the essence score (sampled texts, perplexity drift)")
    average_prompts: bool = Field(False, description="average all paraphrase/neighbor prompts (paper) vs first (code)")
    batch_size: int = Field(8, ge=1, description="edits of one (method, problem, layer) handed to a worker at once; "
                            "not part of the config hash (every edit is reseeded, so grouping does not change results)")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        return _non_empty_unique([METHODS.get(m).name for m in v])

    @field_validator("problems")
    @classmethod
    def _known_problems(cls, v: list[str]) -> list[str]:
        return _non_empty_unique([PROBLEMS.get(p).name for p in v])

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        return _non_empty_unique(v)

    @field_validator("hparams")
    @classmethod
    def _known_hparams(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return _unique_keys({METHODS.get(name).name: _method_overrides(name, overrides)
                             for name, overrides in v.items()}, v)


def _non_empty_unique(v: list[Any]) -> list[Any]:
    if not v:
        raise ValueError("must name at least one entry")
    if len(set(v)) != len(v):
        raise ValueError(f"has duplicates: {v}")
    return v


def _unique_keys(renamed: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    if len(renamed) != len(given):
        raise ValueError(f"names one entry twice: {', '.join(given)}")
    return renamed


def _method_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """One method's overrides checked against its hyperparameter class; nested tables are per problem."""
    method = METHODS.get(name)
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            problem = PROBLEMS.find(key)
            if problem is None:
                raise ValueError(f"{name}.{key}: not a problem; use one of {', '.join(PROBLEMS)}")
            method.check_overrides(value)
            out[problem.name] = value
        else:
            out[key] = value
    method.check_overrides({k: v for k, v in out.items() if not isinstance(v, dict)})
    return _unique_keys(out, overrides)


class StatsConfig(_Strict):
    """The corpus for the second-moment statistics C of ROME and MEMIT (docs/algorithms.md#key-statistics)."""

    corpus: str | None = Field(None, description="a text corpus / statistics path; None = the shared WikiText files")
    n_tokens: int | None = Field(None, ge=1, description="corpus tokens per layer; None = the method table's value")


class SeedsConfig(_Strict):
    """Seeds set at the start of every unit, so a resumed run reproduces an uninterrupted one."""

    tracing: int = 1
    editing: int = 0


Backend = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = get_args(Backend)


class RunConfig(_Strict):
    """Where the sweep runs; not part of the config hash (the results do not depend on it)."""

    backend: Backend = Field("local", description="local: this process; ray: Ray actors (locedit[ray])")


class AnalysisConfig(_Strict):
    """What to do after the sweep."""

    analyze: bool = True
    report: bool = True


class ExperimentConfig(_Strict):
    """One experiment; see ``configs/*.toml``."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    localize: LocalizeConfig = LocalizeConfig()
    edit: EditConfig = EditConfig()
    stats: StatsConfig = StatsConfig()
    seeds: SeedsConfig = SeedsConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    run: RunConfig = RunConfig()

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of the fully resolved config without its execution settings
        (:data:`EXECUTION_FIELDS`): the input of :meth:`hash`."""
        return json.dumps(self.model_dump(mode="json", exclude=EXECUTION_FIELDS), sort_keys=True,
                          separators=(",", ":"))

    def hash(self) -> str:
        """sha256 hex digest of :meth:`canonical_json`; identifies the run."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def short_hash(self) -> str:
        return self.hash()[:10]


# How a sweep is executed, not what it computes: left out of the hash, so a run resumes under another backend.
EXECUTION_FIELDS: dict[str, Any] = {"run": True, "edit": {"batch_size"}}


def parse_config(data: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    """Validate a config dict; a problem becomes one line naming the field and what was wrong."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{origin}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a TOML file such as configs/smollm2_finding.toml")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    return parse_config(data, origin=str(path))


def dump_toml(cfg: ExperimentConfig) -> str:
    """The resolved config as TOML: one [section] per sub-config, free-form tables inline."""
    d = cfg.model_dump(mode="json", exclude_none=True)
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section, body in d.items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def data_paths(source: str | list[str]) -> list[Path] | None:
    """The files a data source names (None for the shipped demo facts); raises if one is missing."""
    if source == "demo":
        return None
    if source in ("counterfact", "zsre"):
        root = data_dir()
        if root is None:
            raise ConfigError(f"data.source = {source!r} needs the shared data: set LOCEDIT_DATA_DIR to its folder")
        paths = [root / f for f in (COUNTERFACT_FILES if source == "counterfact" else (ZSRE_FILE,))]
    else:
        paths = [Path(p).expanduser() for p in ([source] if isinstance(source, str) else source)]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"data.source: {p} does not exist; use 'demo', 'counterfact', 'zsre' or an existing file")
    return paths
