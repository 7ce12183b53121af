"""Per-customer metrics in the warehouse, and the profile copy segments scan."""
