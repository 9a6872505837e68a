"""Revisit: recurring-visitor recognition from CCTV and event-photo search by selfie."""

__version__ = "0.1.0"
