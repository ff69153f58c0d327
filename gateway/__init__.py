"""tiergate's OpenAI-compatible HTTP gateway."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml's [project] version is the one place the version is written.
    __version__ = version("tiergate")
except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
    __version__ = "0+unknown"
