"""Batch scoring of CSV files with a stored model, the service's validation and its runtime."""
