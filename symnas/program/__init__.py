"""symnas.program (under construction)."""
