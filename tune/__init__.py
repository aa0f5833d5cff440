"""The ``tune`` command line: a thin Typer app over plain functions of the layers below."""
