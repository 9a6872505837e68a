"""The event kiosk."""
