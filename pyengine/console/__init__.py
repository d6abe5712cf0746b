"""The operator console: the live status page on the admin listener and the figures it shows."""
