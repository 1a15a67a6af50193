"""Report writers: Markdown and CSV tables from a run folder."""
