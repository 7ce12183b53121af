"""The contact policy: the one gate every message intent passes."""
