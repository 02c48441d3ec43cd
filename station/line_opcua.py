"""The OPC UA line output (asyncua): the station as an OPC UA server, fed in order by the outbox.

Under ``Objects`` one ``InspectionStation`` object (namespace :data:`NAMESPACE`) holds the last
result and the station's state (node names in docs/LINE_INTEGRATION.md); a result is "delivered"
once its values are written to the nodes, ``InspectionId`` last (a client that watches it reads a
consistent set). Its ``Inspect`` method asks for one inspection through the station's trigger
hook (``LineOutputs.request_trigger``) and returns (accepted, reason).

Secure by default: the only endpoint is Basic256Sha256 with SignAndEncrypt; users sign in with the
user name and password of the settings (the password is never logged); anonymous access and the
unsecured (None) endpoint only when switched on. The server certificate is self-signed, made on the
first start (``cryptography``, via asyncua's helpers) in ``cert_dir`` (the config folder's
``opcua``), and kept: clients trust it once. It listens on the configured interface only
(127.0.0.1 by default), port 4840.

The server runs in a thread of its own with its own event loop: the delivery worker (and anyone
else) only hands it coroutines and waits for them with a timeout; the UI thread never waits on it.
The ``Inspect`` call runs the (blocking) hook in the loop's executor, so the server keeps serving.
Qt-free.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import socket
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable

from core.store import OutboxItem
from station.line_message import result_message
from station.line_settings import OpcUaSettings, default_station_name
from station.outbox import NO_TRIGGER, ChannelError, TriggerAnswer, TriggerHook, TriggerRequest

log = logging.getLogger(__name__)

NAMESPACE = "urn:inspection-station:line"
APP_URI = "urn:inspection-station:server"
CERT_FILE, KEY_FILE = "server_cert.der", "server_key.pem"
START_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 10.0
COUNTERS = {"PASS": "CountOK", "FAIL": "CountNG", "REVIEW": "CountREVIEW"}


def NodeId(*args: Any) -> Any:  # noqa: N802 - asyncua's NodeId, without its strict argument types
    from asyncua import ua

    return ua.NodeId(*args)


def ensure_certificate(folder: str | os.PathLike, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """The server's certificate (DER) and private key (PEM, owner-only), made once if missing."""
    folder = Path(folder)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate

    folder.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(APP_URI),
                                     x509.DNSName(socket.gethostname() or "localhost"), x509.DNSName("localhost")]
    for h in {host, "127.0.0.1"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = generate_self_signed_app_certificate(key, f"Inspection station {default_station_name()}",
                                                {"organizationName": "Inspection station"}, names,
                                                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                                days=3650)
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(dump_private_key_as_pem(key))
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(Encoding.DER))
    os.replace(tmp_cert, cert_path)
    log.info("OPC UA: a self-signed server certificate was made in %s", folder)
    return cert_path, key_path


class _Users:
    """asyncua's user manager: the one user of the settings (constant-time compare); anonymous
    sessions only when allowed (asyncua refuses the anonymous token type before, too)."""

    def __init__(self, cfg: OpcUaSettings):
        self._name = cfg.username
        self._password = cfg.password.encode("utf-8")
        self._anonymous = bool(cfg.allow_anonymous)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None and password is None:  # an anonymous token (X509 tokens are not offered)
            return User(role=UserRole.User, name="anonymous") if self._anonymous else None
        if username is None or not self._name:
            return None
        given = (password or "").encode("utf-8") if isinstance(password, str) else bytes(password or b"")
        ok = hmac.compare_digest(username.encode("utf-8"), self._name.encode("utf-8")) and \
            hmac.compare_digest(given, self._password) and bool(self._password)
        if not ok:
            log.warning("OPC UA: a sign-in as %r was refused (wrong user name or password)", username)
            return None
        return User(role=UserRole.User, name=username)


class OpcUaChannel:
    """See the module docstring; driven by one delivery worker thread (``set_outputs``,
    ``set_trigger``: any thread)."""

    name = "opcua"
    label = "OPC UA"

    def __init__(self, cfg: OpcUaSettings):
        try:
            import asyncua  # noqa: F401 - fail here, in words, when it is missing
        except ImportError as exc:
            raise ChannelError("the OPC UA library (asyncua) is not installed") from exc
        if not cfg.cert_dir:
            from core import paths

            cfg = OpcUaSettings(**{**cfg.__dict__, "cert_dir": str(paths.config_dir() / "opcua")})
        self.cfg = cfg
        self.peer = cfg.peer
        self.endpoint = cfg.endpoint
        self.station = default_station_name()
        self.on_lost: Callable[[], None] | None = None
        self.lost_reason = ""
        self._trigger: TriggerHook | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._nodes: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        self._models_obj: Any = None
        self._ns = 0
        self._lock = threading.Lock()
        self._wanted = "not ready"
        self._written_state: str | None = None
        self._counts = {k: 0 for k in COUNTERS}
        self._last_id = 0

    # -- any thread ------------------------------------------------------------------------
    def set_trigger(self, hook: TriggerHook | None) -> None:
        self._trigger = hook

    def set_outputs(self, ready: bool, busy: bool) -> None:
        with self._lock:
            self._wanted = "busy" if busy else ("ready" if ready else "not ready")

    @property
    def connected(self) -> bool:
        return self._server is not None and self._thread is not None and self._thread.is_alive()

    # -- the worker's thread ---------------------------------------------------------------
    def _run(self, coro: Any, timeout: float, what: str) -> Any:
        loop = self._loop
        if loop is None or self._server is None and what != "starting":
            coro.close()
            raise ChannelError(self.lost_reason or "the OPC UA server is not running")
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(timeout)
        except FutureTimeout as exc:
            fut.cancel()
            raise ChannelError(f"the OPC UA server did not finish {what} within {timeout:.0f} s") from exc

    def connect(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-server", daemon=True)
        self._thread.start()
        try:
            self._server = self._run(self._start(), START_TIMEOUT_S, "starting")
        except ChannelError:
            self._stop_loop()
            raise
        except OSError as exc:
            self._stop_loop()
            raise ChannelError(f"the OPC UA server cannot listen on {self.peer} "
                               f"({exc.strerror or exc}): is the port taken or the address not this computer's?") from exc
        except Exception as exc:  # noqa: BLE001 - say it in words
            self._stop_loop()
            log.debug("OPC UA start failed", exc_info=True)
            raise ChannelError(f"the OPC UA server did not start ({type(exc).__name__}: {exc})") from exc
        self._written_state = None
        log.info("OPC UA server on %s (security: %s; anonymous %s)", self.endpoint,
                 "Basic256Sha256 SignAndEncrypt" + (" and None" if self.cfg.allow_unsecured else ""),
                 "allowed" if self.cfg.allow_anonymous else "refused")

    async def _start(self) -> Any:
        from asyncua import Server, ua

        cfg = self.cfg
        for name in ("asyncua", "asyncua.server", "asyncua.uaprotocol"):
            logging.getLogger(name).setLevel(logging.WARNING)
        cert, key = await asyncio.get_running_loop().run_in_executor(None, ensure_certificate, cfg.cert_dir, cfg.host)
        server = Server(user_manager=_Users(cfg))  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"Inspection station {self.station}")
        await server.set_application_uri(APP_URI)
        policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        if cfg.allow_unsecured:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken]
        if cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        ns = self._ns = await server.register_namespace(NAMESPACE)
        obj = await server.nodes.objects.add_object(NodeId("InspectionStation", ns), ua.QualifiedName("InspectionStation", ns))
        V = ua.VariantType
        spec: list[tuple[str, Any, Any]] = [
            ("State", "not ready", V.String), ("LastVerdict", "", V.String), ("FusedScore", 0.0, V.Double),
            ("Reasons", [], V.String), ("PartId", "", V.String), ("InspectionId", 0, V.Int64),
            ("Sequence", 0, V.Int64), ("RecipeProduct", "", V.String), ("RecipeVersion", 0, V.Int32),
            ("LastTime", "", V.String), ("CountOK", 0, V.UInt32), ("CountNG", 0, V.UInt32),
            ("CountREVIEW", 0, V.UInt32)]
        self._nodes = {}
        for name, value, vtype in spec:
            node = await obj.add_variable(NodeId(f"InspectionStation.{name}", ns), ua.QualifiedName(name, ns),
                                          ua.Variant(value, vtype))
            if name == "Reasons":
                await node.write_value_rank(1)
            self._nodes[name] = node
        self._models_obj = await obj.add_object(NodeId("InspectionStation.Models", ns), ua.QualifiedName("Models", ns))
        self._models = {}
        in_arg = ua.Argument(Name="PartId", DataType=NodeId(ua.ObjectIds.String), ValueRank=-1,
                             Description=ua.LocalizedText("the line's id for the part (may be empty)"))
        out_args = [ua.Argument(Name="Accepted", DataType=NodeId(ua.ObjectIds.Boolean), ValueRank=-1),
                    ua.Argument(Name="Reason", DataType=NodeId(ua.ObjectIds.String), ValueRank=-1)]
        await obj.add_method(NodeId("InspectionStation.Inspect", ns), ua.QualifiedName("Inspect", ns),
                             self._inspect, [in_arg], out_args)
        await server.start()
        return server

    async def _inspect(self, _parent: Any, part_id: Any = None) -> list[Any]:
        from asyncua import ua

        pid = str(getattr(part_id, "Value", part_id) or "")[:200]
        hook = self._trigger
        if hook is None:
            answer = TriggerAnswer(False, NO_TRIGGER)
        else:
            answer = await asyncio.get_running_loop().run_in_executor(None, hook, TriggerRequest("opcua", pid))
        log.info("OPC UA Inspect%s: %s", f" for part {pid}" if pid else "",
                 "accepted" if answer.accepted else f"refused ({answer.reason})")
        return [ua.Variant(bool(answer.accepted), ua.VariantType.Boolean), ua.Variant(answer.reason, ua.VariantType.String)]

    async def _write_result(self, msg: dict[str, Any], count: bool) -> None:
        from asyncua import ua

        V = ua.VariantType
        n = self._nodes
        if count and msg["verdict"] in self._counts:
            self._counts[msg["verdict"]] += 1
        for name, score in (msg.get("models") or {}).items():
            node = self._models.get(name)
            if node is None:
                node = await self._models_obj.add_variable(NodeId(f"InspectionStation.Models.{name}", self._ns),
                                                           ua.QualifiedName(name, self._ns), ua.Variant(0.0, V.Double))
                self._models[name] = node
            await node.write_value(ua.Variant(float(score["score"]) if score["score"] is not None else float("nan"),
                                              V.Double))
        fused = msg["fused"]["score"]
        await n["LastVerdict"].write_value(ua.Variant(msg["verdict"] or "", V.String))
        await n["FusedScore"].write_value(ua.Variant(float(fused) if fused is not None else float("nan"), V.Double))
        await n["Reasons"].write_value(ua.Variant([str(r) for r in msg["reasons"]], V.String))
        await n["PartId"].write_value(ua.Variant(msg["part_id"], V.String))
        await n["Sequence"].write_value(ua.Variant(int(msg["seq"] or 0), V.Int64))
        await n["RecipeProduct"].write_value(ua.Variant(msg["recipe"]["product"] or "", V.String))
        await n["RecipeVersion"].write_value(ua.Variant(int(msg["recipe"]["version"]), V.Int32))
        await n["LastTime"].write_value(ua.Variant(str(msg["time"] or ""), V.String))
        for verdict, node_name in COUNTERS.items():
            await n[node_name].write_value(ua.Variant(self._counts[verdict], V.UInt32))
        await n["InspectionId"].write_value(ua.Variant(int(msg["inspection_id"]), V.Int64))  # last: all is there

    def deliver(self, item: OutboxItem) -> None:
        msg = result_message(item.record, station=self.station, seq=item.seq)
        fresh = item.inspection_id > self._last_id  # a repeat (at least once) is not counted twice
        self._run(self._write_result(msg, fresh), WRITE_TIMEOUT_S, f"writing result {item.inspection_id}")
        self._last_id = max(self._last_id, item.inspection_id)

    def tick(self) -> float:
        if not self.connected:
            raise ChannelError(self.lost_reason or "the OPC UA server stopped")
        with self._lock:
            wanted = self._wanted
        if wanted != self._written_state:
            from asyncua import ua

            self._run(self._nodes["State"].write_value(ua.Variant(wanted, ua.VariantType.String)), WRITE_TIMEOUT_S,
                      "writing the state")
            self._written_state = wanted
        return 3600.0

    def close(self, clean: bool) -> None:
        server, self._server = self._server, None
        if server is not None and self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(server.stop(), self._loop).result(5.0)
            except Exception:  # noqa: BLE001 - stopping is best effort; the loop goes anyway
                log.debug("stopping the OPC UA server failed", exc_info=True)
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop, self._thread = None, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5.0)
        if not loop.is_running():
            loop.close()
