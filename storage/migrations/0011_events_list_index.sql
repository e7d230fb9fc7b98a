-- 0011_events_list_index.sql: an index the partner API's events list can walk.
--
-- GET /v1/projects/{id}/events pages newest first, ORDER BY received_at DESC, seq DESC,
-- with the cursor (received_at, seq) < (...). The index (project_id, seq) could not
-- give that order: each page sorted every event of the project (1.3 s for the first
-- page of 720k events, and the api actor serves one request at a time). An index on
-- (project_id, received_at, seq), walked backwards in each monthly partition, gives a
-- page for the cost of its rows at any size. It replaces the old one, which nothing
-- else used, so the store's writes keep two indexes on sdk_events.
DROP INDEX IF EXISTS sdk_events_project_seq;
CREATE INDEX sdk_events_project_received ON sdk_events (project_id, received_at, seq);
