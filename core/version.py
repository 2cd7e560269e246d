"""The installed diffstack's version (`0.0.0+source` when run from a checkout that is not installed)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffstack")
except PackageNotFoundError:
    __version__ = "0.0.0+source"
