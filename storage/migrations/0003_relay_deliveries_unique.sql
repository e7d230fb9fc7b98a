-- 0003_relay_deliveries_unique.sql: no unique (project_id, event_id, destination) on the
-- outbox.
--
-- Every relay_deliveries row is written by the store's batch statement, for an event it
-- has just inserted (sdk_event_ids decides that, once per project and event_id), once per
-- enabled layer (project_layers' key is (project_id, layer)): a second row for the same
-- event and destination cannot be written. The index only cost: each delivery is
-- inserted once and updated at least twice (claim, outcome), and every update wrote a
-- new (uuid, text, text) entry into it, a quarter of the time of a 2,000-row claim
-- (docs/bench.md, relay observations).
ALTER TABLE relay_deliveries
    DROP CONSTRAINT IF EXISTS relay_deliveries_project_id_event_id_destination_key;
