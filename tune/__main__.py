"""``python -m audit_tune.cli``: the same as the ``tune`` console script."""
from audit_tune.cli.app import main

main()
