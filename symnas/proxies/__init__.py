"""symnas.proxies (under construction)."""
