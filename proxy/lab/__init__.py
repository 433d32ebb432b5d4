"""Local replication lab and topology bootstrap."""
