-- 0014_token_touch.sql: an API token's last_used_at is stamped outside the request.
--
-- The api actor stamped last_used_at inside each request's transaction: a long request
-- held the token's row to its end, and every other request with that token, and its
-- revocation, waited for it. The stamp now goes with the token lookup (layers_auth, its
-- own short statement), at most once a minute and skipping a row another transaction
-- holds: the role reads last_used_at to tell.
GRANT SELECT (last_used_at) ON api_tokens TO layers_auth;
