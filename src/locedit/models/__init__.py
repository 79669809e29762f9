"""Models: loading, the family table and its sites, interventions, tokenization, scoring and generation."""

from locedit.models.families import FAMILIES, Family, Site, UnsupportedModelError, family_for, supported_model_types
from locedit.models.interventions import capture, intervene, recording_calls, run_until_stopped
from locedit.models.loading import ALIASES, EMBEDDED, GEMMA, ModelLoadError, load_model
from locedit.models.tiny import TINY_FAMILIES, tiny

__all__ = [
    "ALIASES", "EMBEDDED", "FAMILIES", "GEMMA", "Family", "ModelLoadError", "Site", "TINY_FAMILIES", "UnsupportedModelError",
    "capture", "family_for", "intervene", "load_model", "recording_calls", "run_until_stopped",
    "supported_model_types", "tiny",
]
