"""`revisit models ...`. Being written."""
