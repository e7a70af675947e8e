-- Who may do what. Nothing of walg_ext is executable by PUBLIC; the role walg_admin (NOLOGIN,
-- created here if missing; grant it to operators) may run every walg_* function. Superusers
-- can do everything anyway. Runs last in the extension script (after every function exists).
DO $walg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'walg_admin') THEN
        CREATE ROLE walg_admin NOLOGIN;
    END IF;
END
$walg$;

-- The schedule view (its function's EXECUTE privilege is checked for the caller too).
CREATE VIEW walg_schedule AS SELECT * FROM walg_schedule_status();
REVOKE ALL ON walg_schedule FROM PUBLIC;
GRANT SELECT ON walg_schedule TO walg_admin;

DO $walg$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT d.objid::regprocedure
        FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_extension'::regclass
          AND d.classid = 'pg_proc'::regclass
          AND d.deptype = 'e'
          AND e.extname = 'walg_ext'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO walg_admin', f);
    END LOOP;
END
$walg$;
