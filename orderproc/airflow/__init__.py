"""The adapter between Airflow and orderproc: the DAG tasks and the DLQ review page.

``params`` (trigger-form vocabulary and the validated replay parameters) is light
enough to import while a DAG file is parsed; ``tasks``, ``hooks`` and
``connections`` load Kafka and database clients and are imported inside tasks only;
``review``, ``review_app``, ``review_auth`` and ``rest`` are imported by the API server
when the DLQ review page is first opened (``plugins/dlq_review_plugin.py``).
"""
