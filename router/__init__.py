"""Combining members: static baselines and the learned router (trained on
validation windows only)."""
