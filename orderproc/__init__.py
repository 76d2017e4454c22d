"""orderproc: order processing on Kafka with retry, a dead-letter queue and Airflow replay."""

__version__ = "0.1.0"
