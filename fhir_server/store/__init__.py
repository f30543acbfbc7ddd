"""Storage: the Store protocol (base.py), its SQLite (sqlite/) and MongoDB (mongo/) stores,
and what they share (history cursors, includes, stamps)."""
