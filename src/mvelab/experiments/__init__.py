"""Experiment tooling: collect run directories into tables and plot them."""
