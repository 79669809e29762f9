"""locedit: where language models store facts, and whether that tells you where to edit them."""

__version__ = "0.1.0"
