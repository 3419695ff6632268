"""The search loop (under construction)."""


def search(*args, **kwargs):
    raise NotImplementedError("sn.search is being written")
