"""HTTP scoring server (FastAPI + uvicorn): ``smorm serve RUN``.

FastAPI and uvicorn are optional (``pip install 'smorm[serve]'``) and imported only when a server
is built, so ``import smorm.serve`` stays cheap.
"""

from smorm.serve.app import ServeSettings, create_app, run_server

__all__ = ["ServeSettings", "create_app", "run_server"]
