"""The model manifest, locating and verifying model files, and fetching them."""
