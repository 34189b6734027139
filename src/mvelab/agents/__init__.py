"""Agents: networks and pure loss functions (SAC; value-expansion variants plug in here)."""

from mvelab.agents import networks, sac

__all__ = ["networks", "sac"]
