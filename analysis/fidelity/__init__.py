"""Fidelity of the simulator against the real k8s.io/apiserver audit code (the Go oracle):
``cases`` (the catalogue), ``compare`` (tolerances, runs, verdicts), ``report`` (tables and the
``docs/fidelity.md`` page). ``tune fidelity`` parses options and calls these."""
