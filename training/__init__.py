"""Training pipeline: CSV in, a verified version in the model store out (`python -m training`)."""
