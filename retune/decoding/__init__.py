"""Decoding: the generators that write a context, and the recursive decoder with its traces."""
