"""Loyalty: programs, accounts, the append-only points ledger, rules, tiers, the POS protocol,
rotating app codes, gift cards, anti-fraud and reports."""
