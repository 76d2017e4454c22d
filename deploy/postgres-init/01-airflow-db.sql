-- Airflow keeps its metadata in its own database and role, apart from orderproc's data.
-- Runs once, when the postgres container starts on an empty data volume.
CREATE ROLE airflow WITH LOGIN PASSWORD 'airflow';
CREATE DATABASE airflow OWNER airflow;
