"""A client of a Confluent-compatible schema registry (Confluent, Apicurio's ``ccompat``, Karapace).

Only what orderproc needs: schemas by id, a subject's versions, lookup, registration,
compatibility. No retries and no cache here: the callers decide (the consumer pauses on
an outage and caches writer schemas by id; the replay waits with backoff).

Every failure is one ``RegistryError`` line that never shows a password:

* ``RegistryUnavailableError``: refused connection, timeout, 5xx, 408/429 (an outage);
* ``RegistryRefusedError``: 401/403, an untrusted certificate (stop and fix settings);
* ``RegistryError`` with the registry's ``status``/``error_code`` for anything else
  (404 40401 subject not found, 40403 schema not found, 409 incompatible, 422 invalid).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from orderproc.config import Settings
from orderproc.errors import RegistryError, RegistryRefusedError, RegistryUnavailableError

SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_OUTAGE = frozenset({408, 429, 500, 502, 503, 504})


def redact(url: str) -> str:
    """``url`` without a password in it (``http://user:***@host/...``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Registered:
    """A schema as a subject holds it."""

    subject: str
    version: int
    schema_id: int
    text: str


class RegistryClient:
    """Requests to one registry, with the settings' credentials, CA and timeout."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_location: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"schema registry URL must be http(s)://host[:port][/path]: {redact(url)}"
            )
        # Credentials in the URL are moved to the Authorization header, never logged.
        username = username or parts.username
        password = password or parts.password
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self.username = username
        self.timeout_s = timeout_s
        self._headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._tls = ssl.create_default_context(cafile=ca_location) if ca_location else None

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        if not settings.schema_registry_url:
            raise RegistryError("no schema registry configured (ORDERPROC_SCHEMA_REGISTRY_URL)")
        password = settings.schema_registry_password
        return cls(
            settings.schema_registry_url,
            username=settings.schema_registry_username,
            password=password.get_secret_value() if password else None,
            ca_location=settings.schema_registry_ca_location,
            timeout_s=settings.schema_registry_timeout_s,
        )

    # -- the API -----------------------------------------------------------------------

    def schema(self, schema_id: int) -> tuple[str, str]:
        """The schema text and type (``AVRO``, ``JSON``, ``PROTOBUF``) of ``schema_id``."""
        body = self._request("GET", f"/schemas/ids/{schema_id}")
        return str(body["schema"]), str(body.get("schemaType") or "AVRO")

    def where_is(self, schema_id: int) -> list[tuple[str, int]]:
        """The (subject, version) pairs that hold ``schema_id``."""
        body = self._request("GET", f"/schemas/ids/{schema_id}/versions")
        return [(str(v["subject"]), int(v["version"])) for v in body]

    def versions(self, subject: str) -> list[int]:
        return [int(v) for v in self._request("GET", f"/subjects/{_q(subject)}/versions")]

    def version(self, subject: str, version: int | str = "latest") -> Registered:
        body = self._request("GET", f"/subjects/{_q(subject)}/versions/{version}")
        return Registered(subject, int(body["version"]), int(body["id"]), str(body["schema"]))

    def lookup(self, subject: str, text: str) -> Registered:
        """The version of ``subject`` that holds exactly this schema."""
        body = self._request("POST", f"/subjects/{_q(subject)}", {"schema": text})
        return Registered(subject, int(body["version"]), int(body["id"]), text)

    def register(self, subject: str, text: str) -> int:
        """Register ``text`` under ``subject`` (the same schema again: its id); the id."""
        return int(
            self._request("POST", f"/subjects/{_q(subject)}/versions", {"schema": text})["id"]
        )

    def compatible(self, subject: str, text: str, version: int | str = "latest") -> bool:
        path = f"/compatibility/subjects/{_q(subject)}/versions/{version}"
        return bool(self._request("POST", path, {"schema": text}).get("is_compatible"))

    def compatibility(self, subject: str) -> str:
        """The subject's compatibility level, else the registry's default."""
        try:
            body = self._request("GET", f"/config/{_q(subject)}")
        except RegistryError as exc:
            if exc.status != 404:
                raise
            body = self._request("GET", "/config")
        return str(body.get("compatibilityLevel") or body.get("compatibility") or "BACKWARD")

    def set_compatibility(self, subject: str, level: str) -> None:
        self._request("PUT", f"/config/{_q(subject)}", {"compatibility": level})

    def subjects(self) -> list[str]:
        return [str(s) for s in self._request("GET", "/subjects")]

    # -- one request ---------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers=self._headers
        )
        where = f"the schema registry at {self.url}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._tls) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc, where) from None
        except TimeoutError as exc:
            raise RegistryUnavailableError(
                f"{where} did not answer within {self.timeout_s:g} s"
            ) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise RegistryRefusedError(
                    f"untrusted registry certificate: {where}: {reason.verify_message}"
                ) from None
            if isinstance(reason, TimeoutError | socket.timeout):
                raise RegistryUnavailableError(
                    f"{where} did not answer within {self.timeout_s:g} s"
                ) from None
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
            raise RegistryUnavailableError(f"cannot reach {where}: {text}") from None
        except (ConnectionError, OSError) as exc:  # reset while reading the answer
            raise RegistryUnavailableError(f"cannot reach {where}: {exc}") from None
        except ValueError as exc:
            raise RegistryUnavailableError(f"{where} answered something that is not JSON") from exc

    def _refusal(self, exc: urllib.error.HTTPError, where: str) -> RegistryError:
        status = exc.code
        try:
            body = json.loads(exc.read() or b"{}")
        except (ValueError, OSError):
            body = {}
        body = body if isinstance(body, dict) else {}
        code = body.get("error_code") if isinstance(body.get("error_code"), int) else None
        message = str(body.get("message") or exc.reason or "").strip().splitlines()[0:1]
        said = message[0][:300] if message else ""
        who = f"user {self.username!r}" if self.username else "an anonymous client"
        if status == 401:
            return RegistryRefusedError(
                f"wrong credentials: {where} rejected {who} (401)", status=status
            )
        if status == 403:
            return RegistryRefusedError(
                f"not authorized: {where} refused {who} (403): {said}", status=status
            )
        if status in _OUTAGE:
            return RegistryUnavailableError(f"{where} answered {status}: {said}", status=status)
        return RegistryError(f"{where} answered {status}: {said}", status=status, error_code=code)


def _q(subject: str) -> str:
    return quote(subject, safe="")
