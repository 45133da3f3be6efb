-- depends_on: 20250101000000
CREATE TABLE notes (
    id serial PRIMARY KEY,
    tenant_id text NOT NULL,
    body text NOT NULL
);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
-- current_setting(..., true) is '' (not NULL) once a backend has seen the setting.
CREATE POLICY tenant_isolation ON notes
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), ''));
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO pgfast_tenant;
GRANT USAGE ON SEQUENCE notes_id_seq TO pgfast_tenant;

-- A deferred foreign key fails at COMMIT, not at INSERT.
CREATE TABLE note_links (
    id serial PRIMARY KEY,
    note_id int NOT NULL REFERENCES notes (id) DEFERRABLE INITIALLY DEFERRED
);
GRANT SELECT, INSERT ON note_links TO pgfast_tenant;
GRANT USAGE ON SEQUENCE note_links_id_seq TO pgfast_tenant;
