"""Tactful: customer data and communication platform."""
