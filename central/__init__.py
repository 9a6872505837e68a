"""The central service: ingest observations, cluster visitors, serve head office and the event kiosk."""
