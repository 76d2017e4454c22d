"""What a broker says about its version: the finalized features of an ``ApiVersions`` answer.

Kafka has no "version" request; what a KRaft cluster does say, to any client and before
authentication, is the feature levels it has finalized (``metadata.version``,
``kraft.version``, ...), which ``kafka-features.sh describe`` prints too, and how many
APIs it serves. One ``ApiVersions`` v3 request over the settings' transport (TLS with the
settings' CA and client certificate when the protocol is ``SSL``/``SASL_SSL``; SASL is
not needed: brokers answer ``ApiVersions`` before authentication).
"""

from __future__ import annotations

import io
import socket
import ssl
import struct
from dataclasses import dataclass

from orderproc.config import Settings

API_VERSIONS_KEY = 18
REQUEST_VERSION = 3
FINALIZED_FEATURES_TAG = 2


@dataclass(frozen=True, slots=True)
class BrokerVersion:
    """The broker's finalized feature levels and the number of APIs it serves."""

    features: dict[str, int]
    apis: int

    def describe(self) -> str:
        levels = ", ".join(f"{k} {v}" for k, v in sorted(self.features.items()))
        return f"{levels or 'no finalized features (not KRaft)'}; {self.apis} APIs"


def request_bytes(correlation_id: int = 1) -> bytes:
    """An ``ApiVersions`` v3 request, size-prefixed (request header v2)."""
    client = b"orderproc"
    header = struct.pack(">hhih", API_VERSIONS_KEY, REQUEST_VERSION, correlation_id, len(client))
    header += client + b"\x00"  # tagged fields
    body = _compact(b"orderproc") + _compact(b"1") + b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def parse_response(data: bytes) -> BrokerVersion:
    """An ``ApiVersions`` v3 response body after its size (response header v0).

    Raises:
        ValueError: the answer is an error, or not an ApiVersions v3 answer.
    """
    buf = io.BytesIO(data)
    _correlation, error = struct.unpack(">ih", buf.read(6))
    if error:
        raise ValueError(f"the broker answered ApiVersions with error code {error}")
    apis = _uvarint(buf) - 1
    for _ in range(max(apis, 0)):
        buf.read(6)
        _skip_tags(buf)
    buf.read(4)  # throttle time
    features: dict[str, int] = {}
    for _ in range(_uvarint(buf)):
        tag, size = _uvarint(buf), _uvarint(buf)
        field = io.BytesIO(buf.read(size))
        if tag != FINALIZED_FEATURES_TAG:
            continue
        for _ in range(_uvarint(field) - 1):
            name = field.read(_uvarint(field) - 1).decode("utf-8", "replace")
            max_level, _min_level = struct.unpack(">hh", field.read(4))
            _skip_tags(field)
            features[name] = max_level
    return BrokerVersion(features, max(apis, 0))


def broker_version(settings: Settings, timeout_s: float) -> BrokerVersion:
    """Ask the first bootstrap server.

    Raises:
        OSError: it cannot be reached (or TLS fails); ValueError: the answer is not one.
    """
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    host = host.strip("[]") or "localhost"
    with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
        sock: socket.socket = raw
        if settings.security_protocol.upper() in ("SSL", "SASL_SSL"):
            sock = _tls(settings).wrap_socket(raw, server_hostname=host)
        sock.sendall(request_bytes())
        size = struct.unpack(">i", _read(sock, 4))[0]
        return parse_response(_read(sock, size))


def _tls(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ssl_ca_location)
    if settings.ssl_certificate_location and settings.ssl_key_location:
        password = settings.ssl_key_password
        context.load_cert_chain(
            settings.ssl_certificate_location,
            settings.ssl_key_location,
            password.get_secret_value() if password else None,
        )
    return context


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ValueError("the broker closed the connection mid-answer")
        out += chunk
    return out


def _compact(value: bytes) -> bytes:
    return _varint_bytes(len(value) + 1) + value


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _uvarint(buf: io.BytesIO) -> int:
    shift = result = 0
    while True:
        raw = buf.read(1)
        if not raw:
            raise ValueError("truncated ApiVersions answer")
        result |= (raw[0] & 0x7F) << shift
        if not raw[0] & 0x80:
            return result
        shift += 7


def _skip_tags(buf: io.BytesIO) -> None:
    for _ in range(_uvarint(buf)):
        _uvarint(buf)
        buf.read(_uvarint(buf))
