"""Experiments: configuration, run directories and plots."""
