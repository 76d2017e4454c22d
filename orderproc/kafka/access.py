"""Fail fast when Kafka refuses us: wrong credentials, an untrusted certificate, a missing ACL.

librdkafka never raises authentication or TLS failures: it retries for ever and
reports them only to ``error_cb`` (``_AUTHENTICATION``, ``_SSL``), while a metadata
request merely times out with a generic transport error, a producer queues its
records and a consumer polls nothing. So every job checks its access before it
builds its clients (``check_access``): connect with an ``error_cb`` that turns
those reports into one ``BrokerError`` line within about a second, then ask the
broker which operations this principal may perform on the job's topics and
groups (``include_authorized_operations``) and name whatever is missing.

Jobs that read or write orders on the registry wire format check the schema registry
the same way (``check_registry``): it answers, accepts the credentials and certificate,
and lets us read the subject; a producer's subject must exist (unless it may register).

A partition of the job's topics that lacks in-sync replicas (a broker of the cluster
down or catching up) is not a refusal: the job starts, and the check names those
partitions in one warning (writes to them wait while fewer than
``min.insync.replicas`` replicas are in sync).

Messages name the cause first (``wrong credentials: ...``, ``untrusted broker
certificate: ...``, ``not authorized: ...``) and never contain a password: they
are built from the bootstrap servers, the user name and librdkafka's error text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AclOperation,
    ClusterMetadata,
)

from orderproc.config import Settings, WireFormat
from orderproc.errors import BrokerError, RegistryError
from orderproc.kafka.clients import ACCESS_ERRORS, Admin, drain_group, refuses_access
from orderproc.kafka.replicas import under_replicated
from orderproc.serde import RegistrySerde
from orderproc.serde.registry import SUBJECT_NOT_FOUND

log = logging.getLogger(__name__)

_SLICE_S = 0.1
"""How often the connection probe looks at what ``error_cb`` has heard."""

_CONNECTION_KEYS = frozenset(
    {"bootstrap.servers", "security.protocol", "client.id", "client.dns.lookup",
     "broker.address.family", "enable.ssl.certificate.verification", "oauth_cb"}
)  # fmt: skip
_CONNECTION_PREFIXES = ("sasl.", "ssl.", "socket.")


@dataclass(frozen=True)
class Access:
    """What one job does on the broker: the topics it reads and writes, the groups it joins."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    orders: str = ""
    """``read`` or ``write`` when the job decodes or encodes orders (the registry matters)."""


def producer_access(settings: Settings) -> Access:
    """``orderproc produce`` and the replay: write the orders topic."""
    return Access(write=(settings.orders_topic,), orders="write")


def consumer_access(settings: Settings) -> Access:
    """The order consumer: read orders and its retry topics, write the retries and the DLQ."""
    retries = tuple(settings.retry_topics)
    return Access(
        read=(settings.orders_topic, *retries),
        write=(*retries, settings.dlq_topic),
        groups=(settings.consumer_group,),
        orders="read",
    )


def monitor_access(settings: Settings) -> Access:
    """``orderproc dlq tail``: read the DLQ in the monitor's group."""
    return Access(read=(settings.dlq_topic,), groups=(settings.dlq_group,))


def drain_access(settings: Settings) -> Access:
    """The drain: read the DLQ in the drain's own group."""
    return Access(read=(settings.dlq_topic,), groups=(drain_group(settings),))


def connection_config(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a client config that say where and who we are (no job's keys)."""
    return {
        k: v for k, v in conf.items() if k in _CONNECTION_KEYS or k.startswith(_CONNECTION_PREFIXES)
    }


def who(conf: Mapping[str, Any]) -> str:
    """The principal in words: ``user 'orderproc'``, or ``this client`` without SASL."""
    user = conf.get("sasl.username")
    return f"user {user!r}" if user else "this client"


def refusal(err: KafkaError, conf: Mapping[str, Any]) -> str | None:
    """One line naming why Kafka refused us, or None when ``err`` is not a refusal."""
    where = conf.get("bootstrap.servers", "?")
    code = err.code()
    detail = _detail(err)
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        if "invalid credentials" in detail:
            mechanism = conf.get("sasl.mechanism") or conf.get("sasl.mechanisms") or "SASL"
            return f"wrong credentials: Kafka at {where} rejected {who(conf)} ({mechanism})"
        return f"authentication failed: Kafka at {where} refused {who(conf)}: {detail}"
    if code == KafkaError._SSL:
        if "certificate verify failed" in detail:
            ca = conf.get("ssl.ca.location")
            trusted = f"the CA in ssl.ca.location ({ca})" if ca else "the system's CAs"
            return (
                f"untrusted broker certificate: Kafka at {where} presented a certificate "
                f"that {trusted} did not sign"
            )
        return f"TLS handshake with Kafka at {where} failed: {detail}"
    if code in ACCESS_ERRORS:
        return f"not authorized: Kafka at {where} refused {who(conf)}: {detail}"
    if err.fatal():
        return f"fatal Kafka client error: {detail}"
    return None


def stop_if_refused(err: KafkaError, settings: Settings) -> None:
    """Raise ``BrokerError`` (one line) when ``err`` says Kafka refused our principal.

    For errors met while running (an ACL revoked, a password changed): never a
    record's failure, so the job stops instead of routing or skipping records.
    """
    if refuses_access(err):
        raise BrokerError(refusal(err, settings.kafka_config()) or err.str())


def _detail(err: KafkaError) -> str:
    # "sasl_ssl://127.0.0.1:9092/bootstrap: SASL authentication error: ..." -> the cause.
    text = str(err.str())
    head, sep, rest = text.partition("/bootstrap: ")
    return rest if sep and "://" in head else text


def connect(conf: Mapping[str, Any], timeout_s: float) -> tuple[Admin, ClusterMetadata]:
    """An admin client on ``conf``'s connection once the broker answers, and its metadata.

    The caller closes the client (``with admin:``); it is closed here when this raises.

    Raises:
        BrokerError: the broker refused the credentials or the certificate (as soon as
            librdkafka says so), the config is unusable, or nothing answered in time.
    """
    heard: list[KafkaError] = []
    base = connection_config(conf)
    # log_level 0: the refusal is told once, here, not by librdkafka at every retry.
    probe: dict[str, Any] = {**base, "error_cb": heard.append, "log_level": 0}
    try:
        admin = Admin(probe)
    except KafkaException as exc:
        raise BrokerError(f"unusable Kafka client settings: {_detail(exc.args[0])}") from exc
    try:
        return admin, _answer(admin, heard, base, timeout_s)
    except BaseException:
        admin.close()
        raise


def _answer(
    admin: Admin, heard: list[KafkaError], base: Mapping[str, Any], timeout_s: float
) -> ClusterMetadata:
    """The metadata once a broker answers; a refusal or the deadline raises."""
    deadline = time.monotonic() + timeout_s
    last: KafkaError | None = None
    while True:
        try:
            wait = max(0.01, min(_SLICE_S, deadline - time.monotonic()))
            metadata: ClusterMetadata = admin.list_topics(timeout=wait)
            if metadata.brokers:
                return metadata
        except KafkaException as exc:
            last = exc.args[0]
        admin.poll(0)  # an AdminClient serves error_cb only here
        for err in heard:
            line = refusal(err, base)
            if line is not None:
                raise BrokerError(line)
        if time.monotonic() >= deadline:
            why = last or (heard[-1] if heard else None)
            text = why.str() if why is not None else "no answer"
            where = base.get("bootstrap.servers")
            raise BrokerError(f"cannot reach Kafka at {where} within {timeout_s:g} s: {text}")


def check_access(conf: Mapping[str, Any], access: Access, timeout_s: float) -> None:
    """Fail now, in one line, if Kafka would refuse this job later.

    Checks the connection (credentials, certificate), then that the principal may read
    and write the job's topics and use its groups. A topic that does not exist yet
    is not an error here (``ensure_topics`` creates it, or the job reports it).

    Raises:
        BrokerError: what is refused or unreachable, e.g. ``not authorized: user
            'reader' may not write to topic orders_dlq``.
    """
    admin, metadata = connect(conf, timeout_s)
    with admin:
        missing = _missing_topic_ops(admin, access, timeout_s) + _missing_groups(
            admin, access.groups, timeout_s
        )
    if missing:
        raise BrokerError(f"not authorized: {who(conf)} may not {'; '.join(missing)}")
    if lagging := under_replicated(metadata, [*access.read, *access.write]):
        log.warning(
            "under-replicated partitions (a broker is down or catching up; writes wait while "
            "fewer than min.insync.replicas are in sync): %s",
            "; ".join(map(str, lagging)),
        )


def check_settings(settings: Settings, access: Access) -> None:
    """``check_access`` for a job that builds its clients from ``settings``, then
    ``check_registry`` if it handles orders."""
    check_access(settings.kafka_config(), access, settings.admin_timeout_s)
    if access.orders:
        check_registry(settings, write=access.orders == "write")


def check_registry(settings: Settings, *, write: bool) -> None:
    """Fail now, in one line, if the schema registry would refuse this job later.

    Nothing to check on the schemaless wire format. A consumer needs only ids, so a
    subject with no version yet is fine for it; a producer needs its schema there.

    Raises:
        RegistryError: unreachable (``RegistryUnavailableError``), wrong credentials or
            certificate, not authorized (``RegistryRefusedError``), or a producer's
            subject missing: ``subject orders-value is not registered at ...``.
    """
    if settings.effective_wire_format is not WireFormat.REGISTRY:
        return
    serde = RegistrySerde.from_settings(settings)
    subject = serde.subject()
    try:
        serde.client.version(subject, "latest")
    except RegistryError as exc:
        if exc.status != 404 or exc.error_code not in (SUBJECT_NOT_FOUND, None):
            raise
        if write and not settings.schema_auto_register:
            raise RegistryError(
                f"subject {subject} is not registered at the schema registry at "
                f"{serde.client.url}: register it with `orderproc schemas register`"
            ) from None


def _missing_topic_ops(admin: Admin, access: Access, timeout_s: float) -> list[str]:
    names = list(dict.fromkeys([*access.read, *access.write]))
    if not names:
        return []
    futures = admin.describe_topics(
        TopicCollection(names), include_authorized_operations=True, request_timeout=timeout_s
    )
    allowed: dict[str, set[AclOperation] | None] = {}
    for name, future in futures.items():
        try:
            allowed[name] = set(future.result().authorized_operations or ())
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                allowed[name] = set()  # not even DESCRIBE, which READ and WRITE imply
            elif code != KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.debug("describe topic %s: %s", name, exc.args[0].str())
    missing = []
    for verb, op, topics in (("read", AclOperation.READ, access.read),
                             ("write to", AclOperation.WRITE, access.write)):  # fmt: skip
        refused = [t for t in topics if (ops := allowed.get(t)) is not None and op not in ops]
        if refused:
            missing.append(f"{verb} {_plural('topic', refused)}")
    return missing


def _missing_groups(admin: Admin, groups: Iterable[str], timeout_s: float) -> list[str]:
    groups = list(groups)
    if not groups:
        return []
    futures = admin.describe_consumer_groups(
        groups, include_authorized_operations=True, request_timeout=timeout_s
    )
    refused = []
    for group, future in futures.items():
        try:
            ops = future.result().authorized_operations
        except KafkaException as exc:
            # GROUP_ID_NOT_FOUND: a group nobody joined yet, and we may describe it.
            if exc.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                refused.append(group)
            continue
        if ops is not None and AclOperation.READ not in ops:
            refused.append(group)
    return [f"use consumer {_plural('group', refused)}"] if refused else []


def _plural(noun: str, names: list[str]) -> str:
    return f"{noun} {names[0]}" if len(names) == 1 else f"{noun}s {', '.join(names)}"
