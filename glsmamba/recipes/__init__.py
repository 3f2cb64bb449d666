"""Experiments built from the library: the CPU demo and the ablation bench."""
