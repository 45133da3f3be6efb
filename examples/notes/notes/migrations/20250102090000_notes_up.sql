-- depends_on: 20250101090000
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (id),
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON notes TO notes_app;
GRANT USAGE ON SEQUENCE notes_id_seq TO notes_app;

-- Each request sees only its tenant's notes. FORCE applies the policy to the table's owner
-- too (the app role owns the tables when it runs the migrations itself); superusers and
-- BYPASSRLS roles still see everything, so the app must not connect as one.
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
-- current_setting(name, true) is '' (not NULL) once the connection has used the setting.
CREATE POLICY tenant_isolation ON notes
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), ''));
