"""Adapters that let other RLHF libraries call a smorm reward model (TRL reward functions)."""
