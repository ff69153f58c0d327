"""tiergate's OpenAI-compatible HTTP gateway."""

__version__ = "0.1.0"
