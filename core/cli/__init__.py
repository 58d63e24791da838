"""Command-line commands of ``python -m core``; one module per command."""
