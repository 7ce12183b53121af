"""The realistic retail demo data generator: a home-and-garden hypermarket chain with a web shop.

``generate(directory, customers=…, seed=…, as_of=…)`` writes stores, products, customers,
receipt lines and site/app events as Parquet files for the bulk importer.
"""
