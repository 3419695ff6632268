"""Search algorithms, one per module; each is a ``pg.DNAGenerator``."""
