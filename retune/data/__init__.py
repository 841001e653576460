"""Datasets: built from the tasks, written with a manifest, read back checked."""
