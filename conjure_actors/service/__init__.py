"""``serve``: the Comfy API v2 job service over the actor system (see ``service/app.py``)."""

from conjure_actors.service.app import Service, Settings, create_app, open_service, serve_app

__all__ = ["Service", "Settings", "create_app", "open_service", "serve_app"]
