"""The audit trail: an AuditEvent for every interaction, chained by hashes (audit/chain.py)."""
