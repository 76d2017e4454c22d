"""Users, passwords and ACLs of the secured dev broker (SASL_SSL, SCRAM-SHA-512).

Three principals:

* ``admin``: a super user. The broker logs in to itself as admin (its only
  listener is SASL_SSL, also used between broker and itself), and the devstack
  uses it to create the topics, the ``orderproc`` user and its ACLs.
* ``orderproc``: what the workers, the drain and the replay run as. Its ACLs
  (``app_acls``) allow exactly its topics, groups and transactional ids.
* ``controller``: a static PLAIN user on the loopback controller listener, so that
  no anonymous local process can talk to the controller (which would let it create
  ACLs: an anonymous principal there would have to be a super user).

Passwords are random, made once and kept in ``credentials.json`` (0600); they are
never printed except the ``orderproc`` password, which clients need.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from devstack.kafka_config import HOST
from devstack.settings import DevstackError
from devstack.tls import TlsFiles, write_private
from orderproc.config import Settings
from orderproc.kafka.clients import Admin, drain_group

ADMIN_USER = "admin"
APP_USER = "orderproc"
CONTROLLER_USER = "controller"
MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
TRANSACTIONAL_ID_PREFIX = "orderproc-"
"""Transactional ids the ``orderproc`` principal may use (``orderproc-<group>-<instance>``...)."""

_ACL_WAIT_S = 15.0


@dataclass(frozen=True)
class Credentials:
    """The secured broker's passwords, by user."""

    admin: str
    app: str
    controller: str

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """The passwords kept in ``path``; made (and written 0600) on first use."""
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                return cls(data[ADMIN_USER], data[APP_USER], data[CONTROLLER_USER])
            except (ValueError, KeyError, TypeError) as exc:
                raise DevstackError(
                    f"{path} is unreadable ({type(exc).__name__}); remove the secured devstack "
                    f"folder {path.parent} to start it afresh"
                ) from exc
        # URL-safe tokens: no quote, comma or '=' to escape in JAAS lines or --add-scram.
        made = cls(*(secrets.token_urlsafe(24) for _ in range(3)))
        payload = {ADMIN_USER: made.admin, APP_USER: made.app, CONTROLLER_USER: made.controller}
        write_private(path, (json.dumps(payload, indent=2) + "\n").encode())
        return made

    def secrets(self) -> tuple[str, ...]:
        """Every password, for redacting text that might echo one."""
        return (self.admin, self.app, self.controller)


def server_overrides(
    *, port: int, controller_port: int, tls: TlsFiles, creds: Credentials
) -> dict[str, str]:
    """server.properties keys of the secured broker, laid over the plain broker's."""
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{creds.admin}";'
    )
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{CONTROLLER_USER}" password="{creds.controller}" '
        f'user_{CONTROLLER_USER}="{creds.controller}";'
    )
    return {
        # One SASL_SSL listener for clients and for the broker's calls to itself
        # (transaction markers, AddPartitionsToTxn verification): it logs in as admin
        # and must trust its own certificate, hence the truststore.
        "listeners": f"SASL_SSL://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{HOST}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        # SCRAM users live in the metadata log, which the controller listener serves:
        # it authenticates with a static PLAIN user instead.
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_USER};User:{CONTROLLER_USER}",
    }


def client_config(bootstrap: str, tls: TlsFiles, user: str, password: str) -> dict[str, Any]:
    """librdkafka keys of a SASL_SSL client of the secured broker."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(tls.ca),
    }


def client_settings(settings: Settings, bootstrap: str, tls: TlsFiles, user: str,
                    password: str) -> Settings:  # fmt: skip
    """``settings`` pointed at the secured broker as ``user``."""
    return settings.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_username": user,
            "sasl_password": SecretStr(password),
            "ssl_ca_location": str(tls.ca),
        }
    )


def client_env(bootstrap: str, tls: TlsFiles, creds: Credentials) -> dict[str, str]:
    """The ``ORDERPROC_*`` settings of a client running as ``orderproc``."""
    return {
        "ORDERPROC_BOOTSTRAP_SERVERS": bootstrap,
        "ORDERPROC_SECURITY_PROTOCOL": "SASL_SSL",
        "ORDERPROC_SASL_MECHANISM": MECHANISM,
        "ORDERPROC_SASL_USERNAME": APP_USER,
        "ORDERPROC_SASL_PASSWORD": creds.app,
        "ORDERPROC_SSL_CA_LOCATION": str(tls.ca),
    }


def export_lines(env: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines a shell can ``eval``."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


# -- ACLs ------------------------------------------------------------------------------

_T, _G, _X = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
_LITERAL, _PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
_R, _W = AclOperation.READ, AclOperation.WRITE  # each implies DESCRIBE


def allow(
    principal: str, rtype: ResourceType, name: str, pattern: ResourcePatternType, op: AclOperation
) -> AclBinding:
    """One ALLOW binding for ``principal`` (``User:<name>``) from any host."""
    return AclBinding(rtype, name, pattern, principal, "*", op, AclPermissionType.ALLOW)


def app_acls(settings: Settings, principal: str = f"User:{APP_USER}") -> list[AclBinding]:
    """What ``orderproc`` may do: read and write its topics, use its groups and txn ids.

    Topics: the orders topic, every retry topic (by prefix, so ``max_attempts`` may
    grow) and the DLQ, whose ``max.message.bytes`` the consumer reads to size dead
    letters (DESCRIBE_CONFIGS). Groups: the consumer's, the DLQ monitor's and the
    drain's. Transactional ids: the ``orderproc-`` prefix. No CREATE: the admin
    creates the topics.
    """
    topics = [
        (settings.orders_topic, _LITERAL),
        (f"{settings.retry_topic_prefix}.", _PREFIXED),
        (settings.dlq_topic, _LITERAL),
    ]
    groups = [settings.consumer_group, settings.dlq_group, drain_group(settings)]
    return [
        *(allow(principal, _T, name, pat, op) for name, pat in topics for op in (_R, _W)),
        allow(principal, _T, settings.dlq_topic, _LITERAL, AclOperation.DESCRIBE_CONFIGS),
        *(allow(principal, _G, group, _LITERAL, _R) for group in groups),
        allow(principal, _X, TRANSACTIONAL_ID_PREFIX, _PREFIXED, _W),
        allow(principal, _X, TRANSACTIONAL_ID_PREFIX, _PREFIXED, AclOperation.DESCRIBE),
    ]


def upsert_user(admin: Admin, user: str, password: str) -> None:
    """Create ``user`` or set its SCRAM-SHA-512 password."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upsert = UserScramCredentialUpsertion(user, info, password.encode())
    try:
        admin.alter_user_scram_credentials([upsert])[user].result()
    except KafkaException as exc:
        raise DevstackError(f"cannot set the password of {user}: {exc.args[0].str()}") from exc


def grant(admin: Admin, bindings: Iterable[AclBinding], timeout_s: float = _ACL_WAIT_S) -> None:
    """Create ``bindings`` (existing ones are kept) and wait until the broker applies them.

    ``create_acls`` returns once the controller committed them; the broker's authorizer
    applies them a moment later, and a client started in between would be refused.
    """
    wanted = list(bindings)
    try:
        for future in admin.create_acls(wanted).values():
            future.result()
    except KafkaException as exc:
        raise DevstackError(f"cannot create ACLs: {exc.args[0].str()}") from exc
    _wait_until(admin, wanted, present=True, timeout_s=timeout_s)


def revoke(admin: Admin, bindings: Iterable[AclBinding], timeout_s: float = _ACL_WAIT_S) -> None:
    """Delete exactly ``bindings`` and wait until the broker no longer applies them."""
    gone = list(bindings)
    filters = [
        AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                         b.operation, b.permission_type)
        for b in gone
    ]  # fmt: skip
    try:
        for future in admin.delete_acls(filters).values():
            future.result()
    except KafkaException as exc:
        raise DevstackError(f"cannot delete ACLs: {exc.args[0].str()}") from exc
    _wait_until(admin, gone, present=False, timeout_s=timeout_s)


def _wait_until(
    admin: Admin, bindings: list[AclBinding], *, present: bool, timeout_s: float
) -> None:
    # The broker answers DescribeAcls from its own authorizer: what it shows, it applies.
    principals = {b.principal for b in bindings}
    wanted = {str(b) for b in bindings}
    deadline = time.monotonic() + timeout_s

    def done() -> bool:
        shown = _shown(admin, principals)
        return wanted <= shown if present else not wanted & shown

    while not done():
        if time.monotonic() > deadline:
            state = "applied" if present else "removed"
            raise DevstackError(f"ACLs of {', '.join(sorted(principals))} not {state} after "
                                f"{timeout_s:g}s")  # fmt: skip
        time.sleep(0.05)


def _shown(admin: Admin, principals: set[str]) -> set[str]:
    shown: set[str] = set()
    for principal in principals:
        # None matches any name and any host (the stubs say str).
        flt = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,  # type: ignore[arg-type]
            AclOperation.ANY, AclPermissionType.ANY,
        )  # fmt: skip
        shown |= {str(b) for b in admin.describe_acls(flt).result()}
    return shown
