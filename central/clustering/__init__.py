"""Recurrence clustering: assignment, manual edits and rebuilds."""
