-- Tenants are public to every request: no row-level security here.
CREATE TABLE tenants (
    id text PRIMARY KEY,
    name text NOT NULL
);
GRANT SELECT ON tenants TO notes_app;

-- Reference data every environment needs belongs in a migration; test data in fixtures/.
INSERT INTO tenants (id, name) VALUES ('acme', 'Acme Corp'), ('globex', 'Globex');
