"""symnas.train (under construction)."""
