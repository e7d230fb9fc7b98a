-- 0001_schema.sql: the whole Layers schema, its tenancy policies and its grants.
-- Runs as layers_owner (ly_migrate sets the role), inside one transaction. docs/schema.md
-- explains every table, the classification of its columns and who may touch it.
--
-- Tenancy: every table with an org_id column has row-level security ENABLED and FORCED and
-- a policy "tenant_isolation" on
--     org_id = nullif(current_setting('layers.org_id', true), '')::uuid
-- for USING and WITH CHECK, so with no tenant set nothing is visible and nothing can be
-- written. The only other policies are narrow permissive ones for layers_auth (lookups by
-- hash) and layers_content (its job queue). org_id columns default to the tenant set, so an
-- insert under a tenant context needs no org_id. tests/test_tenancy.py checks the rule from
-- the catalog: a new table with org_id and no policy fails it.
--
-- Ownership: everything is owned by layers_owner; every grant below is explicit. Functions
-- are not executable by PUBLIC.

ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- updated_at is the optimistic-concurrency token of the partner API (If-Match): every
-- update moves it, to the microsecond, even twice within one transaction.
CREATE FUNCTION ly_touch_updated_at () RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp ();
    RETURN NEW;
END
$$;


-- ---------------------------------------------------------------------------------------
-- Workspace: organizations, projects, integrations, members, credentials

CREATE TABLE organizations (
    org_id      uuid PRIMARY KEY
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    name        text NOT NULL CHECK (length (name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now ()
);

CREATE TABLE projects (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid
                REFERENCES organizations ON DELETE CASCADE,
    project_id  uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    name        text NOT NULL CHECK (length (name) BETWEEN 1 AND 200),
    -- E.164 country calling code, digits only ('1', '44', '49'): prefixed to phone numbers
    -- given without one, before hashing
    default_country_code text CHECK (default_country_code ~ '^[1-9][0-9]{0,2}$'),
    timezone    text NOT NULL DEFAULT 'UTC' CHECK (length (timezone) BETWEEN 1 AND 64),
    ios_bundle_id        text CHECK (length (ios_bundle_id) <= 255),
    android_package_name text CHECK (length (android_package_name) <= 255),
    app_store_id         text CHECK (app_store_id ~ '^[0-9]{1,20}$'),
    -- prompt material: brand brief, voice, product information
    brand       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof (brand) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    UNIQUE (org_id, project_id)
);

CREATE TABLE project_layers (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    project_id  uuid NOT NULL,
    layer       text NOT NULL CHECK (layer IN ('meta', 'tiktok', 'apple_search_ads')),
    enabled     boolean NOT NULL DEFAULT false,
    -- non-secret settings (pixel / dataset id, TikTok app id, test event code, ...)
    config      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof (config) = 'object'),
    -- which secrets are set, never their values (for the write-only API)
    secret_names text [] NOT NULL DEFAULT '{}',
    -- AES-256-GCM of a JSON object of secrets: 12-byte nonce || ciphertext || 16-byte tag
    secret_ciphertext  bytea CHECK (octet_length (secret_ciphertext) >= 28),
    secret_key_id      text CHECK (length (secret_key_id) BETWEEN 1 AND 64),
    secret_key_version integer CHECK (secret_key_version > 0),
    secret_updated_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    PRIMARY KEY (project_id, layer),
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, project_id) ON DELETE CASCADE,
    CHECK ((secret_ciphertext IS NULL) = (secret_key_id IS NULL)
           AND (secret_ciphertext IS NULL) = (secret_key_version IS NULL))
);

-- Global reference table: no org_id, no RLS.
CREATE TABLE roles (
    role        text PRIMARY KEY CHECK (role ~ '^[a-z_]{1,32}$'),
    rank        integer NOT NULL UNIQUE,
    description text NOT NULL
);
INSERT INTO roles (role, rank, description) VALUES
    ('owner',  40, 'everything, including members, billing and deleting the organization'),
    ('admin',  30, 'members below admin, projects, layers and their secrets, keys and tokens'),
    ('editor', 20, 'ads content, content containers and generation jobs'),
    ('viewer', 10, 'read only');

CREATE TABLE members (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid
                REFERENCES organizations ON DELETE CASCADE,
    member_id   uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    email       text NOT NULL CHECK (length (email) BETWEEN 3 AND 320 AND email LIKE '_%@_%'),
    display_name text CHECK (length (display_name) <= 200),
    role        text NOT NULL REFERENCES roles (role),
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    UNIQUE (org_id, member_id)
);
CREATE UNIQUE INDEX members_org_email ON members (org_id, lower (email));

-- A token is shown once; only its SHA-256 is kept. The prefix identifies it in lists.
CREATE TABLE api_tokens (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    token_id    uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    member_id   uuid NOT NULL,
    name        text NOT NULL DEFAULT '' CHECK (length (name) <= 200),
    token_prefix text NOT NULL CHECK (length (token_prefix) BETWEEN 4 AND 32),
    token_sha256 bytea NOT NULL UNIQUE CHECK (octet_length (token_sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now (),
    expires_at  timestamptz,
    last_used_at timestamptz,
    revoked_at  timestamptz,
    FOREIGN KEY (org_id, member_id) REFERENCES members (org_id, member_id) ON DELETE CASCADE
);
CREATE INDEX api_tokens_member ON api_tokens (member_id);

CREATE TABLE sdk_keys (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    project_id  uuid NOT NULL,
    key_id      uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    name        text NOT NULL DEFAULT '' CHECK (length (name) <= 200),
    key_prefix  text NOT NULL CHECK (length (key_prefix) BETWEEN 4 AND 32),
    key_sha256  bytea NOT NULL UNIQUE CHECK (octet_length (key_sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now (),
    last_used_at timestamptz,
    revoked_at  timestamptz,
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, project_id) ON DELETE CASCADE
);
CREATE INDEX sdk_keys_project ON sdk_keys (project_id);


-- ---------------------------------------------------------------------------------------
-- Content: ads content, its links to projects, generation jobs and their output

CREATE TABLE ads_content (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid
                REFERENCES organizations ON DELETE CASCADE,
    ad_content_id uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    kind        text NOT NULL CHECK (kind ~ '^[a-z_]{1,32}$'),
    title       text NOT NULL DEFAULT '' CHECK (length (title) <= 500),
    body        text NOT NULL DEFAULT '',
    media_url   text,
    metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof (metadata) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    UNIQUE (org_id, ad_content_id)
);

CREATE TABLE project_ads_content (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    project_id  uuid NOT NULL,
    ad_content_id uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now (),
    PRIMARY KEY (project_id, ad_content_id),
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, project_id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, ad_content_id) REFERENCES ads_content (org_id, ad_content_id)
        ON DELETE CASCADE
);
CREATE INDEX project_ads_content_ad ON project_ads_content (ad_content_id);

-- A durable state machine: queued -> running (leased until locked_until) -> succeeded |
-- failed | cancelled; a failed attempt goes back to queued with a later next_attempt_at
-- until attempts reaches max_attempts. prompt holds prompt material only.
CREATE TABLE content_jobs (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    project_id  uuid NOT NULL,
    job_id      uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    kind        text NOT NULL CHECK (kind ~ '^[a-z_]{1,32}$'),
    state       text NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    prompt      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof (prompt) = 'object'),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now (),
    locked_by   text,
    locked_until timestamptz,
    error       text,
    result      jsonb,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    started_at  timestamptz,
    finished_at timestamptz,
    UNIQUE (org_id, job_id),
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, project_id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, created_by) REFERENCES members (org_id, member_id)
        ON DELETE SET NULL (created_by)
);
CREATE INDEX content_jobs_due ON content_jobs (next_attempt_at) WHERE state = 'queued';
CREATE INDEX content_jobs_lease ON content_jobs (locked_until) WHERE state = 'running';
CREATE INDEX content_jobs_project ON content_jobs (project_id, created_at);

-- media: a JSON array of {"url", "content_type", "bytes", "sha256", "width", "height",
-- "duration_ms"}, url being file:// or s3://.
CREATE TABLE content_containers (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid,
    project_id  uuid NOT NULL,
    container_id uuid PRIMARY KEY DEFAULT gen_random_uuid (),
    job_id      uuid,
    kind        text NOT NULL CHECK (kind ~ '^[a-z_]{1,32}$'),
    title       text NOT NULL DEFAULT '' CHECK (length (title) <= 500),
    body        text NOT NULL DEFAULT '',
    media       jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof (media) = 'array'),
    metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof (metadata) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, project_id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, job_id) REFERENCES content_jobs (org_id, job_id)
        ON DELETE SET NULL (job_id)
);
CREATE INDEX content_containers_project ON content_containers (project_id, created_at);
CREATE INDEX content_containers_job ON content_containers (job_id);


-- ---------------------------------------------------------------------------------------
-- Events: sdk_events (partitioned by received_at), their dedup keys, the relay's outbox and
-- Apple attributions. No foreign keys here: the store writes at bulk speed and (org_id,
-- project_id) come from the authenticated SDK key; old data goes by dropping partitions.

CREATE SEQUENCE sdk_events_seq AS bigint;

CREATE TABLE sdk_events (
    org_id      uuid NOT NULL,
    project_id  uuid NOT NULL,
    event_id    text NOT NULL CHECK (length (event_id) BETWEEN 1 AND 128),
    name        text NOT NULL CHECK (name ~ '^[a-z0-9_]{1,64}$'),
    event_time  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now (),
    user_id     text CHECK (length (user_id) <= 256),
    -- hex SHA-256 of the normalized value; raw values never reach the database
    email_sha256      text CHECK (email_sha256 ~ '^[0-9a-f]{64}$'),
    phone_sha256      text CHECK (phone_sha256 ~ '^[0-9a-f]{64}$'),       -- digits only
    phone_e164_sha256 text CHECK (phone_e164_sha256 ~ '^[0-9a-f]{64}$'),  -- '+' and digits
    properties  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof (properties) = 'object'),
    device_os         text,
    device_os_version text,
    device_model      text,
    device_brand      text,
    device_locale     text,
    device_timezone   text,
    app_version text,
    app_build   text,
    app_package text,
    geo_country text CHECK (geo_country ~ '^[A-Z]{2}$'),
    geo_region  text,
    -- Apple AdServices token: set to NULL by the relay once resolved
    attribution_token text,
    consent_ads boolean,
    consent_att text
                CHECK (consent_att IN ('authorized', 'denied', 'not_determined', 'restricted')),
    seq         bigint NOT NULL DEFAULT nextval ('sdk_events_seq'),
    PRIMARY KEY (seq, received_at)
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE sdk_events_seq OWNED BY sdk_events.seq;
CREATE INDEX sdk_events_project_seq ON sdk_events (project_id, seq);

-- The safety net for rows outside every monthly partition; ly_ensure_event_partitions
-- moves such rows into their month when it creates it.
CREATE TABLE sdk_events_default PARTITION OF sdk_events DEFAULT;

-- One row per (project_id, event_id): a unique index on sdk_events would have to include
-- received_at. The store inserts here with ON CONFLICT DO NOTHING RETURNING, and only the
-- returned keys go into sdk_events. Rows may be expired with ly_expire_event_ids.
CREATE TABLE sdk_event_ids (
    project_id  uuid NOT NULL,
    event_id    text NOT NULL CHECK (length (event_id) BETWEEN 1 AND 128),
    org_id      uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now (),
    PRIMARY KEY (project_id, event_id)
);
CREATE INDEX sdk_event_ids_received ON sdk_event_ids (received_at);

-- The relay's outbox: one row per (event, destination), written by the store in the same
-- transaction as the event. Workers claim due rows with
--   SELECT ... WHERE status = 'pending' AND next_attempt_at <= now()
--   ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED
-- (served by relay_deliveries_due), set them in_flight with a lease (locked_until), and
-- finish them as delivered, dead (retries exhausted or a permanent error) or skipped (with
-- a reason such as 'consent'). last_response is the network's answer, truncated.
CREATE TABLE relay_deliveries (
    delivery_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org_id      uuid NOT NULL,
    project_id  uuid NOT NULL,
    event_received_at timestamptz NOT NULL,     -- with event_seq: the sdk_events row
    event_seq   bigint NOT NULL,
    event_id    text NOT NULL,
    destination text NOT NULL CHECK (destination IN ('meta', 'tiktok', 'apple_search_ads')),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead', 'skipped')),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now (),
    locked_by   text,
    locked_until timestamptz,
    last_status integer,
    last_response text,
    reason      text,
    fbtrace_id  text,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now (),
    updated_at  timestamptz NOT NULL DEFAULT now (),
    delivered_at timestamptz,
    UNIQUE (project_id, event_id, destination)
);
CREATE INDEX relay_deliveries_due ON relay_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX relay_deliveries_lease ON relay_deliveries (locked_until)
    WHERE status = 'in_flight';
CREATE INDEX relay_deliveries_project ON relay_deliveries (project_id, delivery_id);
CREATE INDEX relay_deliveries_dead ON relay_deliveries (project_id, delivery_id)
    WHERE status = 'dead';

-- Apple AdServices attribution answers. apple_org_id is Apple's "orgId" (the advertiser's
-- Search Ads organization), not a Layers tenant.
CREATE TABLE attributions (
    attribution_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org_id      uuid NOT NULL,
    project_id  uuid NOT NULL,
    event_received_at timestamptz NOT NULL,
    event_seq   bigint NOT NULL,
    event_id    text NOT NULL,
    user_id     text,
    attribution boolean NOT NULL,
    apple_org_id bigint,
    campaign_id bigint,
    ad_group_id bigint,
    keyword_id  bigint,
    ad_id       bigint,
    conversion_type   text,
    country_or_region text,
    claim_type  text,
    click_date  timestamptz,
    raw         jsonb NOT NULL CHECK (jsonb_typeof (raw) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now (),
    UNIQUE (project_id, event_id)
);
CREATE INDEX attributions_project ON attributions (project_id, attribution_id);


-- ---------------------------------------------------------------------------------------
-- Partner API: Idempotency-Key store. response_status is NULL while the first request with
-- the key is still running; a retry with another request_sha256 is refused.

CREATE TABLE api_idempotency (
    org_id      uuid NOT NULL
                DEFAULT nullif (current_setting ('layers.org_id', true), '')::uuid
                REFERENCES organizations ON DELETE CASCADE,
    idempotency_key text NOT NULL CHECK (length (idempotency_key) BETWEEN 1 AND 255),
    method      text NOT NULL CHECK (method ~ '^[A-Z]{1,10}$'),
    path        text NOT NULL CHECK (length (path) <= 2048),
    request_sha256 bytea NOT NULL CHECK (octet_length (request_sha256) = 32),
    response_status integer CHECK (response_status BETWEEN 100 AND 599),
    response_body text,
    created_at  timestamptz NOT NULL DEFAULT now (),
    completed_at timestamptz,
    PRIMARY KEY (org_id, idempotency_key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);


-- ---------------------------------------------------------------------------------------
-- updated_at triggers

CREATE TRIGGER organizations_touch BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();
CREATE TRIGGER projects_touch BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();
CREATE TRIGGER project_layers_touch BEFORE UPDATE ON project_layers
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();
CREATE TRIGGER members_touch BEFORE UPDATE ON members
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();
CREATE TRIGGER ads_content_touch BEFORE UPDATE ON ads_content
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();
CREATE TRIGGER content_jobs_touch BEFORE UPDATE ON content_jobs
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();
CREATE TRIGGER content_containers_touch BEFORE UPDATE ON content_containers
    FOR EACH ROW EXECUTE FUNCTION ly_touch_updated_at ();


-- ---------------------------------------------------------------------------------------
-- Tenancy: RLS enabled and forced, one tenant policy per table with org_id

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON projects
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE project_layers ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_layers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON project_layers
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE members ENABLE ROW LEVEL SECURITY;
ALTER TABLE members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON members
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_tokens
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE sdk_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE sdk_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sdk_keys
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE ads_content ENABLE ROW LEVEL SECURITY;
ALTER TABLE ads_content FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ads_content
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE project_ads_content ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_ads_content FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON project_ads_content
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE content_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE content_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON content_jobs
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE content_containers ENABLE ROW LEVEL SECURITY;
ALTER TABLE content_containers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON content_containers
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE sdk_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE sdk_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sdk_events
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

-- Partitions are reached through sdk_events, whose policy applies; each partition carries
-- the same rule anyway, so that a grant made on a partition cannot open it.
ALTER TABLE sdk_events_default ENABLE ROW LEVEL SECURITY;
ALTER TABLE sdk_events_default FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sdk_events_default
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE sdk_event_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE sdk_event_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sdk_event_ids
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE relay_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON relay_deliveries
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE attributions ENABLE ROW LEVEL SECURITY;
ALTER TABLE attributions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON attributions
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

ALTER TABLE api_idempotency ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_idempotency FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_idempotency
    USING (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid)
    WITH CHECK (org_id = nullif (current_setting ('layers.org_id', true), '')::uuid);

-- The key lookups work before any tenant is known: layers_auth reads credentials by hash
-- across tenants and stamps last_used_at (its column grants narrow it further).
CREATE POLICY auth_lookup ON api_tokens FOR SELECT TO layers_auth USING (true);
CREATE POLICY auth_touch ON api_tokens FOR UPDATE TO layers_auth USING (true) WITH CHECK (true);
CREATE POLICY auth_lookup ON sdk_keys FOR SELECT TO layers_auth USING (true);
CREATE POLICY auth_touch ON sdk_keys FOR UPDATE TO layers_auth USING (true) WITH CHECK (true);
CREATE POLICY auth_lookup ON projects FOR SELECT TO layers_auth USING (true);

-- The content orchestrator's queue spans tenants (it finds due and expired jobs after a
-- restart); everything else it does under the job's tenant.
CREATE POLICY content_queue ON content_jobs FOR SELECT TO layers_content USING (true);
CREATE POLICY content_queue_update ON content_jobs FOR UPDATE TO layers_content
    USING (true) WITH CHECK (true);


-- ---------------------------------------------------------------------------------------
-- Maintenance functions (SECURITY DEFINER, owned by layers_owner, which bypasses RLS)

-- Creates the monthly partitions of sdk_events (UTC months, named sdk_events_pYYYYMM) for
-- the current month and months_ahead months after it, each with the tenant policy. Rows
-- already in the default partition for a new month are moved into it. Cheap when nothing
-- is missing; returns the number of partitions created.
CREATE FUNCTION ly_ensure_event_partitions (months_ahead integer DEFAULT 3) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    first_month timestamp := date_trunc ('month', now () AT TIME ZONE 'UTC');
    month_start timestamp;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', months_ahead;
    END IF;
    PERFORM pg_advisory_xact_lock (hashtext ('ly_ensure_event_partitions'));
    FOR m IN 0 .. months_ahead LOOP
        month_start := first_month + make_interval (months => m);
        part := 'sdk_events_p' || to_char (month_start, 'YYYYMM');
        CONTINUE WHEN to_regclass ('public.' || part) IS NOT NULL;
        lo := month_start AT TIME ZONE 'UTC';
        hi := (month_start + interval '1 month') AT TIME ZONE 'UTC';
        -- The parent first, as inserts lock it (then the partitions): no deadlock with
        -- the store, and no row can reach the default partition while we look at it.
        LOCK TABLE sdk_events IN ACCESS EXCLUSIVE MODE;
        IF EXISTS (SELECT 1 FROM sdk_events_default
                    WHERE received_at >= lo AND received_at < hi) THEN
            EXECUTE format ('CREATE TABLE %I (LIKE sdk_events'
                            ' INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
            EXECUTE format ('WITH moved AS (DELETE FROM sdk_events_default'
                            ' WHERE received_at >= $1 AND received_at < $2 RETURNING *)'
                            ' INSERT INTO %I SELECT * FROM moved', part)
                USING lo, hi;
            EXECUTE format ('ALTER TABLE sdk_events ATTACH PARTITION %I'
                            ' FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        ELSE
            EXECUTE format ('CREATE TABLE %I PARTITION OF sdk_events'
                            ' FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        END IF;
        EXECUTE format ('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', part);
        EXECUTE format ('ALTER TABLE %I FORCE ROW LEVEL SECURITY', part);
        EXECUTE format ('CREATE POLICY tenant_isolation ON %I'
                        ' USING (org_id = nullif (current_setting (''layers.org_id'', true),'
                        ' '''')::uuid)'
                        ' WITH CHECK (org_id = nullif (current_setting (''layers.org_id'', true),'
                        ' '''')::uuid)', part);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Forgets dedup keys received before now() - keep; a re-sent event older than that is
-- stored again. Returns the number of keys removed.
CREATE FUNCTION ly_expire_event_ids (keep interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    removed bigint;
BEGIN
    IF keep IS NULL OR keep < interval '1 day' THEN
        RAISE EXCEPTION 'keep must be at least one day, not %', keep;
    END IF;
    DELETE FROM sdk_event_ids WHERE received_at < now () - keep;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

SELECT ly_ensure_event_partitions (3);


-- ---------------------------------------------------------------------------------------
-- Grants. Nothing is granted to PUBLIC; each server role gets what its actor needs.

GRANT SELECT ON roles TO layers_api, layers_auth, layers_store, layers_relay, layers_content;

-- layers_api: the partner API, always under a tenant.
GRANT SELECT, UPDATE ON organizations TO layers_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON projects, members, api_tokens, sdk_keys,
    ads_content, project_ads_content, content_containers, api_idempotency TO layers_api;
GRANT SELECT, INSERT, UPDATE ON content_jobs TO layers_api;
-- secrets are write-only, down to the column: the API may set secret_ciphertext, never read it
GRANT SELECT (org_id, project_id, layer, enabled, config, secret_names, secret_key_id,
              secret_key_version, secret_updated_at, created_at, updated_at)
    ON project_layers TO layers_api;
GRANT INSERT, UPDATE, DELETE ON project_layers TO layers_api;
GRANT SELECT ON sdk_events, relay_deliveries, attributions TO layers_api;
GRANT UPDATE (status, attempts, next_attempt_at, locked_by, locked_until, reason, updated_at)
    ON relay_deliveries TO layers_api;

-- layers_auth: lookups by hash, across tenants (policies above), nothing else.
GRANT SELECT (token_id, org_id, member_id, token_sha256, expires_at, revoked_at)
    ON api_tokens TO layers_auth;
GRANT UPDATE (last_used_at) ON api_tokens TO layers_auth;
GRANT SELECT (key_id, org_id, project_id, key_sha256, revoked_at) ON sdk_keys TO layers_auth;
GRANT UPDATE (last_used_at) ON sdk_keys TO layers_auth;
-- the phone normalization of the key's project travels with the key
GRANT SELECT (org_id, project_id, default_country_code) ON projects TO layers_auth;

-- layers_store: inserts events, dedup keys and the outbox; reads back only keys.
GRANT INSERT ON sdk_events, sdk_event_ids, relay_deliveries TO layers_store;
GRANT SELECT (org_id, project_id, event_id, received_at, seq) ON sdk_events TO layers_store;
GRANT SELECT (org_id, project_id, event_id, received_at) ON sdk_event_ids TO layers_store;
GRANT SELECT (delivery_id, project_id, event_id, destination) ON relay_deliveries TO layers_store;
GRANT SELECT (org_id, project_id, layer, enabled) ON project_layers TO layers_store;
GRANT USAGE ON SEQUENCE sdk_events_seq TO layers_store;
GRANT EXECUTE ON FUNCTION ly_ensure_event_partitions (integer) TO layers_store;
GRANT EXECUTE ON FUNCTION ly_expire_event_ids (interval) TO layers_store;

-- layers_relay: reads events and settings, works the outbox, records attributions.
GRANT SELECT ON sdk_events, project_layers TO layers_relay;
GRANT UPDATE (attribution_token) ON sdk_events TO layers_relay;
GRANT SELECT, UPDATE ON relay_deliveries TO layers_relay;
GRANT INSERT ON attributions TO layers_relay;
GRANT SELECT (attribution_id, org_id, project_id, event_id) ON attributions TO layers_relay;

-- layers_content: its jobs and containers, and the project's prompt material.
GRANT SELECT ON projects, ads_content, project_ads_content TO layers_content;
GRANT SELECT ON content_jobs TO layers_content;
GRANT UPDATE (state, attempts, next_attempt_at, locked_by, locked_until, error, result,
              started_at, finished_at, updated_at) ON content_jobs TO layers_content;
GRANT SELECT, INSERT, UPDATE ON content_containers TO layers_content;
