-- The schema registry (Apicurio) keeps schemas and ids in its own database and role.
-- Runs once, when the postgres container starts on an empty data volume.
CREATE ROLE registry WITH LOGIN PASSWORD 'registry';
CREATE DATABASE registry OWNER registry;
