/*  ly_config_test.c: self-test of ly_config: the defaults, every variable's valid and
    invalid values, error sentences that name the variable, and secrets kept out of them. */
#include "ly_prelude.h"
#include "ly_config.h"

#define S_KEY       "sk-test-SECRET-0123456789"

static char s_dir [PATH_MAX];       /* a fresh working directory, real path */

static const char *s_variables [] = {
    "LAYERS_HTTP_ADDR", "LAYERS_DATA_DIR", "LAYERS_DATABASE_URL", "LAYERS_MEDIA_URL",
    "LAYERS_GEOIP_DB", "LAYERS_MASTER_KEY_FILE", "LAYERS_META_URL",
    "LAYERS_META_API_VERSION", "LAYERS_TIKTOK_URL", "LAYERS_ADSERVICES_URL",
    "LAYERS_MODEL_URL", "LAYERS_MODEL_KEY", "LAYERS_MODEL_KIND",
    "LAYERS_TRUSTED_PROXIES", "LAYERS_EVENT_MAX_AGE", "LAYERS_EVENT_MAX_FUTURE",
    "LAYERS_EVENT_RETENTION", "LAYERS_PROJECT_EVENT_RATE", "LAYERS_ACTOR_TIMEOUT",
    "LAYERS_LOG_LEVEL", NULL
};

static void
s_clear_environment (void)
{
    for (const char **name = s_variables; *name; name++)
        unsetenv (*name);
}

static bool
s_is_zero (const ly_config_t *cfg)
{
    static const ly_config_t zero;
    return memcmp (cfg, &zero, sizeof zero) == 0;
}

//  Loads with name=value and expects success; returns the config (caller frees)
static ly_config_t
s_load_ok (const char *name, const char *value)
{
    if (name)
        setenv (name, value, 1);
    ly_config_t cfg;
    char err [512] = "";
    int rc = ly_config_load (&cfg, err, sizeof err);
    if (rc != 0) {
        printf ("%s=\"%s\" refused: %s\n", name, value, err);
        assert (false);
    }
    assert (err [0] == 0);
    if (name)
        unsetenv (name);
    return cfg;
}

//  Loads with name=value and expects an error naming the variable, containing
//  expected (when not NULL) and leaving cfg empty
static void
s_load_fails (const char *name, const char *value, const char *expected)
{
    setenv (name, value, 1);
    ly_config_t cfg;
    memset (&cfg, 0x5A, sizeof cfg);
    char err [512] = "";
    int rc = ly_config_load (&cfg, err, sizeof err);
    if (rc != -1 || !strstr (err, name) || (expected && !strstr (err, expected))) {
        printf ("%s=\"%s\": rc %d, error \"%s\", wanted \"%s\"\n",
                name, value, rc, err, expected? expected: "");
        assert (false);
    }
    assert (s_is_zero (&cfg));
    //  One sentence, PostgreSQL style: no newline, no final period, lower case after the name
    size_t len = strlen (err);
    assert (len > strlen (name) + 5 && !strchr (err, '\n') && err [len - 1] != '.');
    assert (!strstr (err, S_KEY) && !strstr (err, "SECRET"));
    unsetenv (name);
}

static void
s_test_defaults (void)
{
    ly_config_t cfg = s_load_ok (NULL, NULL);
    char expected [PATH_MAX + 64];
    assert (streq (cfg.http_addr, "127.0.0.1:8080"));
    assert (streq (cfg.http_host, "127.0.0.1"));
    assert (cfg.http_port == 8080);
    snprintf (expected, sizeof expected, "%s/var", s_dir);
    assert (streq (cfg.data_dir, expected));
    assert (cfg.database_url == NULL);
    snprintf (expected, sizeof expected, "file://%s/var/media", s_dir);
    assert (streq (cfg.media_url, expected));
    assert (cfg.geoip_db == NULL);
    snprintf (expected, sizeof expected, "%s/var/master.key", s_dir);
    assert (streq (cfg.master_key_file, expected));
    assert (streq (cfg.meta_url, "https://graph.facebook.com"));
    assert (streq (cfg.meta_api_version, "v26.0"));
    assert (streq (cfg.tiktok_url, "https://business-api.tiktok.com"));
    assert (streq (cfg.adservices_url, "https://api-adservices.apple.com/api/v1/"));
    assert (cfg.model_url == NULL);
    assert (cfg.model_key == NULL);
    assert (streq (cfg.model_kind, "openai"));
    assert (cfg.trusted_proxies == NULL);
    assert (cfg.event_max_age == 7 * 86400);
    assert (cfg.event_max_future == 300);
    assert (cfg.actor_timeout == 60);
    assert (cfg.log_level == LY_LOG_INFO);
    ly_config_free (&cfg);
    assert (s_is_zero (&cfg));
    ly_config_free (&cfg);          //  twice is harmless
    ly_config_free (NULL);

    //  An empty variable is an unset one
    for (const char **name = s_variables; *name; name++)
        setenv (*name, "", 1);
    ly_config_t empty = s_load_ok (NULL, NULL);
    assert (streq (empty.http_addr, "127.0.0.1:8080"));
    assert (empty.database_url == NULL && empty.model_key == NULL && empty.geoip_db == NULL);
    assert (streq (empty.meta_api_version, "v26.0") && empty.log_level == LY_LOG_INFO);
    ly_config_free (&empty);
    s_clear_environment ();

    //  The process-wide instance
    assert (s_is_zero (&ly_config));
    char err [256];
    assert (ly_config_load (&ly_config, err, sizeof err) == 0);
    assert (ly_config.http_port == 8080);
    ly_config_free (&ly_config);
    assert (s_is_zero (&ly_config));
}

static void
s_test_http_addr (void)
{
    const char *name = "LAYERS_HTTP_ADDR";
    ly_config_t cfg = s_load_ok (name, "0.0.0.0:80");
    assert (streq (cfg.http_host, "0.0.0.0") && cfg.http_port == 80);
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "[::1]:8080");
    assert (streq (cfg.http_addr, "[::1]:8080"));
    assert (streq (cfg.http_host, "::1") && cfg.http_port == 8080);
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "[2001:db8::10]:443");
    assert (streq (cfg.http_host, "2001:db8::10") && cfg.http_port == 443);
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "localhost:65535");
    assert (streq (cfg.http_host, "localhost") && cfg.http_port == 65535);
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "api-1.example.com:1");
    assert (streq (cfg.http_host, "api-1.example.com") && cfg.http_port == 1);
    ly_config_free (&cfg);

    s_load_fails (name, "foo", "LAYERS_HTTP_ADDR \"foo\" is not HOST:PORT");
    s_load_fails (name, ":8080", "is not HOST:PORT");
    s_load_fails (name, "::1:8080", "brackets");
    s_load_fails (name, "[::1]8080", "is not HOST:PORT");
    s_load_fails (name, "[::1", "is not HOST:PORT");
    s_load_fails (name, "[zz::1]:80", "IPv6");
    s_load_fails (name, "[127.0.0.1]:80", "IPv6");
    s_load_fails (name, "host:0", "port");
    s_load_fails (name, "host:65536", "port");
    s_load_fails (name, "host:", "port");
    s_load_fails (name, "host:http", "port");
    s_load_fails (name, "host:+80", "port");
    s_load_fails (name, "host:-1", "port");
    s_load_fails (name, "host:0080800", "port");
    s_load_fails (name, "host: 80", "port");
    s_load_fails (name, "ho st:80", "host name");
    s_load_fails (name, "-host:80", "host name");
    s_load_fails (name, "a..b:80", "host name");
    s_load_fails (name, "999.1.1.1:80", "host name");
    s_load_fails (name, "host_name:80", "host name");
}

static void
s_test_paths (void)
{
    char expected [PATH_MAX + 64];

    //  LAYERS_DATA_DIR: made absolute, need not exist
    ly_config_t cfg = s_load_ok ("LAYERS_DATA_DIR", "data/layers");
    snprintf (expected, sizeof expected, "%s/data/layers", s_dir);
    assert (streq (cfg.data_dir, expected));
    snprintf (expected, sizeof expected, "file://%s/data/layers/media", s_dir);
    assert (streq (cfg.media_url, expected));
    snprintf (expected, sizeof expected, "%s/data/layers/master.key", s_dir);
    assert (streq (cfg.master_key_file, expected));
    ly_config_free (&cfg);

    cfg = s_load_ok ("LAYERS_DATA_DIR", "./x/../y/./z//");
    snprintf (expected, sizeof expected, "%s/y/z", s_dir);
    assert (streq (cfg.data_dir, expected));
    ly_config_free (&cfg);

    assert (mkdir ("existing", 0700) == 0);
    cfg = s_load_ok ("LAYERS_DATA_DIR", "existing/");
    snprintf (expected, sizeof expected, "%s/existing", s_dir);
    assert (streq (cfg.data_dir, expected));
    ly_config_free (&cfg);

    cfg = s_load_ok ("LAYERS_DATA_DIR", "existing/new");
    snprintf (expected, sizeof expected, "%s/existing/new", s_dir);
    assert (streq (cfg.data_dir, expected));
    ly_config_free (&cfg);

    cfg = s_load_ok ("LAYERS_DATA_DIR", s_dir);
    assert (streq (cfg.data_dir, s_dir));
    ly_config_free (&cfg);

    //  The default media URL %-escapes the directory's odd bytes (RFC 8089)
    cfg = s_load_ok ("LAYERS_DATA_DIR", "/srv/d%41 b");
    assert (streq (cfg.media_url, "file:///srv/d%2541%20b/media"));
    ly_config_free (&cfg);

    cfg = s_load_ok ("LAYERS_DATA_DIR", "/");
    assert (streq (cfg.data_dir, "/"));
    assert (streq (cfg.media_url, "file:///media"));
    assert (streq (cfg.master_key_file, "/master.key"));
    ly_config_free (&cfg);

    FILE *file = fopen ("plain.mmdb", "w");
    assert (file);
    fputs ("not really a database", file);
    fclose (file);
    s_load_fails ("LAYERS_DATA_DIR", "plain.mmdb", "is not a directory");

    //  LAYERS_GEOIP_DB: optional, made absolute; whether it opens is layersd's check at
    //  start (an actor restarted after the file went away loads this again)
    cfg = s_load_ok ("LAYERS_GEOIP_DB", "plain.mmdb");
    snprintf (expected, sizeof expected, "%s/plain.mmdb", s_dir);
    assert (streq (cfg.geoip_db, expected));
    ly_config_free (&cfg);
    cfg = s_load_ok ("LAYERS_GEOIP_DB", "missing.mmdb");
    snprintf (expected, sizeof expected, "%s/missing.mmdb", s_dir);
    assert (streq (cfg.geoip_db, expected));
    ly_config_free (&cfg);

    //  LAYERS_MASTER_KEY_FILE: absolute, not a directory
    cfg = s_load_ok ("LAYERS_MASTER_KEY_FILE", "keys/master.key");
    snprintf (expected, sizeof expected, "%s/keys/master.key", s_dir);
    assert (streq (cfg.master_key_file, expected));
    ly_config_free (&cfg);
    cfg = s_load_ok ("LAYERS_MASTER_KEY_FILE", "/etc/layers/master.key");
    assert (streq (cfg.master_key_file, "/etc/layers/master.key"));
    ly_config_free (&cfg);
    s_load_fails ("LAYERS_MASTER_KEY_FILE", "existing", "is a directory");
}

static void
s_test_database_url (void)
{
    const char *name = "LAYERS_DATABASE_URL";
    ly_config_t cfg = s_load_ok (name, "postgres://layers@db.example.com:5432/layers");
    assert (streq (cfg.database_url, "postgres://layers@db.example.com:5432/layers"));
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "postgresql:///layers?host=/run/postgresql");
    assert (streq (cfg.database_url, "postgresql:///layers?host=/run/postgresql"));
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "host=/tmp port=5433 dbname=layers user=layers_store");
    assert (streq (cfg.database_url, "host=/tmp port=5433 dbname=layers user=layers_store"));
    ly_config_free (&cfg);

    s_load_fails (name, "mysql://db/layers", "postgres://");
    s_load_fails (name, "layers", "key=value");
    s_load_fails (name, "host=/tmp nosuchoption=1", "not a valid");
    //  A password never reaches the error
    s_load_fails (name, "postgresql://u:SECRET@h/db?nosuchparam=1", "not a valid");
    s_load_fails (name, "host=h password SECRET", "not a valid");
}

static void
s_test_media_url (void)
{
    const char *name = "LAYERS_MEDIA_URL";
    ly_config_t cfg = s_load_ok (name, "file:///srv/media");
    assert (streq (cfg.media_url, "file:///srv/media"));
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "s3://layers-media/prod");
    assert (streq (cfg.media_url, "s3://layers-media/prod"));
    ly_config_free (&cfg);

    s_load_fails (name, "http://SECRET@example.com/media", "file:// or s3://");
    s_load_fails (name, "/srv/media", "file:// or s3://");
    s_load_fails (name, "file://media", "absolute path");
    s_load_fails (name, "s3://", "bucket");
    s_load_fails (name, "s3:///SECRET", "bucket");
    s_load_fails (name, "s3://bucket/a SECRET", "spaces");
}

static void
s_test_http_urls (void)
{
    const char *names [] = { "LAYERS_META_URL", "LAYERS_TIKTOK_URL", "LAYERS_ADSERVICES_URL", NULL };
    for (const char **name = names; *name; name++) {
        ly_config_t cfg = s_load_ok (*name, "http://127.0.0.1:9100/meta");
        const char *value = streq (*name, "LAYERS_META_URL")? cfg.meta_url:
                            streq (*name, "LAYERS_TIKTOK_URL")? cfg.tiktok_url: cfg.adservices_url;
        assert (streq (value, "http://127.0.0.1:9100/meta"));
        ly_config_free (&cfg);
        cfg = s_load_ok (*name, "HTTPS://mock.example");
        ly_config_free (&cfg);

        s_load_fails (*name, "ftp://example.com", "\"ftp://example.com\" must start with http:// or https://");
        s_load_fails (*name, "graph.facebook.com", "http://");
        s_load_fails (*name, "https://", "has no host");
        s_load_fails (*name, "http:///path", "has no host");
        s_load_fails (*name, "https://exa mple.com", "spaces");
    }

    //  The model URL may hold a key: never repeated
    ly_config_t cfg = s_load_ok ("LAYERS_MODEL_URL", "http://127.0.0.1:9100/v1");
    assert (streq (cfg.model_url, "http://127.0.0.1:9100/v1"));
    ly_config_free (&cfg);
    s_load_fails ("LAYERS_MODEL_URL", "ftp://SECRET.example.com", "must start with http://");
    s_load_fails ("LAYERS_MODEL_URL", "https://x.example/?key=SECRET value", "spaces");
}

static void
s_test_model (void)
{
    ly_config_t cfg = s_load_ok ("LAYERS_META_API_VERSION", "v22.0");
    assert (streq (cfg.meta_api_version, "v22.0"));
    ly_config_free (&cfg);
    cfg = s_load_ok ("LAYERS_META_API_VERSION", "v1.10");
    ly_config_free (&cfg);
    const char *versions [] = { "21.0", "v21", "v21.", "v.1", "v21.0.1", "V21.0", "v21.0 ", "vx.y", NULL };
    for (const char **version = versions; *version; version++)
        s_load_fails ("LAYERS_META_API_VERSION", *version, "is not a version like v21.0");

    cfg = s_load_ok ("LAYERS_MODEL_KEY", S_KEY);
    assert (streq (cfg.model_key, S_KEY));
    ly_config_free (&cfg);
    assert (cfg.model_key == NULL);
    s_load_fails ("LAYERS_MODEL_KEY", "sk-SECRET value", "spaces");
    s_load_fails ("LAYERS_MODEL_KEY", S_KEY "\n", "control");

    //  A valid key stays out of another variable's error
    setenv ("LAYERS_MODEL_KEY", S_KEY, 1);
    s_load_fails ("LAYERS_MODEL_KIND", "gemini", "\"gemini\" is not openai or anthropic");
    s_load_fails ("LAYERS_LOG_LEVEL", "loud", "is not debug, info, warning or error");
    unsetenv ("LAYERS_MODEL_KEY");

    cfg = s_load_ok ("LAYERS_MODEL_KIND", "anthropic");
    assert (streq (cfg.model_kind, "anthropic"));
    ly_config_free (&cfg);
    cfg = s_load_ok ("LAYERS_MODEL_KIND", "OpenAI");
    assert (streq (cfg.model_kind, "openai"));
    ly_config_free (&cfg);
}

static void
s_test_trusted_proxies (void)
{
    const char *name = "LAYERS_TRUSTED_PROXIES";
    ly_config_t cfg = s_load_ok (name, "10.0.0.1");
    assert (streq (cfg.trusted_proxies, "10.0.0.1"));
    ly_config_free (&cfg);
    cfg = s_load_ok (name, "10.0.0.1, 2001:db8::1 ,\t::ffff:192.0.2.1");
    assert (streq (cfg.trusted_proxies, "10.0.0.1,2001:db8::1,::ffff:192.0.2.1"));
    ly_config_free (&cfg);

    s_load_fails (name, "10.0.0.1,,10.0.0.2", "empty entry");
    s_load_fails (name, "10.0.0.1,", "empty entry");
    s_load_fails (name, " ", "empty entry");
    cfg = s_load_ok (name, "10.0.0.0/8, fd00::/8,192.168.1.7/32");
    assert (streq (cfg.trusted_proxies, "10.0.0.0/8,fd00::/8,192.168.1.7/32"));
    assert (cfg.trusted_range_count == 3 && cfg.trusted_ranges [1].prefix == 8);
    ly_config_free (&cfg);

    //  Address bits past the prefix: the range written is not the one meant
    s_load_fails (name, "10.0.0.1/8", "entry \"10.0.0.1/8\" has address bits past its prefix:"
                  " write 10.0.0.0/8 for the range, or 10.0.0.1 alone for one proxy");
    s_load_fails (name, "10.0.0.0/8, 2001:db8::1/32", "write 2001:db8::/32 for the range");
    s_load_fails (name, "::ffff:10.0.0.1/104", "write ::ffff:10.0.0.0/104 for the range");
    cfg = s_load_ok (name, "10.0.0.0/8, 2001:db8::/32, ::ffff:10.0.0.0/104, 0.0.0.0/0");
    ly_config_free (&cfg);
    s_load_fails (name, "10.0.0.0/33", "entry \"10.0.0.0/33\" is not an IP address or CIDR range");
    s_load_fails (name, "10.0.0.0/", "entry \"10.0.0.0/\" is not an IP address or CIDR range");
    s_load_fails (name, "10.0.0.1, proxy.local", "entry \"proxy.local\" is not an IP address or CIDR range");
    s_load_fails (name, "10.0.0.256", "is not an IP address");
    s_load_fails (name, "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa", "is not an IP address");
}

//  The int64_t field at offset of the configuration loaded with name=value (NULL: unset)
static int64_t
s_loaded (const char *name, const char *value, size_t offset)
{
    ly_config_t cfg = s_load_ok (name, value);
    int64_t loaded = *(const int64_t *) ((const char *) &cfg + offset);
    ly_config_free (&cfg);
    return loaded;
}

#define S_LOADED(name, value, field) s_loaded (name, value, offsetof (ly_config_t, field))

//  Every text of bad refused with the sentence format (%s: the text)
static void
s_all_fail (const char *name, const char *bad [], const char *format)
{
    for (int i = 0; bad [i]; i++) {
        char reason [256];
        snprintf (reason, sizeof reason, format, bad [i]);
        s_load_fails (name, bad [i], reason);
    }
}

static void
s_test_ingest_settings (void)
{
    const char *age = "LAYERS_EVENT_MAX_AGE";
    const struct { const char *text; int64_t seconds; } good [] = {
        { "30d", 30 * 86400 }, { "36h", 36 * 3600 }, { "90m", 5400 }, { "600s", 600 },
        { "600", 600 }, { "60", 60 }, { "3650d", 3650 * 86400 }, { "0090m", 5400 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        assert (S_LOADED (age, good [i].text, event_max_age) == good [i].seconds);
        assert (S_LOADED (age, good [i].text, event_max_future) == 300);
    }
    const char *bad_ages [] = { "d", "59", "59s", "3651d", "7 d", " 7d", "7dd", "7w", "-7d",
                                "1.5d", "99999999999999999999999", "7D", NULL };
    s_all_fail (age, bad_ages, "LAYERS_EVENT_MAX_AGE \"%s\" is not a duration from 1 minute"
                " to 3650 days (a number with s, m, h or d; a bare number is seconds)");

    const char *future = "LAYERS_EVENT_MAX_FUTURE";
    assert (S_LOADED (future, "30s", event_max_future) == 30);
    assert (S_LOADED (future, "30s", event_max_age) == 7 * 86400);
    s_load_fails (future, "0", "LAYERS_EVENT_MAX_FUTURE \"0\" is not a duration from 1 second to 7 days");
    s_load_fails (future, "8d", "is not a duration from 1 second to 7 days");

    const char *retention = "LAYERS_EVENT_RETENTION";
    assert (S_LOADED (NULL, NULL, event_retention) == 0);          //  for ever
    assert (S_LOADED (retention, "400d", event_retention) == 400 * 86400);
    assert (S_LOADED (retention, "24h", event_retention) == 86400);
    s_load_fails (retention, "23h", "LAYERS_EVENT_RETENTION \"23h\" is not a duration from 1 day to 36500 days");
    s_load_fails (retention, "0", "is not a duration");

    const char *rate = "LAYERS_PROJECT_EVENT_RATE";
    assert (S_LOADED (NULL, NULL, project_event_rate) == 0);       //  no limit
    assert (S_LOADED (rate, "2000", project_event_rate) == 2000);
    const char *bad_rates [] = { "0", "-5", "1.5", "2k", " 10", "100000001", "99999999999999999999", NULL };
    s_all_fail (rate, bad_rates, "LAYERS_PROJECT_EVENT_RATE \"%s\" is not a whole number"
                " from 1 to 100000000");

    const char *timeout = "LAYERS_ACTOR_TIMEOUT";
    assert (S_LOADED (timeout, "0", actor_timeout) == 0);          //  never
    assert (S_LOADED (timeout, "0s", actor_timeout) == 0);
    assert (S_LOADED (timeout, "0m", actor_timeout) == 0);
    assert (S_LOADED (timeout, "5s", actor_timeout) == 5);
    assert (S_LOADED (timeout, "2m", actor_timeout) == 120);
    const char *bad_timeouts [] = { "00", "-1", "2d", "5 s", "off", NULL };
    s_all_fail (timeout, bad_timeouts, "LAYERS_ACTOR_TIMEOUT \"%s\" is not a duration from"
                " 1 second to 1 day (a number with s, m, h or d; a bare number is seconds), or 0 for never");
}

static void
s_test_log_level (void)
{
    const char *name = "LAYERS_LOG_LEVEL";
    const char *texts [] = { "debug", "info", "WARNING", "Error" };
    for (int level = LY_LOG_DEBUG; level <= LY_LOG_ERROR; level++) {
        ly_config_t cfg = s_load_ok (name, texts [level]);
        assert (cfg.log_level == (ly_log_level_t) level);
        ly_config_free (&cfg);
    }
    s_load_fails (name, "verbose", "\"verbose\"");
    s_load_fails (name, "warn", "\"warn\"");

    //  The first wrong variable is reported, and a NULL err is allowed
    setenv ("LAYERS_HTTP_ADDR", "nope", 1);
    setenv (name, "nope", 1);
    char err [256];
    ly_config_t cfg;
    assert (ly_config_load (&cfg, err, sizeof err) == -1);
    assert (strstr (err, "LAYERS_HTTP_ADDR"));
    assert (ly_config_load (&cfg, NULL, 0) == -1);
    //  A short buffer still gets the start of the sentence
    char small [12];
    assert (ly_config_load (&cfg, small, sizeof small) == -1);
    assert (streq (small, "LAYERS_HTTP"));
    s_clear_environment ();
}

int
main (void)
{
    s_clear_environment ();
    char template [] = "/tmp/ly_config_test.XXXXXX";
    assert (mkdtemp (template));
    assert (realpath (template, s_dir));
    assert (chdir (s_dir) == 0);

    s_test_defaults ();
    s_test_http_addr ();
    s_test_paths ();
    s_test_database_url ();
    s_test_media_url ();
    s_test_http_urls ();
    s_test_model ();
    s_test_trusted_proxies ();
    s_test_ingest_settings ();
    s_test_log_level ();

    assert (unlink ("plain.mmdb") == 0);
    assert (rmdir ("existing") == 0);
    assert (chdir ("/") == 0);
    assert (rmdir (s_dir) == 0);
    printf ("ly_config_test: OK\n");
    return 0;
}
