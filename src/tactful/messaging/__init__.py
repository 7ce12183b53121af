"""Messaging: templates, channels, deliveries, tracking, the preference centre."""
