-- 0013_replay_window.sql: a replayed dead letter gets a whole retry window.
--
-- The relay retries a row while its next attempt falls within LAYERS_RELAY_RETRY_WINDOW_S
-- of the row's created_at. A replay (the partner API, layersctl) sets a dead row back to
-- pending "like a new row", but left created_at: a row parked more than a window ago got
-- one attempt, and a passing 503 or 429 parked it for good. The replay now sets
-- created_at to its own time, which the API's role may then write.
GRANT UPDATE (created_at) ON relay_deliveries TO layers_api;
