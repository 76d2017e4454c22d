"""The secured dev broker: SASL_SSL with SCRAM-SHA-512, a throwaway CA, and ACLs.

``orderproc dev up --secure`` runs it. It is the plain devstack broker with its own
folder (so its data, formatted with SCRAM users, never meets the plain broker's)::

    <devstack_dir>/kafka-secure/
        credentials.json          admin, orderproc and controller passwords (0600)
        tls/                      the CA and broker certificate (``devstack.tls``)
        kafka-server.properties   generated on every start (0600: it holds two passwords)
        kafka-data/ kafka-logs/ kafka.pid kafka-cluster-id     as for the plain broker

It uses the same ports as the plain broker (``ORDERPROC_KAFKA_PORT``...), so one of
the two runs at a time. After every start the admin creates the topics of the
orderproc settings, the ``orderproc`` user and its ACLs (``kafka_security``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.kafka import KafkaBroker, KafkaUpResult
from devstack.kafka_security import (
    ADMIN_USER,
    APP_USER,
    MECHANISM,
    Credentials,
    app_acls,
    client_config,
    client_env,
    client_settings,
    grant,
    server_overrides,
    upsert_user,
)
from devstack.settings import DevstackError, DevstackSettings
from devstack.tls import TlsFiles, ensure_tls, write_private
from orderproc.config import Settings, get_settings
from orderproc.errors import OrderProcError
from orderproc.kafka.clients import Admin
from orderproc.kafka.topics import ensure_topics
from orderproc.logs import LIBRDKAFKA_LOG

SECURE_FOLDER = "kafka-secure"


class SecureKafkaBroker(KafkaBroker):
    """The devstack broker behind SASL_SSL, with the ``orderproc`` principal's ACLs.

    Args:
        settings: Defaults to ``get_devstack_settings()``.
        libs_dir: Where the jars live (see ``KafkaBroker``).
        app: The orderproc settings whose topics and groups the ACLs name
            (default: ``get_settings()``); its connection keys are ignored.
    """

    folder = SECURE_FOLDER
    security = "SASL_SSL"

    def __init__(
        self,
        settings: DevstackSettings | None = None,
        *,
        libs_dir: Path | None = None,
        app: Settings | None = None,
    ) -> None:
        super().__init__(settings, libs_dir=libs_dir)
        self._app = app
        self.tls = TlsFiles(self.paths.devstack_dir / "tls")

    @property
    def app(self) -> Settings:
        """The orderproc settings whose topics and groups the ACLs name."""
        return self._app or get_settings()

    @property
    def credentials_file(self) -> Path:
        return self.paths.devstack_dir / "credentials.json"

    def credentials(self) -> Credentials:
        """The passwords of this devstack (made on first use)."""
        self.paths.devstack_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Credentials.load_or_create(self.credentials_file)

    def up(self, progress: Callable[[str], None] | None = None) -> KafkaUpResult:
        """Start the broker (certificates, users and storage on first use), then let the admin
        create the topics, the ``orderproc`` user and its ACLs (idempotent)."""
        self.paths.devstack_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ensure_tls(self.tls.folder)
        result = super().up(progress)
        self.provision()
        return result

    def provision(self) -> None:
        """As admin: the topics, the ``orderproc`` user (its current password) and its ACLs."""
        creds = self.credentials()
        conf: dict[str, Any] = {**self.admin_config(), "logger": LIBRDKAFKA_LOG}
        with Admin(conf) as admin:
            upsert_user(admin, APP_USER, creds.app)
            try:
                ensure_topics(self.client_settings(ADMIN_USER, creds.admin))
            except OrderProcError as exc:
                raise DevstackError(f"cannot create the topics as {ADMIN_USER}: {exc}") from exc
            grant(admin, app_acls(self.app))

    # -- what clients need -----------------------------------------------------------

    def admin_config(self) -> dict[str, Any]:
        """librdkafka keys of the admin (a super user); for setup and tests only."""
        return client_config(self.bootstrap, self.tls, ADMIN_USER, self.credentials().admin)

    def client_settings(self, user: str = APP_USER, password: str | None = None) -> Settings:
        """The orderproc settings pointed at this broker as ``user`` (default: orderproc)."""
        password = self.credentials().app if password is None else password
        return client_settings(self.app, self.bootstrap, self.tls, user, password)

    def client_env(self) -> dict[str, str]:
        """The ``ORDERPROC_*`` settings of a client running as ``orderproc``."""
        return client_env(self.bootstrap, self.tls, self.credentials())

    # -- KafkaBroker hooks -----------------------------------------------------------

    def _server_overrides(self) -> dict[str, str]:
        return server_overrides(
            port=self.port,
            controller_port=self.controller_port,
            tls=self.tls,
            creds=self.credentials(),
        )

    def _write_properties(self, text: str) -> None:
        write_private(self.paths.properties, text.encode())

    def _format_args(self) -> list[str]:
        # The broker logs in to itself as admin: that user must exist before it starts.
        # (The orderproc user is made through the admin API after the start.)
        return [
            "--add-scram",
            f"{MECHANISM}=[name={ADMIN_USER},password={self.credentials().admin}]",
        ]

    def _format_storage(self, java: str) -> None:
        try:
            super()._format_storage(java)
        except DevstackError as exc:
            message = str(exc)
            for secret in self.credentials().secrets():
                message = message.replace(secret, "***")
            raise DevstackError(message) from None

    def _probe_config(self) -> dict[str, Any]:
        conf = self.admin_config()
        del conf["bootstrap.servers"]
        return conf
