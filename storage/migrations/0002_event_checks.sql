-- 0002_event_checks.sql: cheaper CHECK constraints on sdk_events.
--
-- PostgreSQL's regex engine is slow on bounded repetition: '^[0-9a-f]{64}$' made bulk
-- inserts four to five times slower than the same table without it (tools/bench ingest,
-- docs/bench.md). The same rules, written as a length check and a negated character
-- class, cost next to nothing. Partitions made with LIKE ... INCLUDING CONSTRAINTS hold
-- their own copies, so those go too; new partitions copy the parent's new ones.

DO $checks$
DECLARE
    part regclass;
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY ['sdk_events_name_check', 'sdk_events_email_sha256_check',
                                 'sdk_events_phone_sha256_check',
                                 'sdk_events_phone_e164_sha256_check',
                                 'sdk_events_geo_country_check']
    LOOP
        EXECUTE format ('ALTER TABLE sdk_events DROP CONSTRAINT IF EXISTS %I', name);
        FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                     WHERE inhparent = 'sdk_events'::regclass
        LOOP
            EXECUTE format ('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', part, name);
        END LOOP;
    END LOOP;
END
$checks$;

ALTER TABLE sdk_events
    ADD CONSTRAINT sdk_events_name_check
        CHECK (length (name) BETWEEN 1 AND 64 AND name !~ '[^a-z0-9_]'),
    ADD CONSTRAINT sdk_events_email_sha256_check
        CHECK (octet_length (email_sha256) = 64 AND email_sha256 !~ '[^0-9a-f]'),
    ADD CONSTRAINT sdk_events_phone_sha256_check
        CHECK (octet_length (phone_sha256) = 64 AND phone_sha256 !~ '[^0-9a-f]'),
    ADD CONSTRAINT sdk_events_phone_e164_sha256_check
        CHECK (octet_length (phone_e164_sha256) = 64 AND phone_e164_sha256 !~ '[^0-9a-f]'),
    ADD CONSTRAINT sdk_events_geo_country_check
        CHECK (octet_length (geo_country) = 2 AND geo_country !~ '[^A-Z]');
