"""`bench`: measurements side by side, and the peer scripts it runs (the naive tutorial script)."""
