"""Events: Segment-spec ingestion, purchases, bulk import, the inbox and the warehouse loader."""
