"""The local development stack: a real Kafka broker and PostgreSQL, no Docker.

``kafka.KafkaBroker`` runs Apache Kafka from Maven Central jars with plain
``java``; ``postgres`` drives Debian's PostgreSQL cluster tools (and runs as
``python -m devstack.postgres up|down|status``); ``orderproc dev`` is
the command-line front end. Nothing is imported here, so ``python -m`` on a
submodule runs it exactly once and importing the package stays cheap.
"""
