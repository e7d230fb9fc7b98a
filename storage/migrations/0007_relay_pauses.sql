-- 0007_relay_pauses.sql: a network's "slow down" holds back every relay.
--
-- When Meta, TikTok or Apple throttle a project (HTTP 429, a rate-limit code, with or
-- without Retry-After), the relay that got the answer pauses that destination for that
-- project. Several relays share the outbox (layersd --relay N, scale-out nodes): the
-- pause is written here, and each relay reads the running pauses before it claims, so
-- none of them sends for the pair until paused_until. One row per (project,
-- destination), kept (a later pause moves paused_until; a past one means nothing).
CREATE TABLE relay_pauses (
    org_id       uuid NOT NULL,
    project_id   uuid NOT NULL,
    destination  text NOT NULL CHECK (destination IN ('meta', 'tiktok', 'apple_search_ads')),
    paused_until timestamptz NOT NULL,
    PRIMARY KEY (project_id, destination)
);

ALTER TABLE relay_pauses ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay_pauses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON relay_pauses
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON relay_pauses TO layers_relay;
