"""`revisit eval video` (being written)."""
