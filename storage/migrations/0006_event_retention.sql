-- 0006_event_retention.sql: the store drops the months of sdk_events past their retention.
--
-- sdk_events has a partition per month of received_at (ly_ensure_event_partitions).
-- With LAYERS_EVENT_RETENTION set, the store calls ly_drop_event_partitions (keep) with
-- each partition check: it drops every monthly partition whose whole month was received
-- before now () - keep, and returns how many. A month goes at once, when its last day is
-- older than keep. Dropping a partition takes an exclusive lock on sdk_events; it waits at
-- most 0.5 s for it (behind a long partner-API query, say; the store's inserts queue
-- behind the wait), and the store tries again at its next check. Delivery records of
-- dropped events are left to the relay's own retention (LAYERS_RELAY_KEEP_DAYS).
CREATE FUNCTION ly_drop_event_partitions (keep interval) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET lock_timeout = '500ms'
AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    IF keep IS NULL OR keep < interval '1 day' THEN
        RAISE EXCEPTION 'keep must be at least one day, not %', keep;
    END IF;
    PERFORM pg_advisory_xact_lock (hashtext ('ly_ensure_event_partitions'));
    FOR part IN
        SELECT c.relname
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'public.sdk_events'::regclass
           AND c.relname ~ '^sdk_events_p[0-9]{6}$'
           AND (to_timestamp (substr (c.relname, 13), 'YYYYMM') AT TIME ZONE 'UTC'
                + interval '1 month') AT TIME ZONE 'UTC' <= now () - keep
         ORDER BY c.relname
    LOOP
        -- The parent first, as inserts lock it (then the partitions), like the creation
        LOCK TABLE sdk_events IN ACCESS EXCLUSIVE MODE;
        EXECUTE format ('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
GRANT EXECUTE ON FUNCTION ly_drop_event_partitions (interval) TO layers_store;
