"""symnas.data (under construction)."""
