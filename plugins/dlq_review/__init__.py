"""The DLQ review page: FastAPI routes and templates over ``orderproc`` (see ``app``)."""
