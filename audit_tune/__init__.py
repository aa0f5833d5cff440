"""audit-tune: tune and prove kube-apiserver audit buffering flags.

One import package, in layers that import only downwards (checked by import-linter in CI)::

    audit_tune.cli       the ``tune`` command (folder ``tune/``)
    audit_tune.analysis  Prometheus and audit-log input, calibration, recommendation, reports (``analysis/``)
    audit_tune.loadgen   the real stack, audit sink, load generator, verification (``loadgen/``)
    audit_tune.sim       the model of the audit pipeline, both engines, the oracle driver (``sim/``)
    audit_tune.basics    version, errors, output plumbing (this folder)
"""
from audit_tune.basics.version import __version__

__all__ = ["__version__"]
