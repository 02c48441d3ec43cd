"""The MQTT line output (paho-mqtt 2.x): one JSON message per inspection, QoS 1, in order.

``<prefix>/<station>/result``: the message of ``station.line_message`` (schema 1), not retained.
``<prefix>/<station>/state``: ``online`` (retained) once connected, ``offline`` (retained) on a
clean stop, and the same ``offline`` as the last will when the station vanishes.

A fresh client per connection (MQTT 3.1.1, clean session, paho's own reconnecting off): the
delivery worker (``station.outbox``) decides when to try again, and nothing paho still holds from
a lost connection is sent behind its back. Each result is published and waited for (PUBACK)
before the next: strictly in order, at least once. TLS with a CA file (else the system's
authorities) and an optional client certificate; user name and password. The password is never
logged and never part of an error message. Qt-free.
"""
from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from typing import Any, Callable

from core.store import OutboxItem
from station.line_message import item_payload
from station.line_settings import MqttSettings
from station.outbox import ChannelError

log = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"
ACK_TIMEOUT_S = 10.0  # a broker that takes longer to acknowledge a result is taken as gone


def _socket_words(exc: BaseException, peer: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker {peer} has a certificate this station does not trust ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with the broker {peer} failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing answers at {peer} (connection refused): is the broker running?"
    if isinstance(exc, TimeoutError):
        return f"the broker {peer} does not answer (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"the broker {peer} cannot be reached ({exc.strerror})"
    return f"the broker {peer} cannot be reached ({type(exc).__name__}: {exc})"


class MqttChannel:
    """See the module docstring; used by one delivery worker thread."""

    name = "mqtt"
    label = "MQTT"

    def __init__(self, cfg: MqttSettings, ack_timeout_s: float = ACK_TIMEOUT_S):
        try:
            import paho.mqtt.client  # noqa: F401 - fail here, in words, when it is missing
        except ImportError as exc:
            raise ChannelError("the MQTT library (paho-mqtt) is not installed") from exc
        self.cfg = cfg
        self.station = cfg.station_name
        self.result_topic = cfg.result_topic
        self.state_topic = cfg.state_topic
        self.peer = cfg.peer
        self.ack_timeout_s = ack_timeout_s
        self.on_lost: Callable[[], None] | None = None
        self.lost_reason = ""
        self._client: Any = None
        self._lost = threading.Event()

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    def connect(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.cfg
        # one id per station: a restarted station takes its old session over at once
        client_id = "inspection-station-" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.station)[:40]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True, protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        client.connect_timeout = self.ack_timeout_s
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                               keyfile=cfg.key_file or None)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ChannelError(f"the TLS files cannot be used ({getattr(exc, 'strerror', None) or exc})") from exc
        client.will_set(self.state_topic, OFFLINE, qos=1, retain=True)
        answered = threading.Event()
        answer: dict[str, Any] = {}
        lost = threading.Event()
        self._lost = lost

        def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
            answer["rc"] = reason_code
            answered.set()

        def on_disconnect(_client, _userdata, _flags, reason_code, _properties) -> None:
            if not lost.is_set():
                self.lost_reason = f"the connection to the broker {self.peer} was lost ({reason_code})"
                lost.set()
            answered.set()
            if self.on_lost is not None:
                self.on_lost()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        try:
            client.connect(cfg.host, int(cfg.port), keepalive=max(5, int(cfg.keepalive_s)))
        except (OSError, ssl.SSLError, ValueError) as exc:
            _close_quietly(client)
            raise ChannelError(_socket_words(exc, self.peer)) from exc
        client.loop_start()
        if not answered.wait(self.ack_timeout_s) or "rc" not in answer:
            _close_quietly(client)
            raise ChannelError(f"the broker {self.peer} accepted the connection but never answered it")
        rc = answer["rc"]
        if rc.is_failure:
            _close_quietly(client)
            raise ChannelError(f"the broker {self.peer} refused the connection: {rc}")
        self._client = client
        self._publish(self.state_topic, ONLINE, retain=True)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        import paho.mqtt.client as mqtt

        client = self._client
        if client is None:
            raise ChannelError(f"not connected to the broker {self.peer}")
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            raise ChannelError(self.lost_reason or f"the broker {self.peer} cannot take the message "
                               f"({mqtt.error_string(info.rc)})")
        deadline = time.monotonic() + self.ack_timeout_s
        while not info.is_published():
            if self._lost.is_set():
                raise ChannelError(self.lost_reason)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelError(f"the broker {self.peer} did not acknowledge a message within "
                                   f"{self.ack_timeout_s:.0f} s")
            try:
                info.wait_for_publish(min(0.2, left))
            except (RuntimeError, ValueError) as exc:
                raise ChannelError(self.lost_reason or f"the message could not be sent ({exc})") from exc

    def deliver(self, item: OutboxItem) -> None:
        self._publish(self.result_topic, item_payload(item, self.station))

    def tick(self) -> float:
        return 3600.0  # paho's network thread keeps the connection alive

    def close(self, clean: bool) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if clean and not self._lost.is_set():
            try:
                info = client.publish(self.state_topic, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(2.0)
            except Exception:  # noqa: BLE001 - saying goodbye is a courtesy; the will says it anyway
                log.debug("publishing offline failed", exc_info=True)
        _close_quietly(client)


def _close_quietly(client: Any) -> None:
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001
        pass
    try:
        client.loop_stop()
    except Exception:  # noqa: BLE001
        pass
