"""HTTP API: one blueprint per concern, JSON errors from one helper."""
