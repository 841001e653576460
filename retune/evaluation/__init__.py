"""Evaluation: scoring, the pipeline from a trained run to tidy rows, and the shipped traces."""
