"""Evaluation on labelled photos (`revisit eval verify`, `revisit eval detect`). Being written."""
