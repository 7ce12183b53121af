"""Customers: profiles, identities and merges, contacts, consents and subscriptions."""
