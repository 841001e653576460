"""Reproduction: the plan of a profile's work, the executors doing it, and the notebooks' runner."""
