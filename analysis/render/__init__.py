"""Formatters for the analysis result types, registered per type with
:func:`audit_tune.basics.formats.register`; importing a module registers its formats."""
