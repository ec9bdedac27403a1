"""The prediction service: one verified model version behind a typed HTTP API."""

__version__ = "0.1.0"
