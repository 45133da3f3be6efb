-- The role the test apps connect as: not a superuser, not the tables' owner, so RLS applies.
DO $$
BEGIN
    CREATE ROLE pgfast_tenant LOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;
