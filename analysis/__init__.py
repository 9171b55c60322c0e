"""Analysis: rank tables and plots from study results."""
