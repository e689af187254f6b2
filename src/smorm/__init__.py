"""smorm: train, evaluate and serve reward models for LLM alignment.

Import is kept light: heavy modules (transformers, accelerate, peft) load where used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
