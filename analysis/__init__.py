"""Scaling-law analysis: load run records, fit laws, plot. Never imports torch."""
