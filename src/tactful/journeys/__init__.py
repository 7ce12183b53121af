"""Journeys: triggered scenarios — a graph of steps each customer walks through."""
