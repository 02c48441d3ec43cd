"""The local inspection API over HTTP (FastAPI + uvicorn): ``station-cli serve``. Qt-free.

    POST /v1/inspect                          one image (multipart ``file``, optional ``part_id``;
                                              ``?heatmap=png`` adds the overlay) -> verdict, stored id
    POST /v1/calibrate                        good images + product + budgets -> a job id
    GET  /v1/jobs/{id}, POST .../cancel       the job's state, progress, error, saved version
    POST /v1/recipes/{product}/{version}/activate   use that version from the next part on
    GET  /v1/recipes                          products and versions, the active one marked
    GET  /v1/inspections?since=&limit=&offset=   stored results, oldest first, paged
    GET  /v1/inspections/{id}                 one stored result
    GET  /v1/health                           engine, recipe, store, queue, degraded (no token needed)
    GET  /docs, /openapi.json                 the operations (a page with no network reference)

What the service does lives in :mod:`station.api_service` (recipe, worker, recording) and
:mod:`station.api_jobs` (calibration); this module is the HTTP layer: routes, limits, the token
check (:mod:`station.api_token`), and one error shape for every refusal,
``{"error": code, "message": words}``, never a traceback. docs/API.md describes it all.
"""
from __future__ import annotations

import asyncio
import base64
import html
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.calibration import DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET
from core.store import StoredInspection, StoreError
from station import wording
from station.api_jobs import CalibrationJobs
from station.api_service import MB, ApiError, InspectionService, Judged, LoadedRecipe, too_large
from station.api_token import AccessToken

log = logging.getLogger(__name__)

API_VERSION = "1"
OPEN_PATHS = frozenset({"/v1/health"})  # answered without a token
FORM_SLACK = 64 * 1024  # multipart boundaries, headers and the small fields beside an image
MAX_PAGE = 500
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                 422: "bad_request", 429: "busy", 503: "busy"}


def error_body(code: str, message: str) -> dict:
    return {"error": code, "message": message}


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _num(x: Any) -> float | None:
    """A float for JSON, None when it is not a finite number (JSON has no NaN)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class BearerAuth:
    """ASGI middleware: every request but ``OPEN_PATHS`` must carry ``Authorization: Bearer <token>``
    (compared in constant time); refused with 401 before its body is read."""

    def __init__(self, app: ASGIApp, token: AccessToken):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.token.matches_header(Headers(scope=scope).get("authorization")):
            await self.app(scope, receive, send)
            return
        response = _error(401, "unauthorized", "This service needs its access token: send the header "
                                               "'Authorization: Bearer <token>' (the token file is named in the "
                                               "service's start-up message).", {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body larger than its path's limit is refused with 413 while it is
    read (a Content-Length beyond the limit before any of it is), never read whole. Raised from the
    body reader as an HTTPException, so the form parser passes it on to the JSON error handler."""

    def __init__(self, app: ASGIApp, limits: dict[str, int], default: int = FORM_SLACK):
        self.app, self.limits, self.default = app, dict(limits), int(default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope.get("path", ""), self.default)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large_response(limit)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, f"more than {limit} bytes")
            return message

        await self.app(scope, limited, send)


class Admission:
    """ASGI middleware: while the inspection queue is full, ``POST /v1/inspect`` is answered 503 with
    Retry-After before its upload is read, so refused parts cost the busy cores nothing but the answer."""

    def __init__(self, app: ASGIApp, service: InspectionService):
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope.get("path") == "/v1/inspect" and scope.get("method") == "POST"
                and self.service.full):
            busy = self.service.busy_error()
            await _error(busy.status, busy.code, busy.message, busy.headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _too_large_response(limit: int) -> JSONResponse:
    return _error(413, "too_large", f"The request is too large for this endpoint (at most {limit / MB:.2f} MB); "
                                    "it was refused before it was read.")


# -- JSON shapes -------------------------------------------------------------------------------
def recipe_json(loaded: LoadedRecipe | None) -> dict | None:
    if loaded is None:
        return None
    r = loaded.recipe
    return {"product": r.product, "version": r.version, "models": list(r.models), "since": loaded.since,
            "signed_by": r.signed_by}


def verdict_json(j: Judged) -> dict:
    ins, v, recipe = j.inspection, j.inspection.verdict, j.recipe
    scores = {}
    for s in v.scores:
        thr = recipe.threshold(s.model)
        scores[s.model] = {"raw": _num(s.raw), "score": _num(s.score), "state": s.state.value,
                           "pass_limit": _num(s.band[0]), "fail_limit": _num(s.band[1]),
                           "raw_pass_limit": _num(thr.pass_limit), "raw_fail_limit": _num(thr.value)}
    return {
        "id": j.outcome.inspection_id, "stored": j.outcome.inspection_id is not None, "problem": j.outcome.problem,
        "decision": v.decision.value, "headline": wording.headline(v), "action": wording.action(v),
        "reasons": [r.value for r in v.reasons], "words": wording.explain(v),
        "scores": scores, "fused": {"score": _num(v.fused), "pass_limit": _num(v.fused_band[0]),
                                    "fail_limit": _num(v.fused_band[1])},
        "notes": list(v.notes), "degraded": bool(j.unavailable), "unavailable_models": dict(j.unavailable),
        "recipe": {"product": ins.recipe, "version": ins.recipe_version}, "part_id": j.part_id,
        "source": j.outcome.record.source, "image": {"width": ins.image_shape[1], "height": ins.image_shape[0]},
        "region": list(ins.region) if ins.region is not None else None,
        "latency_ms": _num(ins.latency_ms), "timings_ms": {k: _num(t) for k, t in j.timings_ms.items()},
        "engine_timings_ms": {k: _num(t) for k, t in ins.timings_ms.items()},
    }


def record_json(r: StoredInspection) -> dict:
    return {
        "id": r.id, "ts": r.ts, "source": r.source, "recipe": {"product": r.recipe, "version": r.recipe_version},
        "decision": r.decision.value if r.decision is not None else None, "reasons": list(r.reasons),
        "words": wording.record_in_words(r), "notes": list(r.notes),
        "scores": {m: {"raw": _num(s.raw), "score": _num(s.score), "state": s.state, "pass_limit": _num(s.band[0]),
                       "fail_limit": _num(s.band[1])} for m, s in r.scores.items()},
        "fused": _num(r.fused), "latency_ms": _num(r.latency_ms), "mode": r.mode, "error": r.error,
        "image_path": r.image_path, "heatmap_path": r.heatmap_path, "review": r.review, "review_note": r.review_note,
        "part_id": r.part_id,
    }


# -- the offline docs page -----------------------------------------------------------------------
def _schema_of(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
    return schema


def docs_html(spec: dict) -> str:
    """A self-contained page listing every operation of ``spec`` (OpenAPI): no script, no style
    sheet or font from anywhere, so it works on a PC with no network."""
    e = html.escape
    rows = []
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            params = "".join(
                f"<li><code>{e(p['name'])}</code> ({e(p.get('in', ''))}{', required' if p.get('required') else ''})"
                f"{': ' + e(p['description']) if p.get('description') else ''}</li>" for p in op.get("parameters", []))
            body = ""
            for ctype, content in (op.get("requestBody", {}).get("content") or {}).items():
                props = _schema_of(spec, content.get("schema", {})).get("properties", {})
                fields = "".join(f"<li><code>{e(n)}</code>{': ' + e(s.get('description', '')) if s.get('description') else ''}"
                                 "</li>" for n, s in props.items())
                body += f"<p>Body: <code>{e(ctype)}</code></p><ul>{fields}</ul>"
            responses = ", ".join(f"<code>{e(code)}</code> {e(r.get('description', ''))}"
                                  for code, r in op.get("responses", {}).items())
            rows.append(f"<section><h2><span class='m'>{e(method.upper())}</span> <code>{e(path)}</code></h2>"
                        f"<p><b>{e(op.get('summary', ''))}</b></p><p>{e(op.get('description', ''))}</p>"
                        + (f"<p>Parameters:</p><ul>{params}</ul>" if params else "") + body
                        + f"<p>Responses: {responses}</p></section>")
    info = spec.get("info", {})
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(info.get('title', 'API'))}</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
            "section{border-top:1px solid #ccc;padding:.5em 0}h2{font-size:1.1em}"
            ".m{display:inline-block;min-width:4em;font-weight:bold;color:#05a}code{background:#f3f3f3;padding:0 .2em}"
            "</style></head><body>"
            f"<h1>{e(info.get('title', 'API'))} {e(info.get('version', ''))}</h1>"
            f"<p>{e(info.get('description', ''))}</p>"
            "<p>Every error is answered as JSON: <code>{\"error\": code, \"message\": words}</code>. "
            "The machine-readable description: <a href='/openapi.json'>/openapi.json</a>.</p>"
            + "".join(rows) + "</body></html>")


# -- the application -------------------------------------------------------------------------------
def create_app(service: InspectionService, jobs: CalibrationJobs, token: AccessToken | None = None) -> FastAPI:
    """The FastAPI application over ``service`` and ``jobs``; ``token``: required on every request
    but the health check (None: no token, only for a service bound to loopback)."""
    limit = service.config.upload_limit

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(jobs.stop)
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="Inspection station API", version=API_VERSION, lifespan=lifespan,
        description="The station's engine over HTTP on this PC: inspect a part, calibrate a product, "
                    "choose the recipe version, read stored results.",
        docs_url=None, redoc_url=None,  # FastAPI's pages load their scripts from a CDN: /docs below is offline
        telemetry={"auto_configure": False, "tracing": False, "metrics": False, "logs": False,
                   "operation_spans": False},
    )
    app.add_middleware(BodyLimit, limits={"/v1/inspect": limit + FORM_SLACK,
                                          "/v1/calibrate": jobs.total_limit + FORM_SLACK})
    app.add_middleware(Admission, service=service)  # runs before the body limit, after the token check
    if token is not None:  # added last, so it runs first: no body is read for a request without the token
        app.add_middleware(BearerAuth, token=token)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
        message = str(exc.detail)
        if exc.status_code == 413:
            message = (f"The request is too large for this endpoint (an image may have at most {limit / MB:g} MB); "
                       "it was refused while it was read, before any decoding.")
        elif exc.status_code == 404:
            message = "There is no such endpoint: see /docs."
        return _error(exc.status_code, code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return _error(422, "bad_request", "The request is not what this endpoint takes: " + "; ".join(problems) + ".")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("Unexpected error answering a request", exc_info=exc)
        return _error(500, "internal", "The service could not answer this request; its log says why.")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_html(app.openapi()))

    @app.get("/v1/health", summary="Is the service usable?",
             description="Engine backend, active recipe, results store, queue and whether it is degraded "
                         "(a model unusable: judged with the others, never PASSed). No token needed.")
    async def health() -> dict:
        loaded = service.loaded
        unavailable = service.unavailable_models()
        running = jobs.running()
        disk = service.disk
        return {
            "status": "no_recipe" if loaded is None else "degraded" if unavailable else "ok",
            "degraded": bool(unavailable), "unavailable_models": unavailable,
            "engine": None if loaded is None else {"backend": loaded.inspector.backend,
                                                   "fallback_reason": loaded.inspector.fallback_reason},
            "recipe": recipe_json(loaded), "store": await asyncio.to_thread(service.store_state),
            "disk": None if disk is None else {"free_gb": round(disk.free_bytes / 2 ** 30, 2), "low": disk.low},
            "queue": {"depth": service.queue_depth, "capacity": service.config.queue_size},
            "calibration": running.id if running is not None else None,
            "auth": "bearer" if token is not None else "none", "api_version": API_VERSION,
        }

    @app.post("/v1/inspect", summary="Inspect one part",
              description="A multipart form with the image as 'file' (PNG, JPEG, BMP, TIFF, WebP or PNM, at most "
                          f"{limit / MB:g} MB) and an optional 'part_id'. Answers the verdict, each model's score "
                          "against its limits (1.0 = its FAIL limit), the reasons as codes and in words, the timings "
                          "and the stored inspection's id. ?heatmap=png adds the overlay as base64 PNG. 503 with "
                          "Retry-After when the queue is full.")
    async def inspect(file: UploadFile = File(..., description="the part's image"),
                      part_id: str | None = Form(None, max_length=200, description="the part's id, stored with the result"),
                      heatmap: Literal["png"] | None = Query(None, description="'png': also return the overlay")
                      ) -> JSONResponse:
        t0 = time.perf_counter()
        if file.size is not None and file.size > limit:
            raise too_large(file.size, limit)
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise too_large(len(data), limit)
        judged: Judged = await asyncio.wrap_future(
            service.submit(data, file.filename or "", part_id, heatmap == "png"))
        body = verdict_json(judged)
        if judged.heatmap_png is not None:
            body["heatmap_png"] = base64.b64encode(judged.heatmap_png).decode("ascii")
        body["timings_ms"]["total"] = (time.perf_counter() - t0) * 1e3
        return JSONResponse(body)

    @app.post("/v1/calibrate", status_code=202,
              summary="Calibrate a product from good images",
              description="A multipart form: 'product', the good images as repeated 'images' files, optional "
                          "'false_reject_budget' (default 0.005 = 1 in 200) and 'review_budget' (default 0.1). "
                          "Trains a new recipe version in the background: follow GET /v1/jobs/{id}; the version is "
                          "used only after POST /v1/recipes/{product}/{version}/activate.")
    async def calibrate(product: str = Form(..., max_length=64, description="product name"),
                        images: list[UploadFile] = File(..., description="good images"),
                        false_reject_budget: float = Form(DEFAULT_BUDGET, description="good parts auto-FAILed"),
                        review_budget: float = Form(DEFAULT_REVIEW_BUDGET, description="good parts sent to REVIEW"),
                        ) -> dict:
        files = []
        for f in images:
            if f.size is not None and f.size > jobs.image_limit:
                raise too_large(f.size, jobs.image_limit, f"Image '{f.filename}'")
            files.append((f.filename or "image", await f.read(jobs.image_limit + 1)))
        job = await asyncio.to_thread(jobs.start, product, files, false_reject_budget, review_budget)
        return job.snapshot()

    @app.get("/v1/jobs/{job_id}", summary="A calibration job's state",
             description="state (queued, running, succeeded, failed, cancelled), stage, progress 0..1, error in "
                         "words, and the saved version once it succeeded.")
    async def job(job_id: str) -> dict:
        j = jobs.get(job_id)
        if j is None:
            raise ApiError(404, "unknown_job", f"There is no job '{job_id[:40]}' (jobs are kept until the service "
                                               "stops).")
        return j.snapshot()

    @app.post("/v1/jobs/{job_id}/cancel", summary="Cancel a calibration job")
    async def cancel_job(job_id: str) -> dict:
        j = jobs.cancel(job_id)
        if j is None:
            raise ApiError(404, "unknown_job", f"There is no job '{job_id[:40]}'.")
        return j.snapshot()

    @app.get("/v1/recipes", summary="Products and their recipe versions",
             description="Every product under the recipes folder with its versions; the active one marked.")
    async def recipes() -> dict:
        return {"active": recipe_json(service.loaded), "products": await asyncio.to_thread(service.library)}

    @app.post("/v1/recipes/{product}/{version}/activate", summary="Use a recipe version",
              description="Loads and checks the version, then judges every following part with it. 404 when the "
                          "product or version does not exist, 422 when it cannot be used.")
    async def activate(product: str, version: int) -> dict:
        loaded = await asyncio.to_thread(service.activate, product, version)
        return {"active": recipe_json(loaded), "backend": loaded.inspector.backend,
                "degraded": loaded.degraded, "unavailable_models": dict(loaded.unavailable)}

    @app.get("/v1/inspections", summary="Stored results, oldest first, paged",
             description="since: ISO-8601 time (inclusive; UTC when no zone is given); limit: at most "
                         f"{MAX_PAGE}; offset: rows to skip. 'next' gives the query of the following page, null "
                         "on the last one.")
    async def inspections(since: str | None = Query(None, description="ISO-8601 time, inclusive"),
                          limit: int = Query(100, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0)) -> dict:
        try:
            rows = await asyncio.to_thread(service.context.store.query_inspections, since=since, limit=limit,
                                           offset=offset, newest_first=False)
        except StoreError as exc:
            raise ApiError(400, "bad_request", f"since: {exc}.") from exc
        nxt = None
        if len(rows) == limit:  # the query of the following page (may be empty)
            nxt = {**({"since": since} if since is not None else {}), "limit": limit, "offset": offset + len(rows)}
        return {"items": [record_json(r) for r in rows], "next": nxt}

    @app.get("/v1/inspections/{inspection_id}", summary="One stored result")
    async def inspection(inspection_id: int) -> dict:
        rec = await asyncio.to_thread(service.context.store.get_inspection, inspection_id)
        if rec is None:
            raise ApiError(404, "unknown_inspection", f"There is no inspection {inspection_id}.")
        return record_json(rec)

    return app


class ServerThread:
    """uvicorn serving ``app`` in a thread of this process (tests, an embedding app); ``port=0``
    takes a free port, :attr:`port` says which once started."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    def start(self, timeout: float = 60.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
