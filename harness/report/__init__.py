"""Reports from run folders or imported results: Markdown, self-contained HTML, CSV, JSON,
and model comparisons."""
