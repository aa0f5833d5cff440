"""The installed distribution's version, echoed by every output."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("audit-tune")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0.0.0+local"
