"""Objectives: which measured metrics a search optimises, and in which direction."""
class Objective:  # placeholder, replaced by the loop author
    pass
