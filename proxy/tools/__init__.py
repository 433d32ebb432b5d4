"""User-facing workflow tools: load generator, consistency check, failure drills, demo."""
