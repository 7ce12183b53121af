"""Bulk imports of customers, purchases, events, stores and products from CSV or Parquet files.

DuckDB reads and checks the file; every rejected row is reported with its row number and
reason in an error file; the rest is imported, and re-running a file imports nothing twice.
Customers go through the same identity resolution as live calls; purchases and events go
straight to the warehouse (historical, never firing triggers) or, with ``live``, through the
inbox like calls to the HTTP API.
"""
