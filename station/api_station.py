"""The station serves the local inspection API itself (Settings > Inspection API). Qt-free.

:class:`StationApi` follows the settings and the station's loaded recipe: :meth:`apply` starts,
restarts or stops the service (``station.api`` on uvicorn, in a thread of its own) on a background
thread, never on the caller's (the UI thread). The service judges with the station's recipe (its
own inspector, one worker with one thread: the live view keeps the other core) and records into
the station's results store and images folder through :func:`station.recording.record`, mode
``api``; the station's own housekeeper bounds the kept evidence. Beyond loopback every request but
/v1/health needs the access token (``station.api_token``, ``api-token`` in the config folder):
:attr:`new_token` holds it once, when it was made, for the settings dialog to show.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from station.api_settings import ApiSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Wanted:
    host: str
    port: int
    recipe_key: int  # which recipe object (compared by identity, never by its arrays)
    keep_images: str
    recipe: Any = field(default=None, compare=False)  # core.recipe.Recipe, or None: health says no_recipe


class StationApi:
    """Starts and stops the inspection API for one station (one per live pipeline)."""

    def __init__(self, context) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._wanted: _Wanted | None = None
        self._running: _Wanted | None = None
        self._server: Any = None  # station.api.ServerThread (imported when first started)
        self._service: Any = None  # station.api_service.InspectionService
        self._worker: threading.Thread | None = None
        self._changed = threading.Event()
        self._closed = False
        self.state = "off"  # off / starting / running / failed
        self.message = ""
        self.new_token: str | None = None  # the access token, only right after it was made

    @property
    def url(self) -> str | None:
        server = self._server
        return server.url if server is not None and self.state == "running" else None

    def apply(self, settings, recipe=None) -> None:
        """Serve as ``settings.api`` says, with ``recipe`` (the station's loaded one); returns at once."""
        api = settings.api if isinstance(getattr(settings, "api", None), ApiSettings) else ApiSettings()
        wanted = (_Wanted(api.host, int(api.port), id(recipe), getattr(settings, "keep_images", "review_fail"),
                          recipe) if api.enabled else None)
        with self._lock:
            if self._closed:
                return
            self._wanted = wanted
            self._changed.set()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._follow, name="api-station", daemon=True)
                self._worker.start()

    def wait(self, timeout: float = 60.0) -> bool:
        """Until the service is as last applied (tests); False when ``timeout`` passed first."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            self._wanted = None
            self._changed.set()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        self._stop()

    # -- the background thread ----------------------------------------------------------------
    def _follow(self) -> None:
        while True:
            with self._lock:
                if not self._changed.is_set():
                    self._worker = None
                    return
                self._changed.clear()
                wanted = self._wanted
            if wanted == self._running:
                continue
            self._stop()
            if wanted is not None:
                self._start(wanted)

    def _start(self, wanted: _Wanted) -> None:
        from core.recipe import RecipeError
        from station.api import ServerThread, create_app
        from station.api_jobs import CalibrationJobs
        from station.api_service import InspectionService, ServiceConfig
        from station.api_token import TokenError, token_for

        ctx = self.context
        self.state, self.message = "starting", f"Starting the inspection API on {wanted.host}:{wanted.port}"
        try:
            token = token_for(wanted.host, ctx.config_dir)
            if token is not None and token.created:
                self.new_token = token.value
            config = ServiceConfig(keep_images=wanted.keep_images, workers=1, threads=1, housekeeping=False)
            service = InspectionService(ctx, ctx.recipes_root, config, trusted_keys=ctx.trusted_keys())
            if wanted.recipe is not None:
                service.use(service.build_from(wanted.recipe))
            jobs = CalibrationJobs(ctx.recipes_root, ctx.data_dir / "api-uploads", image_limit=config.upload_limit)
            server = ServerThread(create_app(service, jobs, token), host=wanted.host, port=wanted.port).start()
        except (RecipeError, TokenError, OSError, RuntimeError, SystemExit) as exc:
            log.exception("The inspection API could not start")
            self.state, self.message = "failed", f"The inspection API could not start on {wanted.host}:{wanted.port} ({exc})."
            self._running = wanted  # not retried until the settings or the recipe change
            return
        self._server, self._service, self._running = server, service, wanted
        self.state, self.message = "running", f"Inspection API on {server.url}"
        log.info("%s", self.message)

    def _stop(self) -> None:
        server, self._server, self._service = self._server, None, None
        self._running = None
        if server is not None:
            server.stop()
            log.info("The inspection API stopped")
        self.state, self.message = "off", ""
