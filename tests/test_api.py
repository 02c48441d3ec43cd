"""The local inspection API (``station-cli serve``) against real uvicorn servers on loopback: every
endpoint, the bad-input battery over HTTP, the token beyond loopback, a full queue, 20 clients at
once, calibrate -> activate, degraded mode, and the CLI itself in a subprocess."""
from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from core.images import encode_png
from core.recipe import Recipe, TensorKey
from core.trainer import TrainConfig
from station.demo import PartGenerator

ROOT = Path(__file__).resolve().parents[1]
GEN = PartGenerator("bracket", (128, 128), seed=0)  # the tiny recipe's parts (trained on good(0..13))


def good_png(i: int) -> bytes:
    return encode_png(GEN.good(100 + i).image)


def defect_png(i: int) -> bytes:
    return encode_png(GEN.defective(300 + i).image)


def _png_header(w: int, h: int, depth: int = 8, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _is_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    assert body["message"] and "Traceback" not in r.text
    return body


@dataclasses.dataclass
class Api:
    url: str
    ctx: object
    service: object
    jobs: object
    root: Path
    client: httpx.Client

    def rows(self) -> int:
        return len(self.ctx.store.query_inspections(limit=None))


def _serve(service, jobs, token=None):
    from station.api import ServerThread, create_app

    return ServerThread(create_app(service, jobs, token)).start()


@pytest.fixture(scope="module")
def api(tiny_recipe_root, tmp_path_factory):
    """The tiny recipe served on 127.0.0.1 (a free port), a small queue, in temporary station folders."""
    from station.api_jobs import CalibrationJobs
    from station.api_service import InspectionService, ServiceConfig
    from station.context import StationContext

    base = tmp_path_factory.mktemp("api")
    root = base / "recipes"
    shutil.copytree(tiny_recipe_root / "tiny", root / "tiny")  # calibrations add products here
    ctx = StationContext(data_dir=base / "data", config_dir=base / "config")
    service = InspectionService(ctx, root, ServiceConfig(queue_size=4, upload_limit=2 * 2 ** 20))
    service.use(service.build("tiny"))
    jobs = CalibrationJobs(root, base / "data" / "api-uploads", TrainConfig(size=128, min_good=10),
                           image_limit=2 * 2 ** 20)
    server = _serve(service, jobs)
    client = httpx.Client(base_url=server.url, timeout=60)
    yield Api(server.url, ctx, service, jobs, root, client)
    client.close()
    server.stop()
    ctx.close()


def test_health_names_the_engine_the_recipe_and_the_store(api):
    h = api.client.get("/v1/health").json()
    assert h["status"] == "ok" and h["degraded"] is False and h["unavailable_models"] == {}
    assert h["engine"]["backend"] in ("onnx", "torch")
    assert (h["recipe"]["product"], h["recipe"]["version"]) == ("tiny", 1)
    assert h["recipe"]["models"] == ["patchcore", "gaussian"]
    assert h["store"]["state"] == "ok" and h["auth"] == "none"
    assert h["queue"]["capacity"] == 4


def test_inspect_answers_the_engines_verdict_records_it_and_keeps_the_evidence(api, tiny_recipe):
    from core.engine import Inspector
    from station.wording import explain

    png = defect_png(0)
    r = api.client.post("/v1/inspect", params={"heatmap": "png"}, files={"file": ("part.png", png, "image/png")},
                        data={"part_id": "P-0001"})
    assert r.status_code == 200, r.text
    b = r.json()
    want = Inspector(tiny_recipe, backend="torch").inspect(GEN.defective(300).image)  # the engine itself
    assert b["decision"] == want.decision.value == "FAIL"
    assert b["reasons"] == [x.value for x in want.verdict.reasons]
    assert b["words"] == explain(want.verdict) and b["headline"] == "FAIL"
    for s in want.verdict.scores:
        got = b["scores"][s.model]
        assert got["score"] == pytest.approx(s.score, rel=0.02) and got["state"] == s.state.value
        assert got["fail_limit"] == 1.0 and got["pass_limit"] == pytest.approx(s.band[0])
        assert got["raw_fail_limit"] == pytest.approx(tiny_recipe.threshold(s.model).value)
    assert b["degraded"] is False and b["recipe"] == {"product": "tiny", "version": 1}
    assert b["latency_ms"] > 0 and b["timings_ms"]["total"] >= b["timings_ms"]["inspect"] > 0
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(b["heatmap_png"]), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (128, 128, 3)

    assert api.service.writer.flush(30)  # the evidence is written after the answer (station.recording)
    rec = api.ctx.store.get_inspection(b["id"])  # the row station.recording wrote
    assert rec is not None and rec.verdict == "FAIL" and rec.mode == "api"
    assert (rec.part_id, rec.source) == ("P-0001", "part.png")  # the line's id in its column, the file as source
    assert (b["part_id"], b["source"]) == ("P-0001", "part.png")
    assert Path(rec.image_path).read_bytes() == png  # the upload's own bytes, as the station keeps them
    assert Path(rec.heatmap_path).is_file() and rec.heatmap_path.endswith("_heatmap.jpg")
    assert Path(rec.image_path).parent.parent == api.ctx.images_root  # images/<date>/ of the station

    plain = api.client.post("/v1/inspect", files={"file": ("g.png", good_png(0))}).json()
    assert "heatmap_png" not in plain and plain["source"] == "g.png" and plain["id"] == b["id"] + 1
    assert plain["part_id"] is None and api.ctx.store.get_inspection(plain["id"]).part_id is None  # none sent: NULL


def test_inspections_are_paged_oldest_first_from_the_store(api):
    for i in range(3):
        assert api.client.post("/v1/inspect", files={"file": (f"p{i}.png", good_png(10 + i))}).status_code == 200
    everything = api.ctx.store.query_inspections(limit=None, newest_first=False)
    seen, query = [], {"limit": 2}
    while query is not None:
        page = api.client.get("/v1/inspections", params=query).json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        query = page["next"]
    assert [x["id"] for x in seen] == [r.id for r in everything] and len(seen) >= 5
    assert seen[-1]["words"] and seen[-1]["decision"] in ("PASS", "FAIL", "REVIEW") and seen[-1]["mode"] == "api"
    since = everything[-2].ts
    recent = api.client.get("/v1/inspections", params={"since": since}).json()["items"]
    assert [x["id"] for x in recent] == [r.id for r in everything if r.ts >= since]
    assert api.client.get("/v1/inspections", params={"since": "2999-01-01T00:00:00Z"}).json() == {"items": [],
                                                                                                 "next": None}
    one = api.client.get(f"/v1/inspections/{everything[0].id}").json()
    assert one["id"] == everything[0].id and one["decision"] == everything[0].verdict
    _is_error(api.client.get("/v1/inspections", params={"since": "yesterday"}), 400, "bad_request")
    _is_error(api.client.get("/v1/inspections", params={"limit": 100000}), 422, "bad_request")
    _is_error(api.client.get("/v1/inspections/999999"), 404, "unknown_inspection")


def _chunks(data: bytes, size: int = 256 * 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_bad_requests_get_a_4xx_json_error_and_leave_no_row(api):
    before = api.rows()
    c = api.client
    png = good_png(0)
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(3 * 2 ** 20)  # above the 2 MB upload limit of this server
    _is_error(c.post("/v1/inspect", files={"file": ("x.png", b"this is not an image\n" * 50)}), 415, "not_an_image")
    _is_error(c.post("/v1/inspect", files={"file": ("x.png", png[: len(png) // 2])}), 400, "truncated")
    _is_error(c.post("/v1/inspect", files={"file": ("x.png", b"")}), 400, "empty_file")
    _is_error(c.post("/v1/inspect", files={"file": ("x.gif", b"GIF89a" + b"\0" * 100)}), 415, "unsupported_format")
    # a header declaring 60000 x 60000 16-bit RGBA: refused from the header, nothing decoded
    bomb = _is_error(c.post("/v1/inspect", files={"file": ("bomb.png", _png_header(60000, 60000, 16, 6) + b"\0" * 64)}),
                     413, "too_large")
    assert "60000 x 60000" in bomb["message"]
    _is_error(c.post("/v1/inspect", files={"file": ("big.png", big)}), 413, "too_large")  # Content-Length
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()
    streamed = c.post("/v1/inspect", content=_chunks(body),  # chunked: no length, counted while it is read
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in streamed.request.headers
    _is_error(streamed, 413, "too_large")
    _is_error(c.post("/v1/inspect"), 422, "bad_request")  # no file at all
    _is_error(c.post("/v1/inspect", params={"heatmap": "jpeg"}, files={"file": ("x.png", png)}), 422, "bad_request")
    _is_error(c.post("/v1/recipes/no-such-product/1/activate"), 404, "unknown_recipe")
    _is_error(c.post("/v1/recipes/tiny/7/activate"), 404, "unknown_recipe")
    assert c.post("/v1/recipes/..%2F..%2Fetc/1/activate").status_code == 404
    _is_error(c.post("/v1/recipes/.hidden/1/activate"), 404, "unknown_recipe")
    _is_error(c.post("/v1/recipes/tiny/one/activate"), 422, "bad_request")
    _is_error(c.get("/v1/jobs/nope"), 404, "unknown_job")
    _is_error(c.get("/v1/no-such-endpoint"), 404, "not_found")
    _is_error(c.delete("/v1/health"), 405, "method_not_allowed")
    assert api.rows() == before
    assert api.client.get("/v1/health").json()["recipe"]["product"] == "tiny"  # still the same recipe


def _raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    """Send a request's head (and part of a body) and never finish it; what the server answers."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=15) as s:
        try:
            s.sendall(head.encode() + body)
        except OSError:  # the server answered and closed while this was still sending: read what it said
            pass
        try:
            while b"}" not in answer:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:  # a timeout: no answer while the body was unfinished
            pass
    return answer


def test_too_large_uploads_are_refused_while_they_are_read_not_after(api):
    head = ("POST /v1/inspect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n")
    # a length beyond the limit: answered before a byte of the body is sent
    declared = _raw_request(api.url, head + f"Content-Length: {50 * 2 ** 20}\r\n\r\n")
    assert declared.startswith(b"HTTP/1.1 413") and b'"error":"too_large"' in declared, declared[:300]
    # no length (chunked): 3 MB of a body that never ends, answered once past the 2 MB limit
    part = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n\x89PNG\r\n\x1a\n"
    part += os.urandom(3 * 2 ** 20)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part[i:i + 65536]), part[i:i + 65536])
                      for i in range(0, len(part), 65536))
    endless = _raw_request(api.url, head + "Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert endless.startswith(b"HTTP/1.1 413") and b'"error":"too_large"' in endless, endless[:300]


def test_docs_work_offline(api):
    page = api.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.findall(r"https?://", page.text, flags=re.I), "the docs page refers to another host"
    assert not re.search(r"<script|<link|@import|url\(", page.text, flags=re.I)  # nothing fetched at all
    spec = api.client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method in ops:
            assert f"{method.upper()}</span> <code>{path}</code>" in page.text, (method, path)
    assert {"/v1/inspect", "/v1/calibrate", "/v1/jobs/{job_id}", "/v1/health", "/v1/recipes",
            "/v1/inspections", "/v1/recipes/{product}/{version}/activate"} <= set(spec["paths"])
    assert api.client.get("/redoc").status_code == 404  # FastAPI's CDN pages are off


def test_beyond_loopback_every_request_but_health_needs_the_token(api, tmp_path):
    from station.api_service import InspectionService, ServiceConfig
    from station.api_token import TOKEN_FILE, TokenError, load_or_create, token_for

    assert token_for("127.0.0.1", tmp_path) is None and token_for("::1", tmp_path) is None
    token = token_for("0.0.0.0", tmp_path)  # the service configured as if bound beyond loopback
    assert token is not None and token.created and token.path == tmp_path / TOKEN_FILE
    assert stat.S_IMODE(os.stat(token.path).st_mode) == 0o600 and len(token.value) >= 40
    again = token_for("192.168.1.20", tmp_path)
    assert again.value == token.value and not again.created  # made (and printed) once only

    service = InspectionService(api.ctx, api.root, ServiceConfig(housekeeping=False))
    service.use(api.service.loaded)
    server = _serve(service, api.jobs, token)  # still listening on 127.0.0.1 only
    try:
        c = httpx.Client(base_url=server.url, timeout=60)
        before = api.rows()
        assert c.get("/v1/health").json()["auth"] == "bearer"
        r = c.get("/v1/recipes")
        _is_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        _is_error(c.get("/v1/recipes", headers={"Authorization": "Bearer " + token.value[:-1] + "x"}), 401,
                  "unauthorized")
        _is_error(c.get("/v1/recipes", headers={"Authorization": token.value}), 401, "unauthorized")
        _is_error(c.post("/v1/inspect", files={"file": ("g.png", good_png(1))}), 401, "unauthorized")
        _is_error(c.get("/docs"), 401, "unauthorized")
        _is_error(c.get("/openapi.json"), 401, "unauthorized")
        assert api.rows() == before
        auth = {"Authorization": f"Bearer {token.value}"}
        assert c.get("/v1/recipes", headers=auth).status_code == 200
        r = c.post("/v1/inspect", files={"file": ("g.png", good_png(1))}, headers=auth)
        assert r.status_code == 200 and api.ctx.store.get_inspection(r.json()["id"]) is not None
        c.close()
    finally:
        server.stop()

    token.path.chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        load_or_create(token.path)


class _Held:
    """An inspector that waits for ``release`` before each inspection (a worker kept busy)."""

    def __init__(self, inner):
        self.inner, self.release, self.entered = inner, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def inspect(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(60)
        return self.inner.inspect(*args, **kwargs)


def test_a_full_queue_is_answered_503_with_retry_after(api):
    from station.api_service import InspectionService, ServiceConfig

    held = _Held(api.service.loaded.inspector)
    service = InspectionService(api.ctx, api.root, ServiceConfig(queue_size=1, workers=2, housekeeping=False))
    service.use(dataclasses.replace(api.service.loaded, inspector=held))
    server = _serve(service, api.jobs)
    answers: list[httpx.Response] = []

    def post(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            answers.append(c.post("/v1/inspect", files={"file": (f"q{i}.png", good_png(20 + i))}))

    posters = []
    try:
        while not service.full and len(posters) < 10:  # fill the pipeline: the workers, then the queue
            posters.append(threading.Thread(target=post, args=(len(posters),)))
            posters[-1].start()
            deadline = time.monotonic() + 30
            while service.queue_depth < len(posters) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert held.entered.wait(30)  # the worker holds part 0
        assert service.full and len(posters) == service.workers + 1, len(posters)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            full = c.post("/v1/inspect", files={"file": ("q.png", good_png(29))})
        _is_error(full, 503, "busy")
        assert int(full.headers["retry-after"]) >= 1
        held.release.set()
        for t in posters:
            t.join(60)
        assert [a.status_code for a in answers] == [200] * len(posters)  # every part let in is judged
        assert service.queue_depth == 0
    finally:
        held.release.set()
        server.stop()


def test_twenty_clients_at_once_get_200_or_503_and_every_200_is_stored(api):
    stop = time.monotonic() + 5.0
    results: list[tuple[int, dict, dict]] = []
    lock = threading.Lock()
    parts = [good_png(i) for i in range(4)] + [defect_png(i) for i in range(4)]

    def client(k: int) -> None:
        with httpx.Client(base_url=api.url, timeout=60) as c:
            n = 0
            while time.monotonic() < stop:
                r = c.post("/v1/inspect", files={"file": (f"c{k}-{n}.png", parts[(k + n) % len(parts)])},
                           data={"part_id": f"client{k}-{n}"})
                with lock:
                    results.append((r.status_code, r.json(), dict(r.headers)))
                n += 1
                if r.status_code == 503:
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = [code for code, _, _ in results]
    assert set(codes) <= {200, 503}, sorted(set(codes))
    ok = [b for code, b, _ in results if code == 200]
    assert len(ok) >= 20
    for code, body, headers in results:
        if code == 503:
            assert body["error"] == "busy" and int(headers["retry-after"]) >= 1
    assert len({b["id"] for b in ok}) == len(ok)
    for b in ok:
        rec = api.ctx.store.get_inspection(b["id"])
        assert rec is not None and rec.verdict == b["decision"] and rec.part_id == b["part_id"]
        assert rec.source == b["part_id"].replace("client", "c") + ".png" == b["source"]
    assert api.service.queue_depth == 0


def test_calibrate_trains_a_version_that_is_used_only_once_activated(api):
    c = api.client
    goods = [("good%02d.png" % i, encode_png(GEN.good(200 + i).image)) for i in range(10)]
    files = [("images", (n, d, "image/png")) for n, d in goods]
    form = {"product": "widget", "false_reject_budget": "0.01", "review_budget": "0.2"}
    _is_error(c.post("/v1/calibrate", files=files, data={**form, "product": "../etc"}), 400, "bad_product")
    _is_error(c.post("/v1/calibrate", files=files, data={**form, "review_budget": "0.001"}), 400, "bad_budget")
    _is_error(c.post("/v1/calibrate", files=files[:3], data=form), 400, "too_few_images")
    bad = _is_error(c.post("/v1/calibrate", files=files + [("images", ("notes.txt", b"hello", "text/plain"))],
                           data=form), 415, "not_an_image")
    assert "notes.txt" in bad["message"]

    started = c.post("/v1/calibrate", files=files, data=form)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] in ("queued", "running") and job["images"] == 10 and job["false_reject_budget"] == 0.01
    _is_error(c.post("/v1/calibrate", files=files, data=form), 409, "calibration_running")
    progress = []
    deadline = time.monotonic() + 240
    while job["state"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = c.get(f"/v1/jobs/{job['id']}").json()
        progress.append(job["progress"])
        if job["state"] == "running":  # inspection goes on meanwhile, with the active recipe
            r = c.post("/v1/inspect", files={"file": ("during.png", good_png(30))}).json()
            assert r["recipe"] == {"product": "tiny", "version": 1}
    assert job["state"] == "succeeded", job
    assert job["version"] == 1 and job["error"] is None and job["activate"] == "/v1/recipes/widget/1/activate"
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert not any((api.ctx.data_dir / "api-uploads").iterdir())  # the job's copies are gone

    lib = c.get("/v1/recipes").json()
    assert {p["product"]: p["versions"] for p in lib["products"]} == {"tiny": [1], "widget": [1]}
    assert lib["active"]["product"] == "tiny"  # not used before it is activated
    assert c.post("/v1/inspect", files={"file": ("a.png", good_png(31))}).json()["recipe"]["product"] == "tiny"
    try:
        act = c.post("/v1/recipes/widget/1/activate")
        assert act.status_code == 200 and act.json()["active"]["product"] == "widget"
        r = c.post("/v1/inspect", files={"file": ("b.png", good_png(32))}).json()
        assert r["recipe"] == {"product": "widget", "version": 1}
        assert c.get("/v1/health").json()["recipe"]["product"] == "widget"
        saved = Recipe.load(api.root / "widget" / "v0001")
        assert saved.budgets == (0.01, 0.2)
    finally:
        assert c.post("/v1/recipes/tiny/1/activate").status_code == 200


def test_cancelled_calibration_saves_nothing(api):
    goods = [("images", (f"g{i}.png", encode_png(GEN.good(400 + i).image), "image/png")) for i in range(10)]
    job = api.client.post("/v1/calibrate", files=goods, data={"product": "cancelled"}).json()
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    deadline = time.monotonic() + 120
    while job["state"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert job["state"] == "cancelled" and job["version"] is None
    assert not (api.root / "cancelled").exists() or not any((api.root / "cancelled").glob("v*"))


# -- degraded mode ------------------------------------------------------------------------------------
def test_judge_without_a_model_never_passes_and_still_fails():
    from core.calibration import Threshold
    from core.degraded import NoUsableModel, judge_without, unusable_models
    from core.fusion import fuse, model_score
    from core.types import Decision, Inspection, Reason

    thr = Threshold(value=2.0, low=1.9, high=2.1, budget=0.005, n=50, method="test", expected_false_reject=0.005,
                    good_max=1.8, pass_limit=1.5)

    def inspection(pc_raw: float, g_raw: float) -> Inspection:
        scores = [model_score("patchcore", pc_raw, thr), model_score("gaussian", g_raw, thr)]
        return Inspection(fuse(scores), {"patchcore": np.zeros((4, 4), np.float32),
                                         "gaussian": np.zeros((4, 4), np.float32)}, None, (4, 4), 1.0)

    clear = inspection(0.5, 0.5)
    assert clear.decision is Decision.PASS and judge_without(clear, {}) is clear
    broken = inspection(0.5, float("nan"))
    assert unusable_models(broken) == {"gaussian": "its score is not a number (its data may be damaged)"}
    j = judge_without(broken, unusable_models(broken))
    assert j.decision is Decision.REVIEW and j.verdict.reasons == (Reason.MODEL_UNAVAILABLE,)
    assert [s.model for s in j.verdict.scores] == ["patchcore"] and set(j.maps) == {"patchcore"}
    defect = judge_without(inspection(3.0, 0.5), {"gaussian": "unusable"})
    assert defect.decision is Decision.FAIL and Reason.MODEL_UNAVAILABLE in defect.verdict.reasons
    unsure = judge_without(inspection(1.7, 0.5), {"gaussian": "unusable"})
    assert unsure.decision is Decision.REVIEW and unsure.verdict.fused_band == (0.75, 1.0)
    with pytest.raises(NoUsableModel):
        judge_without(inspection(float("nan"), float("nan")), {"patchcore": "x", "gaussian": "y"})


def test_a_recipe_with_an_unusable_model_serves_degraded(api, tiny_recipe, tmp_path):
    from station.api_service import InspectionService, ServiceConfig

    tensors = dict(tiny_recipe.tensors)
    tensors[TensorKey.GAUSSIAN_WHITEN] = np.full_like(tensors[TensorKey.GAUSSIAN_WHITEN], np.nan)
    broken = Recipe(dict(tiny_recipe.manifest), tensors, {}, tiny_recipe.reference_png)
    broken.save(tmp_path / "recipes")  # a recipe that loads (its hashes agree) but whose Gaussian model is NaN
    service = InspectionService(api.ctx, tmp_path / "recipes", ServiceConfig(housekeeping=False))
    service.use(service.build("tiny"))
    server = _serve(service, api.jobs)
    try:
        c = httpx.Client(base_url=server.url, timeout=60)
        h = c.get("/v1/health").json()
        assert h["status"] == "degraded" and h["degraded"] is True and list(h["unavailable_models"]) == ["gaussian"]
        goods = [c.post("/v1/inspect", files={"file": (f"g{i}.png", good_png(i))}).json() for i in range(6)]
        assert all(g["decision"] != "PASS" and g["degraded"] is True for g in goods)
        assert all("model_unavailable" in g["reasons"] and list(g["scores"]) == ["patchcore"] for g in goods)
        would_pass = [g for g in goods if g["reasons"] == ["model_unavailable"]]
        assert would_pass, [g["reasons"] for g in goods]  # PatchCore alone saw a good part: REVIEW, not PASS
        assert "Only PatchCore could judge this part" in would_pass[0]["words"][0]
        bad = c.post("/v1/inspect", files={"file": ("d.png", defect_png(0))}).json()
        assert bad["decision"] == "FAIL" and bad["degraded"] is True  # a sure defect is still rejected
        assert bad["reasons"] == ["agree_defect", "model_unavailable"]
        assert bad["words"][0] == "PatchCore found a defect; see the outlined area."
        rec = api.ctx.store.get_inspection(would_pass[0]["id"])
        assert rec.verdict == "REVIEW" and rec.reasons == ("model_unavailable",) and set(rec.scores) == {"patchcore"}
        c.close()
    finally:
        server.stop()


# -- the CLI ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_station_cli_serve_runs_the_service_with_a_token_file(tiny_recipe_root, tmp_path):
    port, token_file = _free_port(), tmp_path / "secret" / "token"
    env = dict(os.environ, PYTHONPATH=str(ROOT), STATION_DATA_DIR=str(tmp_path / "data"),
               STATION_CONFIG_DIR=str(tmp_path / "config"), PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--recipe", str(tiny_recipe_root / "tiny"),
                             "--port", str(port), "--token-file", str(token_file), "--threads", "1"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "station-cli serve did not start"
            time.sleep(0.2)
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        health = httpx.get(url + "/v1/health").json()
        assert health["auth"] == "bearer" and health["recipe"]["product"] == "tiny"
        _is_error(httpx.post(url + "/v1/inspect", files={"file": ("g.png", good_png(2))}), 401, "unauthorized")
        r = httpx.post(url + "/v1/inspect", files={"file": ("g.png", good_png(2))},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200 and r.json()["stored"] is True
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert out.count(token) == 1  # printed once, when it was made
    assert "Serving the inspection API on 127.0.0.1:" in err
    assert (tmp_path / "data" / "results.sqlite").is_file()  # the station's own store by default


def test_evidence_is_written_after_the_answer_and_named_in_the_row_only_once_it_exists(api, monkeypatch):
    """The answer comes once the row exists; the row names the kept files only after they are written."""
    evidence = api.ctx.evidence
    save, entered, release = evidence.save, threading.Event(), threading.Event()

    def held_save(*args, **kwargs):
        entered.set()
        assert release.wait(60)
        return save(*args, **kwargs)

    monkeypatch.setattr(evidence, "save", held_save)
    try:
        r = api.client.post("/v1/inspect", files={"file": ("late.png", defect_png(5))})
        assert r.status_code == 200 and r.json()["decision"] == "FAIL"
        assert entered.wait(30)  # the writer is on it, the client already has its answer
        rec = api.ctx.store.get_inspection(r.json()["id"])
        assert rec is not None and rec.verdict == "FAIL"
        assert rec.image_path is None and rec.heatmap_path is None  # nothing named before it is written
    finally:
        release.set()
    assert api.service.writer.flush(30)
    rec = api.ctx.store.get_inspection(r.json()["id"])
    assert Path(rec.image_path).read_bytes() == defect_png(5) and Path(rec.heatmap_path).is_file()
    assert not api.ctx.store.set_evidence(rec.id, "/elsewhere.png", None)  # named once, never renamed
    assert api.ctx.store.get_inspection(rec.id).image_path == rec.image_path


def test_two_workers_judge_two_parts_at_once_with_one_inspector(api):
    from station.api_service import InspectionService, ServiceConfig

    class Counting(_Held):
        def __init__(self, inner):
            super().__init__(inner)
            self.inside = self.most = 0
            self.lock = threading.Lock()

        def inspect(self, *args, **kwargs):
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
                both = self.most >= 2
            if both:
                self.release.set()
            try:
                return super().inspect(*args, **kwargs)
            finally:
                with self.lock:
                    self.inside -= 1

    held = Counting(api.service.loaded.inspector)
    service = InspectionService(api.ctx, api.root, ServiceConfig(queue_size=2, workers=2, housekeeping=False))
    assert service.workers == 2 and service.threads >= 1
    service.use(dataclasses.replace(api.service.loaded, inspector=held))
    server = _serve(service, api.jobs)
    try:
        out: list[httpx.Response] = []

        def post(i):
            with httpx.Client(base_url=server.url, timeout=60) as c:
                out.append(c.post("/v1/inspect", files={"file": (f"w{i}.png", good_png(40 + i))}))

        ts = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert held.most == 2  # each part waited until the other one was being judged too
        assert sorted(r.status_code for r in out) == [200, 200]
        ids = [r.json()["id"] for r in out]
        assert all(api.ctx.store.get_inspection(i) is not None for i in ids) and len(set(ids)) == 2
    finally:
        held.release.set()
        server.stop()


def test_the_waiting_uploads_are_bounded_in_bytes_too(api):
    from station.api_service import ApiError, InspectionService, ServiceConfig

    png = good_png(60)
    held = _Held(api.service.loaded.inspector)
    service = InspectionService(api.ctx, api.root, ServiceConfig(queue_size=8, queue_bytes=len(png) + 10, workers=1,
                                                                 housekeeping=False))
    service.use(dataclasses.replace(api.service.loaded, inspector=held))
    service.start()
    try:
        first = service.submit(png, "b0.png")
        assert held.entered.wait(30)  # the worker holds it: it no longer counts as waiting
        second = service.submit(png, "b1.png")  # waits: its bytes are within the budget
        with pytest.raises(ApiError) as refused:
            service.submit(png, "b2.png")  # two uploads would be more than the budget, though the count is not
        assert refused.value.status == 503 and refused.value.code == "busy"
        assert int(refused.value.headers["Retry-After"]) >= 1
        held.release.set()
        assert first.result(60).outcome.inspection_id is not None
        assert second.result(60).outcome.inspection_id is not None
        assert service.submit(png, "b3.png").result(60).outcome.inspection_id is not None  # room again
    finally:
        held.release.set()
        service.stop()
