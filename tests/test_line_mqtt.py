"""The MQTT line output against a real Mosquitto broker on loopback: every result arrives once per
inspection id (after de-duplication), in order, across broker crashes (SIGKILL) while parts keep
being recorded, and across a station restart; the retained state and the last will; TLS with a
client certificate and a password; refusals in words that never carry the password."""
from __future__ import annotations

import datetime as dt
import logging
import shutil
import socket
import subprocess
import threading

import pytest

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (requirements.txt pins it: run `make test`)")

from core.store import ResultsStore  # noqa: E402
from station.context import StationSettings  # noqa: E402
from station.line_mqtt import MqttChannel  # noqa: E402
from station.line_settings import MqttSettings  # noqa: E402
from station.outbox import ChannelError, LineOutputs  # noqa: E402
from station.recording import RecordPolicy, record  # noqa: E402

from line_peers import IMAGE, SBIN_PATH, Consumer, Line, Mosquitto, fast, retained, wait_until  # noqa: E402
from station_helpers import make_inspection  # noqa: E402


def line_settings(port: int, **mqtt) -> StationSettings:
    s = StationSettings()
    s.mqtt = MqttSettings(enabled=True, host="127.0.0.1", port=port, station="bench-1", **mqtt)
    return s


def test_every_result_arrives_once_per_id_in_order_across_broker_crashes_and_a_station_restart(tmp_path):
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    consumer = None
    try:
        # the plant's historian: a persistent session, saved, so the broker knows it after a crash
        consumer = Consumer(broker.port, "inspection/bench-1/#", session="plant-historian")
        broker.save()
        settings = line_settings(broker.port)
        policy = RecordPolicy.from_settings(settings)
        assert policy.outbox == ("mqtt",)
        path = tmp_path / "results.db"
        store = ResultsStore(path)
        outputs = LineOutputs(store, backoff=fast)
        outputs.apply(settings)
        line = Line(store, policy).run()

        def arrived():
            return {m["inspection_id"] for m in consumer.results()}

        line.more(10)
        wait_until(lambda: len(arrived()) >= 5, 10, what="the first results at the consumer")
        wait_until(lambda: outputs.snapshot()[0].connected, 5, what="connected")

        broker.kill()  # mid-run: parts keep coming
        wait_until(lambda: not outputs.snapshot()[0].connected, 10, what="the station to notice")
        line.more(15)
        state = outputs.snapshot()[0]
        assert state.backlog >= 10 and "waiting, not connected" in state.words()
        assert state.last_error  # in words, e.g. "nothing answers at 127.0.0.1:..."

        broker.start()
        before = len(arrived())

        def flowing_and_caught_up():
            # the consumer has what the broker acknowledged (a broker killed with messages still queued
            # for its subscriber loses them: that loss would be the broker's, not the station's)
            got = arrived()
            return len(got) > before and store.outbox_delivered_count("mqtt") <= len(got)

        wait_until(flowing_and_caught_up, 20, every=0.002, what="the backlog to flow to the consumer")
        broker.kill()  # again, while the backlog flows (a result may be in flight: it goes again)
        line.more(5)
        broker.start()
        line.more(10)
        wait_until(lambda: set(line.ids[:-3]) <= arrived(), 20, what="the backlog after the broker came back")

        # the broker crashes again, and the station stops while results still wait
        broker.kill()
        line.more(10)
        line.halt()
        assert outputs.close()
        store.close()
        first_run = list(line.ids)

        store = ResultsStore(path)  # the station starts again, on the same results store
        assert store.outbox_backlog("mqtt") >= 10
        outputs = LineOutputs(store, backoff=fast)
        outputs.apply(settings)
        broker.start()
        line.store = store
        for _ in range(5):
            line.part()
        wait_until(lambda: set(line.ids) <= arrived(), 20, what="every result after the restart")
        wait_until(lambda: store.outbox_backlog("mqtt") == 0, 5, what="an empty outbox")

        messages = consumer.results()
        ids = [m["inspection_id"] for m in messages]
        unique = list(dict.fromkeys(ids))
        assert unique == line.ids == sorted(line.ids) and len(line.ids) > len(first_run)  # once each, in order
        first = {}
        for m in messages:  # a repeat is the very same message
            assert first.setdefault(m["inspection_id"], m) == m
        assert [first[i]["seq"] for i in unique] == list(range(1, len(unique) + 1))  # no gap
        assert all(first[i]["verdict"] == line.verdicts[i] for i in unique)
        assert all(m["schema"] == 1 and m["station"] == "bench-1" for m in messages)
        assert retained(broker.port, "inspection/bench-1/state") == b"online"
        assert outputs.close()
        assert retained(broker.port, "inspection/bench-1/state") == b"offline"  # a clean stop says so
        store.close()
    finally:
        if consumer is not None:
            consumer.close()
        broker.stop()


def test_the_last_will_says_offline_when_the_station_vanishes(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        cfg = MqttSettings(enabled=True, host="127.0.0.1", port=broker.port, topic_prefix="plant/line3",
                           station="bench-2", keepalive_s=5)
        channel = MqttChannel(cfg)
        lost = threading.Event()
        channel.on_lost = lost.set
        channel.connect()
        assert retained(broker.port, "plant/line3/bench-2/state") == b"online"
        channel._client.socket().shutdown(socket.SHUT_RDWR)  # gone without a goodbye
        assert lost.wait(5) and not channel.connected
        wait_until(lambda: retained(broker.port, "plant/line3/bench-2/state") == b"offline", 10,
                   what="the last will")
        channel.close(clean=False)
    finally:
        broker.stop()


def test_a_broker_that_is_not_there_is_named_in_words(tmp_path):
    from line_peers import free_port

    port = free_port()
    channel = MqttChannel(MqttSettings(enabled=True, host="127.0.0.1", port=port))
    with pytest.raises(ChannelError, match=f"nothing answers at 127.0.0.1:{port}"):
        channel.connect()
    channel.close(clean=False)


# -- TLS, client certificate, user name and password -------------------------------------------

def _certificates(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k, name):
        (folder / name).write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))

    def cert(subject, k, issuer, issuer_key, ca=False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, encipher_only=False,
                                              decipher_only=False), critical=True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
        else:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write_cert(c, name):
        (folder / name).write_bytes(c.public_bytes(serialization.Encoding.PEM))

    for prefix in ("ca", "other-ca"):
        ca_key = key()
        write_key(ca_key, f"{prefix}.key")
        write_cert(cert(f"test {prefix}", ca_key, f"test {prefix}", ca_key, ca=True), f"{prefix}.pem")
        if prefix == "ca":
            the_ca_key = ca_key
    server_key, client_key = key(), key()
    write_key(server_key, "server.key")
    write_key(client_key, "client.key")
    write_cert(cert("localhost", server_key, "test ca", the_ca_key,
                    san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                    usage=[ExtendedKeyUsageOID.SERVER_AUTH]), "server.pem")
    write_cert(cert("bench-1", client_key, "test ca", the_ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH]),
               "client.pem")


def test_tls_with_a_client_certificate_and_a_password_and_refusals_in_words(tmp_path, caplog):
    pytest.importorskip("cryptography")
    passwd = shutil.which("mosquitto_passwd", path=SBIN_PATH)
    if passwd is None:
        pytest.skip("mosquitto_passwd (Debian's mosquitto package) is not installed")
    certs = tmp_path / "certs"
    certs.mkdir()
    _certificates(certs)
    subprocess.run([passwd, "-b", "-c", str(certs / "passwords"), "station", "Pa55-w0rd!"], check=True,
                   capture_output=True)
    (certs / "passwords").chmod(0o600)
    broker = Mosquitto(tmp_path / "broker", extra="\n".join([
        f"cafile {certs / 'ca.pem'}", f"certfile {certs / 'server.pem'}", f"keyfile {certs / 'server.key'}",
        "require_certificate true", "allow_anonymous false", f"password_file {certs / 'passwords'}"])).start()
    consumer = None
    try:
        tls = dict(ca_certs=str(certs / "ca.pem"), certfile=str(certs / "client.pem"), keyfile=str(certs / "client.key"))
        consumer = Consumer(broker.port, "inspection/#", username="station", password="Pa55-w0rd!", **tls)
        good = dict(tls=True, ca_file=str(certs / "ca.pem"), cert_file=str(certs / "client.pem"),
                    key_file=str(certs / "client.key"), username="station", password="Pa55-w0rd!")
        settings = line_settings(broker.port, **good)
        with ResultsStore(tmp_path / "results.db") as store:
            outputs = LineOutputs(store, backoff=fast)
            outputs.apply(settings)
            iid = record(store, None, make_inspection("FAIL"), IMAGE, RecordPolicy.from_settings(settings)).inspection_id
            wait_until(lambda: [m["inspection_id"] for m in consumer.results()] == [iid], 10, what="the TLS result")
            assert consumer.results()[0]["verdict"] == "FAIL"
            assert outputs.close()

        def refusal(**changes) -> str:
            cfg = MqttSettings(enabled=True, host="127.0.0.1", port=broker.port, **{**good, **changes})
            channel = MqttChannel(cfg, ack_timeout_s=5)
            try:
                with pytest.raises(ChannelError) as err:
                    channel.connect()
            finally:
                channel.close(clean=False)
            return str(err.value)

        with caplog.at_level(logging.DEBUG):
            wrong_password = refusal(password="not-it-at-all")
            untrusted = refusal(ca_file=str(certs / "other-ca.pem"))
            missing = refusal(ca_file=str(tmp_path / "nowhere.pem"))
        assert "refused the connection" in wrong_password and "not-it-at-all" not in wrong_password
        assert "does not trust" in untrusted
        assert "TLS files cannot be used" in missing
        assert "Pa55-w0rd!" not in caplog.text and "not-it-at-all" not in caplog.text
    finally:
        if consumer is not None:
            consumer.close()
        broker.stop()
