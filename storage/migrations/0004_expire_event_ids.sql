-- 0004_expire_event_ids.sql: forget deduplication keys a chunk at a time.
--
-- ly_expire_event_ids (keep) deletes every expired key in one statement: run by the
-- store after weeks of ingest it would hold the store's session (and every batch behind
-- it) for as long as millions of deletes take. This one deletes at most max_rows keys,
-- oldest first (the received_at index), so the store can interleave chunks with its
-- batches; it returns how many it deleted, max_rows meaning "call again". The
-- one-argument form, which nothing calls, goes.
CREATE OR REPLACE FUNCTION ly_expire_event_ids (keep interval, max_rows integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    IF keep IS NULL OR keep < interval '1 day' THEN
        RAISE EXCEPTION 'keep must be at least one day, not %', keep;
    END IF;
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1, not %', max_rows;
    END IF;
    DELETE FROM sdk_event_ids
     WHERE ctid = ANY (ARRAY (SELECT ctid FROM sdk_event_ids
                               WHERE received_at < now () - keep
                               ORDER BY received_at LIMIT max_rows));
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

GRANT EXECUTE ON FUNCTION ly_expire_event_ids (interval, integer) TO layers_store;

DROP FUNCTION IF EXISTS ly_expire_event_ids (interval);
