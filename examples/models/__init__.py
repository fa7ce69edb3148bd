"""Small model files for the end-to-end tests and the guides in docs/guides/."""
