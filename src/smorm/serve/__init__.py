"""HTTP scoring server (FastAPI + uvicorn): ``smorm serve RUN``.

FastAPI and uvicorn are optional (``pip install 'smorm[serve]'``) and imported only when a server
is built; torch and the app load on first use of ``create_app`` / ``run_server``, so the command
line can read :class:`ServeSettings` without them.
"""

from typing import Any

from smorm.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "run_server"):
        from smorm.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'smorm.serve' has no attribute {name!r}")
