# One image for the Airflow services and the orderproc workers (see docker-compose.yml).
#
#   docker build -t orderproc:local .
#
# Built on the official Airflow image so DAGs, plugins and the workers run the same installed
# orderproc package; the Airflow version is pinned to the one the image ships.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

LABEL org.opencontainers.image.title="orderproc" \
      org.opencontainers.image.description="Airflow-orchestrated order processing on Apache Kafka"

# The Airflow image installs Python packages as the `airflow` user, never as root.
USER airflow

# Package sources first: editing a DAG or plugin then does not reinstall the package.
COPY --chown=airflow:0 pyproject.toml uv.lock README.md /opt/orderproc/
COPY --chown=airflow:0 orderproc/ /opt/orderproc/orderproc/
COPY --chown=airflow:0 schemas/ /opt/orderproc/schemas/

# Pinning apache-airflow to the image's own version keeps pip from up- or downgrading it
# while it resolves orderproc's dependencies (AIRFLOW_VERSION is set by the base image).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/orderproc

# Thin adapters over the installed package; docker-compose.yml points
# AIRFLOW__CORE__DAGS_FOLDER and AIRFLOW__CORE__PLUGINS_FOLDER here.
COPY --chown=airflow:0 dags/ /opt/orderproc/dags/
COPY --chown=airflow:0 plugins/ /opt/orderproc/plugins/

# Where the hourly DLQ report writes its files (a volume in docker-compose.yml); created here
# so the volume starts out owned by the `airflow` user.
RUN mkdir -p /opt/airflow/orderproc-data/reports

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/orderproc/dags \
    ORDERPROC_DATA_DIR=/opt/airflow/orderproc-data \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/orderproc/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false \
    PYTHONUNBUFFERED=1
