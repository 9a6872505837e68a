"""`revisit edge ...` (being written)."""
