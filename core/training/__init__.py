"""Training, evaluation and export jobs; run from the command line, never inside a page."""
