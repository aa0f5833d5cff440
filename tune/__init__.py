"""Thin CLI over the ``sim``, ``analysis`` and ``loadgen`` packages."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("audit-tune")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0+local"
