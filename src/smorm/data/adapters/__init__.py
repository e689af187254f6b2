"""Data adapters, one per file format, registered in ``smorm.registry.DATA_ADAPTERS`` on import."""

from smorm.data.adapters import bench, generic, preference, ratings
from smorm.data.adapters.base import COMMON_OPTIONS, KINDS, Adapter, Context

__all__ = ["COMMON_OPTIONS", "KINDS", "Adapter", "Context", "bench", "generic", "preference", "ratings"]
