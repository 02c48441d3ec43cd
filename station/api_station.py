"""The station serves the local inspection API itself (Settings > Inspection API). Qt-free.

:class:`StationApi` follows the settings and the station's loaded recipe: :meth:`apply` starts,
restarts or stops the service (``station.api`` on uvicorn, in a thread of its own) on a background
thread, never on the caller's (the UI thread). The service judges with the station's recipe (its
own inspector, one worker with one thread: the live view keeps the other core) and records into
the station's results store and images folder through :func:`station.recording.record`, mode
``api``; the station's own housekeeper bounds the kept evidence. Beyond loopback every request but
/v1/health needs the access token (``station.api_token``, ``api-token`` in the config folder):
:attr:`new_token` holds it once, when it was made, for the settings dialog to show.
:meth:`StationApi.snapshot` says how the service is (:class:`ApiStatus`: off, starting, serving at
its address, failed and why in words, the parts answered and refused) for the status bar: a
frozen object published by the background thread, read without waiting for it.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
from dataclasses import dataclass, field, replace
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


OFF, STARTING, SERVING, FAILED = "off", "starting", "serving", "failed"


@dataclass(frozen=True)
class ApiStatus:
    """The inspection API as the station serves it, at one moment (:meth:`StationApi.snapshot`)."""

    state: str = OFF  # off / starting / serving / failed
    host: str = ""
    port: int = 0  # the bound port once serving
    url: str | None = None  # while serving
    reason: str = ""  # failed: why, in words ("port 8470 on 127.0.0.1 is already in use ...")
    token_required: bool = False  # beyond loopback: every request but /v1/health needs the access token
    answered: int = 0  # parts the service judged and answered (a verdict or an error)
    refused: int = 0  # requests refused 503 busy: the inspection queue was full

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def words(self) -> str:
        """Short, for the status bar; "" while off."""
        if self.state == SERVING:
            return f"API: serving {self.address}"
        if self.state == STARTING:
            return "API: starting"
        if self.state == FAILED:
            return f"API failed: {self.reason}"
        return ""

    def details(self) -> str:
        """Every line of it, for the status bar's tooltip."""
        if self.state == OFF:
            return "Inspection API: off"
        lines = [{SERVING: f"Inspection API serving on {self.url}", STARTING: f"Inspection API starting on {self.address}",
                  FAILED: f"Inspection API could not start on {self.address}: {self.reason}"}.get(self.state, self.state)]
        lines.append("Access token required (every request but /v1/health)" if self.token_required
                     else "No access token needed (this PC only)")
        if self.state == SERVING:
            lines.append(f"Parts answered: {self.answered}; refused busy (503): {self.refused}")
        return "\n".join(lines)


def bind_problem(host: str, port: int) -> str | None:
    """Why ``host``:``port`` cannot be listened on, in words (None: it can, now)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"the address {host} is unknown ({exc})"
    for family, kind, proto, _name, where in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
                s.bind(where)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another program, or another station, serves on it)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this PC"
            if exc.errno == errno.EACCES:
                return f"port {port} is not allowed for this program (ports below 1024 need administrator rights)"
            return f"{host}:{port} cannot be listened on ({exc.strerror or exc})"
    return None


def _reason(exc: BaseException, host: str, port: int) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return bind_problem(host, port) or (exc.strerror or str(exc))
    if isinstance(exc, (RuntimeError, SystemExit)):  # uvicorn said it in the log only: find out again
        return bind_problem(host, port) or "the server did not start (the log says why)"
    return str(exc) or type(exc).__name__


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
        self._status = ApiStatus()  # replaced whole (never changed) by the background thread

    @property
    def url(self) -> str | None:
        server = self._server
        return server.url if server is not None and self.state == "running" else None

    def snapshot(self) -> ApiStatus:
        """How the service is now: cheap, never waits for a start or a stop (the UI thread's timer
        reads it); the counts are read from the service under its counters' lock (two ints)."""
        status, service = self._status, self._service
        if status.state == SERVING and service is not None:
            answered, refused = service.counts()
            return replace(status, answered=answered, refused=refused)
        return status

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
        from station.api_token import TokenError, is_loopback, token_for

        ctx = self.context
        self.state, self.message = "starting", f"Starting the inspection API on {wanted.host}:{wanted.port}"
        self._status = ApiStatus(STARTING, wanted.host, wanted.port, token_required=not is_loopback(wanted.host))
        token = None
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
            reason = _reason(exc, wanted.host, wanted.port)
            self.state, self.message = "failed", f"The inspection API could not start on {wanted.host}:{wanted.port} ({reason})."
            self._status = ApiStatus(FAILED, wanted.host, wanted.port, reason=reason, token_required=token is not None)
            self._running = wanted  # not retried until the settings or the recipe change
            return
        self._server, self._service, self._running = server, service, wanted
        self.state, self.message = "running", f"Inspection API on {server.url}"
        self._status = ApiStatus(SERVING, wanted.host, int(server.port), server.url, token_required=token is not None)
        log.info("%s", self.message)

    def _stop(self) -> None:
        server, self._server = self._server, None
        self._running = None
        if server is not None:
            server.stop()
            log.info("The inspection API stopped")
        self._service = None
        if self._status.state != OFF:
            self._status = ApiStatus()
        self.state, self.message = "off", ""
