/*  ly_config.h: configuration from the environment (all optional, see DESIGN.md),
    loaded and validated once in main before any actor starts. */
#ifndef LY_CONFIG_H
#define LY_CONFIG_H

#include "ly_prelude.h"
#include "ly_log.h"
#include "ly_netaddr.h"

typedef struct {
    char *http_addr;        /* LAYERS_HTTP_ADDR, "host:port" */
    char *http_host;        /* parsed from http_addr */
    int http_port;          /* parsed from http_addr */
    char *data_dir;         /* LAYERS_DATA_DIR, absolute path */
    char *database_url;     /* LAYERS_DATABASE_URL, NULL: embedded PostgreSQL */
    char *media_url;        /* LAYERS_MEDIA_URL */
    char *geoip_db;         /* LAYERS_GEOIP_DB, NULL: no geo-IP */
    char *master_key_file;  /* LAYERS_MASTER_KEY_FILE */
    char *meta_url;         /* LAYERS_META_URL */
    char *meta_api_version; /* LAYERS_META_API_VERSION */
    char *tiktok_url;       /* LAYERS_TIKTOK_URL */
    char *adservices_url;   /* LAYERS_ADSERVICES_URL */
    char *model_url;        /* LAYERS_MODEL_URL, NULL: none */
    char *model_key;        /* LAYERS_MODEL_KEY (secret, never logged) */
    char *model_kind;       /* LAYERS_MODEL_KIND: openai | anthropic */
    char *trusted_proxies;  /* LAYERS_TRUSTED_PROXIES, comma-separated addresses and CIDR ranges */
    ly_netaddr_range_t *trusted_ranges;     /* the same, parsed; owned */
    size_t trusted_range_count;             /* entries in trusted_ranges */
    int64_t event_max_age;      /* LAYERS_EVENT_MAX_AGE, seconds: older event times are refused */
    int64_t event_max_future;   /* LAYERS_EVENT_MAX_FUTURE, seconds: further ahead, refused */
    int64_t event_retention;    /* LAYERS_EVENT_RETENTION, seconds events are kept; 0: for ever */
    int64_t project_event_rate; /* LAYERS_PROJECT_EVENT_RATE, events/s per project; 0: no limit */
    int64_t actor_timeout;      /* LAYERS_ACTOR_TIMEOUT, seconds an actor may not answer
                                   before the supervisor kills it; 0: never */
    ly_log_level_t log_level;   /* LAYERS_LOG_LEVEL */
} ly_config_t;

/*  Fills cfg from the environment with defaults; on an invalid value returns -1 and
    writes one clear sentence naming the variable into err. */
int ly_config_load (ly_config_t *cfg, char *err, size_t errlen);
void ly_config_free (ly_config_t *cfg);
/*  The address to listen on for LAYERS_HTTP_ADDR (freeaddrinfo it), or NULL when it does
    not resolve (logged under actor). */
struct addrinfo *ly_config_http_address (const char *actor);

/*  getenv (name), name remembered as a setting this process reads (name must be a
    static string): ly_config_load and every other reader of a LAYERS_* variable use it. */
const char *ly_config_getenv (const char *name);

/*  The next LAYERS_* variable of the environment, from *cursor on (0 to begin), that no
    ly_config_getenv asked for (a misspelled or retired setting, which nothing reads):
    its name into name, and in *closest the setting at most 3 edits from it, or NULL.
    false when there is none left. */
bool ly_config_unread (size_t *cursor, char *name, size_t size, const char **closest);

/*  The process-wide configuration, set once by main via ly_config_load. */
extern ly_config_t ly_config;

#endif
