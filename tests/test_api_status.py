"""The inspection API's state as the station shows it: :meth:`StationApi.snapshot` (off -> serving
on a real loopback server -> off; a port already taken says so in words; the busy refusals counted)
and the status bar's field following it (hidden while off, the reason in the error colour, elided:
the window never grows wider than a 1366 x 768 screen)."""
from __future__ import annotations

import socket

import httpx
import pytest

from station.api_settings import ApiSettings
from station.api_station import FAILED, OFF, SERVING, STARTING, ApiStatus, StationApi


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(ctx, port: int, enabled: bool = True) -> None:
    ctx.settings.api = ApiSettings(enabled=enabled, host="127.0.0.1", port=port)


def test_the_snapshot_goes_off_serving_off_with_the_bound_address_and_the_counts(ctx, monkeypatch):
    api = StationApi(ctx)
    try:
        assert api.snapshot() == ApiStatus() and api.snapshot().state == OFF and api.snapshot().words() == ""
        _serve(ctx, 0)  # port 0: any free one; the snapshot says which was bound
        api.apply(ctx.settings, None)
        assert api.wait(60)
        snap = api.snapshot()
        assert snap.state == SERVING and snap.host == "127.0.0.1" and snap.port > 0
        assert snap.url == f"http://127.0.0.1:{snap.port}" == api.url
        assert snap.words() == f"API: serving 127.0.0.1:{snap.port}"
        assert not snap.token_required and (snap.answered, snap.refused) == (0, 0)
        assert httpx.get(f"{snap.url}/v1/health", timeout=5).status_code == 200

        from station.api_service import InspectionService

        monkeypatch.setattr(InspectionService, "full", property(lambda self: True))  # the queue full
        r = httpx.post(f"{snap.url}/v1/inspect", files={"file": ("p.png", b"x")}, timeout=5)
        assert r.status_code == 503 and r.json()["error"] == "busy"
        now = api.snapshot()
        assert now.refused == 1 and now.answered == 0 and snap.refused == 0  # a snapshot never changes
        tip = now.details()
        assert snap.url in tip and "No access token" in tip and "refused busy (503): 1" in tip

        _serve(ctx, 0, enabled=False)
        api.apply(ctx.settings, None)
        assert api.wait(30)
        assert api.snapshot() == ApiStatus() and api.url is None
    finally:
        api.close()


# uvicorn ends its thread with SystemExit when it cannot bind (the reason only in its log)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_port_already_taken_is_said_in_words(ctx):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    api = StationApi(ctx)
    try:
        _serve(ctx, port)
        api.apply(ctx.settings, None)
        assert api.wait(60)
        snap = api.snapshot()
        assert snap.state == FAILED and snap.url is None and snap.port == port
        assert snap.reason == f"port {port} on 127.0.0.1 is already in use (another program, or another station, " \
                              "serves on it)"
        assert snap.words() == f"API failed: {snap.reason}"
        assert f"could not start on 127.0.0.1:{port}" in snap.details()
        assert "already in use" in api.message
        _serve(ctx, port, enabled=False)
        api.apply(ctx.settings, None)
        assert api.wait(30)
        assert api.snapshot().state == OFF
    finally:
        api.close()
        taken.close()


def test_the_status_bar_field_follows_the_snapshot_and_stays_compact(station, qtbot, monkeypatch):
    from station.qt.main_window import API_STATUS_MAX_PX

    ctx, make = station
    win = make()
    label = win.api_status
    now = [ApiStatus()]
    monkeypatch.setattr(win.pipeline.api, "snapshot", lambda: now[0])
    win._update_api_status()
    assert not label.isVisible()  # off: nothing shown

    now[0] = ApiStatus(STARTING, "127.0.0.1", 8470)
    qtbot.waitUntil(label.isVisible, timeout=5000)  # the window's stats timer reads it
    assert label.text() == "API: starting" and label.property("level") == ""

    now[0] = ApiStatus(SERVING, "127.0.0.1", 8470, "http://127.0.0.1:8470", answered=12, refused=3)
    win._update_api_status()
    assert label.text() == "API: serving 127.0.0.1:8470" and label.property("level") == ""
    tip = label.toolTip()
    assert "http://127.0.0.1:8470" in tip and "No access token" in tip and "Parts answered: 12" in tip
    assert "refused busy (503): 3" in tip

    now[0] = ApiStatus(SERVING, "0.0.0.0", 8470, "http://0.0.0.0:8470", token_required=True)
    win._update_api_status()
    assert "Access token required" in label.toolTip()

    reason = "port 8470 on 0.0.0.0 is already in use (another program, or another station, serves on it)"
    now[0] = ApiStatus(FAILED, "0.0.0.0", 8470, reason=reason, token_required=True)
    win.resize(1366, 768)
    win._update_api_status()
    assert label.isVisible() and label.property("level") == "error"
    assert label.text().startswith("API failed: port 8470") and label.text().endswith("…")  # elided
    assert label.fontMetrics().horizontalAdvance(label.text()) <= API_STATUS_MAX_PX
    assert reason in label.toolTip()  # the whole reason, in the tooltip
    qtbot.wait(50)
    assert win.width() <= 1366 and win.minimumSizeHint().width() <= 1366

    now[0] = ApiStatus()
    qtbot.waitUntil(lambda: not label.isVisible(), timeout=5000)
    win.close()
