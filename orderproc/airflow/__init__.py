"""The one adapter between Airflow and orderproc: every DAG task is one call into ``tasks``.

``params`` (trigger-form vocabulary and the validated replay parameters) is light
enough to import while a DAG file is parsed; ``tasks``, ``hooks`` and
``connections`` load Kafka and database clients and are imported inside tasks only.
"""
