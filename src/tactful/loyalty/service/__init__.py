"""Loyalty use cases, one module per concern: ``programs``, ``ledger`` (postings, FIFO,
expiry, verification), ``rules`` (pure arithmetic), ``tiers``, ``pos``, ``refunds``, ``codes``,
``giftcards``, ``fraud``, ``accounts`` (enrolment, scheduled work, merges), ``reports`` and
``events`` (the event stream and the customer timeline)."""
