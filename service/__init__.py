"""The prediction service: one verified model version behind a typed HTTP API."""
