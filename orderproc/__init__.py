"""orderproc: order processing on Apache Kafka with retry, a dead-letter queue and Airflow-driven replay."""

__version__ = "0.1.0"
