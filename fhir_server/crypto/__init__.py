"""Protected storage: envelope encryption, key ring, blind indexes, sealed messages."""
