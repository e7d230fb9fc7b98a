-- 0012_expire_idempotency.sql: idempotency keys are forgotten without a request.
--
-- An Idempotency-Key's stored answer (sealed new tokens and SDK keys among them) was
-- deleted only by a later keyed POST of the same organization: one that stopped sending
-- them kept every answer for ever, though api.md says keys are forgotten after 24 hours.
-- ly_expire_event_ids, which the store runs every minute a chunk at a time, now also
-- deletes up to max_rows idempotency keys older than 24 hours (oldest first, by the
-- created_at index); it returns the larger of its two counts, max_rows meaning "call
-- again".
CREATE OR REPLACE FUNCTION ly_expire_event_ids (keep interval, max_rows integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    removed bigint;
    forgotten bigint;
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
    DELETE FROM api_idempotency
     WHERE ctid = ANY (ARRAY (SELECT ctid FROM api_idempotency
                               WHERE created_at < now () - interval '24 hours'
                               ORDER BY created_at LIMIT max_rows));
    GET DIAGNOSTICS forgotten = ROW_COUNT;
    RETURN greatest (removed, forgotten);
END
$$;
