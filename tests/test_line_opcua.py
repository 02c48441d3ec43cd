"""The OPC UA line output against a real asyncua client on loopback: Basic256Sha256 SignAndEncrypt
with a client certificate made here and a user name and password; the ``InspectionStation`` nodes
after inspections recorded as the live station records them (station.recording.record), in order,
with the counters; ``Inspect`` through the trigger hook (accepted and refused with the reason);
anonymous and a wrong password refused; the unsecured endpoint absent by default."""
from __future__ import annotations

import asyncio
import logging
import math

import pytest

pytest.importorskip("asyncua", reason="asyncua is not installed (requirements.txt pins it: run `make test`)")

from asyncua import Client, ua  # noqa: E402
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256  # noqa: E402

from core.store import ResultsStore  # noqa: E402
from station.context import StationSettings  # noqa: E402
from station.line_opcua import APP_URI, NAMESPACE, ensure_certificate  # noqa: E402
from station.line_settings import OpcUaSettings  # noqa: E402
from station.outbox import LineOutputs, TriggerAnswer, TriggerRequest  # noqa: E402
from station.recording import RecordPolicy  # noqa: E402

from line_peers import Line, fast, free_port, wait_until  # noqa: E402

USER, PASSWORD = "line", "s3cret-Passw0rd"


def opcua_settings(tmp_path, port: int, **changes) -> StationSettings:
    s = StationSettings()
    s.opcua = OpcUaSettings(enabled=True, host="127.0.0.1", port=port, username=USER, password=PASSWORD,
                            cert_dir=str(tmp_path / "server-cert"), **changes)
    return s


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory):
    """A client certificate and key, made here (the same helper; its own folder)."""
    return ensure_certificate(tmp_path_factory.mktemp("client-cert"))


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def secure_client(port: int, cert, server_cert, user: str | None = USER, password: str | None = PASSWORD) -> Client:
    c = Client(f"opc.tcp://127.0.0.1:{port}/inspection/", timeout=5)
    c.application_uri = APP_URI  # the URI in the test's certificate (same helper)
    await c.set_security(SecurityPolicyBasic256Sha256, str(cert[0]), str(cert[1]), server_certificate=str(server_cert),
                         mode=ua.MessageSecurityMode.SignAndEncrypt)
    if user is not None:
        c.set_user(user)
    if password is not None:
        c.set_password(password)
    return c


async def read_station(c: Client) -> dict:
    ns = await c.get_namespace_index(NAMESPACE)
    obj = c.get_node(ua.NodeId("InspectionStation", ns))
    out = {}
    for child in await obj.get_children():
        name = (await child.read_browse_name()).Name
        if await child.read_node_class() == ua.NodeClass.Variable:
            out[name] = await child.read_value()
    models = c.get_node(ua.NodeId("InspectionStation.Models", ns))
    out["Models"] = {(await m.read_browse_name()).Name: await m.read_value() for m in await models.get_children()}
    return out


def started(outputs: LineOutputs) -> None:
    wait_until(lambda: outputs.snapshot() and outputs.snapshot()[0].connected, 30, what="the OPC UA server")


def test_nodes_follow_the_recorded_results_in_order_and_inspect_goes_through_the_hook(tmp_path, client_cert):
    port = free_port()
    settings = opcua_settings(tmp_path, port)
    policy = RecordPolicy.from_settings(settings)
    assert policy.outbox == ("opcua",)
    store = ResultsStore(tmp_path / "results.db")
    asked: list[TriggerRequest] = []
    answers = [TriggerAnswer(True), TriggerAnswer(False, "a part is still being inspected")]

    def hook(request: TriggerRequest) -> TriggerAnswer:
        asked.append(request)
        return answers[len(asked) - 1]

    outputs = LineOutputs(store, backoff=fast, on_trigger=hook)
    try:
        outputs.apply(settings)
        started(outputs)
        server_cert = tmp_path / "server-cert" / "server_cert.der"
        assert server_cert.exists() and (tmp_path / "server-cert" / "server_key.pem").stat().st_mode & 0o077 == 0
        outputs.set_outputs(ready=True, busy=False)
        line = Line(store, policy)
        for _ in range(5):  # PASS FAIL REVIEW PASS FAIL
            line.part()
        wait_until(lambda: store.outbox_backlog("opcua") == 0, 15, what="the results written to the nodes")

        async def session():
            c = await secure_client(port, client_cert, server_cert)
            async with c:
                values = await read_station(c)
                ns = await c.get_namespace_index(NAMESPACE)
                obj = c.get_node(ua.NodeId("InspectionStation", ns))
                method = ua.NodeId("InspectionStation.Inspect", ns)
                first = await obj.call_method(method, ua.Variant("P-0042", ua.VariantType.String))
                second = await obj.call_method(method, ua.Variant("", ua.VariantType.String))
                return values, first, second

        values, first, second = run(session())
        last = line.ids[-1]
        assert values["InspectionId"] == last and values["LastVerdict"] == "FAIL"
        assert values["Sequence"] == 5 and values["PartId"].endswith(f"-{last}")
        assert (values["CountOK"], values["CountNG"], values["CountREVIEW"]) == (2, 2, 1)
        assert values["RecipeProduct"] == "fake" and values["RecipeVersion"] == 1
        assert values["State"] == "ready"
        assert values["FusedScore"] > 1.0 and values["Reasons"]  # a FAIL: over the limit, with its reason codes
        assert set(values["Models"]) == {"patchcore", "gaussian"}
        assert all(math.isfinite(v) for v in values["Models"].values())
        assert first == [True, ""]
        assert second == [False, "a part is still being inspected"]
        assert [(r.source, r.part_id) for r in asked] == [("opcua", "P-0042"), ("opcua", "")]
    finally:
        assert outputs.close(timeout=10)


def test_anonymous_a_wrong_password_and_the_unsecured_endpoint_are_refused_by_default(tmp_path, client_cert, caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    store = ResultsStore(tmp_path / "results.db")
    outputs = LineOutputs(store, backoff=fast)  # no hook: Inspect answers refused, in words
    try:
        outputs.apply(opcua_settings(tmp_path, port))
        started(outputs)
        server_cert = tmp_path / "server-cert" / "server_cert.der"

        async def attempts():
            results = {}
            for label, user, password in (("anonymous", None, None), ("wrong password", USER, "nope"),
                                          ("wrong user", "admin", PASSWORD)):
                c = await secure_client(port, client_cert, server_cert, user, password)
                try:
                    await c.connect()
                except Exception as exc:  # noqa: BLE001 - what is asserted is that it failed, and how
                    results[label] = exc
                else:
                    await c.disconnect()
                    results[label] = None
            plain = Client(f"opc.tcp://127.0.0.1:{port}/inspection/", timeout=5)
            endpoints = await plain.connect_and_get_server_endpoints()
            ok = await secure_client(port, client_cert, server_cert)
            async with ok:
                ns = await ok.get_namespace_index(NAMESPACE)
                answer = await ok.get_node(ua.NodeId("InspectionStation", ns)).call_method(
                    ua.NodeId("InspectionStation.Inspect", ns), ua.Variant("x", ua.VariantType.String))
            return results, endpoints, answer

        results, endpoints, answer = run(attempts(), 40)
        for label in ("anonymous", "wrong password", "wrong user"):
            assert isinstance(results[label], ua.UaStatusCodeError), (label, results[label])
        assert "BadIdentityTokenRejected" in type(results["anonymous"]).__name__ + str(results["anonymous"])
        assert "BadUserAccessDenied" in type(results["wrong password"]).__name__ + str(results["wrong password"])
        modes = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode) for e in endpoints}
        assert modes == {("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)}
        tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
        assert tokens == {ua.UserTokenType.UserName}
        assert answer[0] is False and "no live station" in answer[1]
        assert "sign-in as 'line' was refused" in caplog.text  # the log says who, never with what
        assert PASSWORD not in caplog.text and "nope" not in caplog.text
    finally:
        assert outputs.close(timeout=10)


def test_anonymous_only_when_switched_on(tmp_path, client_cert):
    port = free_port()
    store = ResultsStore(tmp_path / "results.db")
    outputs = LineOutputs(store, backoff=fast, on_trigger=lambda r: TriggerAnswer(True))
    try:
        outputs.apply(opcua_settings(tmp_path, port, allow_anonymous=True))
        started(outputs)
        server_cert = tmp_path / "server-cert" / "server_cert.der"

        async def anonymous():
            c = await secure_client(port, client_cert, server_cert, None, None)
            async with c:
                ns = await c.get_namespace_index(NAMESPACE)
                return await c.get_node(ua.NodeId("InspectionStation.State", ns)).read_value()

        assert run(anonymous()) == "not ready"
    finally:
        assert outputs.close(timeout=10)


def test_settings_refuse_to_start_without_a_user_unless_anonymous_is_allowed():
    assert OpcUaSettings(enabled=True).problems()  # no user, no anonymous: not started
    assert not OpcUaSettings(enabled=True, username="a", password="b").problems()
    assert not OpcUaSettings(enabled=True, allow_anonymous=True).problems()
    assert "password" not in repr(OpcUaSettings(username="a", password="hidden-pw")).replace("password=", "")
    assert "hidden-pw" not in repr(OpcUaSettings(username="a", password="hidden-pw"))
