"""Dagster assets and asset checks: thin wrappers that call pipeline/ and report metadata."""
