"""The MQTT line output (paho-mqtt 2.x): one JSON message per inspection, QoS 1, in order.

``<prefix>/<station>/result``: the message of ``station.line_message`` (schema 1), not retained.
``<prefix>/<station>/state``: ``online`` (retained) once connected, ``offline`` (retained) on a
clean stop, and the same ``offline`` as the last will when the station vanishes.

A fresh client per connection (MQTT 3.1.1, clean session, paho's own reconnecting off): the
delivery worker (``station.outbox``) decides when to try again, and nothing paho still holds from
a lost connection is sent behind its back. Each result is published and waited for (PUBACK)
before the next: strictly in order, at least once. TLS with a CA file (else the system's
authorities) and an optional client certificate; user name and password. The password is never
logged and never part of an error message.

Commands (``MqttSettings.commands``, off by default): ``<prefix>/<station>/cmd/inspect`` (QoS 1,
subscribed before ``online`` is published; payload empty or a JSON object with an optional
``part_id`` and ``request_id``) asks for one inspection through the station's trigger hook
(``LineOutputs.request_trigger``); the answer goes to ``<prefix>/<station>/cmd/ack`` (QoS 1, not
retained): accepted or refused with the reason. The inspection itself comes as the normal result
message. Paho's network thread only queues a command; the delivery worker's thread asks the hook
and publishes the answer (``tick``), between results. A retained command is refused (it would
trigger again at every reconnect). Qt-free.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from core.store import OutboxItem
from station.line_message import item_payload
from station.line_settings import MqttSettings
from station.outbox import NO_TRIGGER, ChannelError, TriggerAnswer, TriggerHook, TriggerRequest

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
        self.command_topic = cfg.command_topic
        self.ack_topic = cfg.ack_topic
        self._trigger: TriggerHook | None = None
        self._commands: queue.SimpleQueue[tuple[bytes, bool]] = queue.SimpleQueue()

    def set_trigger(self, hook: TriggerHook | None) -> None:
        """The station's trigger hook (``LineOutputs.request_trigger``): what a command asks."""
        self._trigger = hook

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

        subscribed = threading.Event()

        def on_message(_client, _userdata, msg) -> None:  # paho's thread: queue it, the worker answers
            if msg.topic == self.command_topic:
                self._commands.put((bytes(msg.payload), bool(msg.retain)))
                if self.on_lost is not None:
                    self.on_lost()  # wakes the delivery worker (its tick answers the command)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_subscribe = lambda *_a: subscribed.set()
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
        if cfg.commands:
            client.subscribe(self.command_topic, qos=1)
            if not subscribed.wait(self.ack_timeout_s):
                _close_quietly(client)
                self._client = None
                raise ChannelError(f"the broker {self.peer} did not confirm the subscription to {self.command_topic}")
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
        while True:  # commands that came in: asked and answered in arrival order
            try:
                payload, retain = self._commands.get_nowait()
            except queue.Empty:
                break
            self._answer(payload, retain)
        return 3600.0  # paho's network thread keeps the connection alive

    def _answer(self, payload: bytes, retain: bool) -> None:
        part_id, request_id, answer = "", None, None
        if retain:
            answer = TriggerAnswer(False, "a retained command is not taken (it would inspect again at every "
                                          "reconnect): publish it without the retain flag")
        else:
            try:
                body = json.loads(payload.decode("utf-8")) if payload.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
                part_id = str(body.get("part_id") or "")[:200]
                request_id = body.get("request_id")
            except (ValueError, UnicodeDecodeError) as exc:
                answer = TriggerAnswer(False, f"the command is not a JSON object ({exc})")
        if answer is None:
            hook = self._trigger
            answer = hook(TriggerRequest("mqtt", part_id)) if hook is not None else TriggerAnswer(False, NO_TRIGGER)
        log.info("MQTT inspect command%s: %s%s", f" for part {part_id}" if part_id else "",
                 "accepted" if answer.accepted else "refused", "" if answer.accepted else f" ({answer.reason})")
        ack = {"schema": 1, "station": self.station, "command": "inspect", "part_id": part_id or None,
               "request_id": request_id, "accepted": bool(answer.accepted), "reason": answer.reason,
               "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        self._publish(self.ack_topic, json.dumps(ack, ensure_ascii=False, default=str).encode("utf-8"))

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
