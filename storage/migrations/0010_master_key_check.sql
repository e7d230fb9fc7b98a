-- 0010_master_key_check.sql: which master key this database was set up with.
--
-- Layer secrets, idempotent answers and the server roles' passwords are sealed with or
-- derived from the master key file. A key file lost (or a LAYERS_MASTER_KEY_FILE
-- mistyped, or a data directory wiped while its database lives elsewhere) used to be
-- replaced by a new key without a word, and every sealed secret stopped opening. The
-- row holds an HMAC of a fixed label under the key, which says nothing of the key; a
-- process with another key refuses to start. Written by the first process that runs
-- with this migration applied; no server role reads it.
CREATE TABLE master_key_check (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    check_hex  text NOT NULL CHECK (check_hex ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now ()
);
