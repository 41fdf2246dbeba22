"""The engine: a general ordered key-value store (an LSM tree). It knows nothing of mail."""
