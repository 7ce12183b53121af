"""Segments: definitions, their compiler, memberships and estimates."""
