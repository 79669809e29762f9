"""Models: loading, the family table, tokenization, scoring, generation and hooks."""

from locedit.models.families import FAMILIES, Family, UnsupportedModelError, family_for, supported_model_types
from locedit.models.hooks import capture, hidden_of, hooked, run_until_stopped, with_hidden
from locedit.models.loading import ALIASES, EMBEDDED, ModelLoadError, load_model
from locedit.models.tiny import TINY_FAMILIES, tiny

__all__ = [
    "ALIASES", "EMBEDDED", "FAMILIES", "Family", "ModelLoadError", "TINY_FAMILIES", "UnsupportedModelError",
    "capture", "family_for", "hidden_of", "hooked", "load_model", "run_until_stopped", "supported_model_types",
    "tiny", "with_hidden",
]
