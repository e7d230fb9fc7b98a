-- 0009_relay_app_store_id.sql: the relay reads a project's App Store id.
--
-- TikTok's app.app_id is the App Store id for an iOS app (the Android package name
-- for an Android one). The project's app_store_id, set with the partner API, is the
-- one place it is kept: the relay reads that column and nothing else of projects.
GRANT SELECT (project_id, app_store_id) ON projects TO layers_relay;
