"""Benchmarks (`make bench`): figures measured in one run on this machine, medians and ratios."""
