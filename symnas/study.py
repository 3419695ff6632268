"""Study: the recorded trials of one search (under construction)."""


class Study:
    pass
