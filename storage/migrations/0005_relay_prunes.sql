-- 0005_relay_prunes.sql: the relay deletes old delivery records.
--
-- relay_deliveries keeps a row per event and enabled layer; without a retention it grows
-- by that much forever. The relay deletes rows delivered or skipped more than
-- LAYERS_RELAY_KEEP_DAYS ago (30 by default; dead and pending rows stay), so it needs
-- DELETE on the table.
GRANT DELETE ON relay_deliveries TO layers_relay;
