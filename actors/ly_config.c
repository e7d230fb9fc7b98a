/*  ly_config.c: reads the LAYERS_* environment once, in main, applies the defaults of
    DESIGN.md and refuses a bad value with one sentence naming the variable. An empty
    variable counts as unset. Values that may carry credentials (the database and media
    URLs, the model URL and key) are never repeated in an error. */
#include "ly_prelude.h"
#include "ly_config.h"
#include "ly_netaddr.h"
#include "ly_time.h"
#include <netdb.h>

#define S_VALUE_MAX     200     /* longest value repeated in an error */

ly_config_t ly_config;


//  --------------------------------------------------------------------------
//  Helpers; each returns 0 / -1 and on -1 has written the reason into err

static int
s_fail (char *err, size_t errlen, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_fail (char *err, size_t errlen, const char *format, ...)
{
    if (errlen > 0) {
        va_list args;
        va_start (args, format);
        vsnprintf (err, errlen, format, args);
        va_end (args);
    }
    return -1;
}

#define S_SETTINGS_MAX 64

static const char *s_settings [S_SETTINGS_MAX];    //  names asked for, static strings
static size_t s_setting_count = 0;
static pthread_mutex_t s_settings_lock = PTHREAD_MUTEX_INITIALIZER;

const char *
ly_config_getenv (const char *name)
{
    pthread_mutex_lock (&s_settings_lock);
    size_t i = 0;
    while (i < s_setting_count && strcmp (s_settings [i], name) != 0)
        i++;
    if (i == s_setting_count && s_setting_count < S_SETTINGS_MAX)
        s_settings [s_setting_count++] = name;
    pthread_mutex_unlock (&s_settings_lock);
    return getenv (name);
}

//  Edits (insert, delete, replace, swap of neighbours) from a to b, case aside, up to 9
static size_t
s_distance (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    if (la > 64 || lb > 64 || (la > lb? la - lb: lb - la) > 9)
        return 10;
    size_t d [65][65];
    for (size_t i = 0; i <= la; i++)
        d [i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d [0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d [i - 1][j - 1] + (toupper ((unsigned char) a [i - 1])
                                              != toupper ((unsigned char) b [j - 1]));
            if (d [i - 1][j] + 1 < best)
                best = d [i - 1][j] + 1;
            if (d [i][j - 1] + 1 < best)
                best = d [i][j - 1] + 1;
            if (i > 1 && j > 1 && toupper ((unsigned char) a [i - 1]) == toupper ((unsigned char) b [j - 2])
            &&  toupper ((unsigned char) a [i - 2]) == toupper ((unsigned char) b [j - 1])
            &&  d [i - 2][j - 2] + 1 < best)
                best = d [i - 2][j - 2] + 1;
            d [i][j] = best;
        }
    return d [la][lb];
}

bool
ly_config_unread (size_t *cursor, char *name, size_t size, const char **closest)
{
    extern char **environ;
    for (; environ [*cursor]; (*cursor)++) {
        const char *entry = environ [*cursor];
        const char *equals = strchr (entry, '=');
        if (strncmp (entry, "LAYERS_", 7) != 0 || !equals)
            continue;
        size_t len = (size_t) (equals - entry);
        snprintf (name, size, "%.*s", (int) len, entry);
        pthread_mutex_lock (&s_settings_lock);
        bool known = false;
        size_t nearest = 4;             //  at most 3 edits away to be named
        *closest = NULL;
        for (size_t i = 0; i < s_setting_count && !known; i++) {
            known = strcmp (s_settings [i], name) == 0;
            size_t distance = s_distance (s_settings [i], name);
            if (distance < nearest) {
                nearest = distance;
                *closest = s_settings [i];
            }
        }
        pthread_mutex_unlock (&s_settings_lock);
        if (!known) {
            (*cursor)++;
            return true;
        }
    }
    return false;
}

//  The variable's value, or NULL when it is unset or empty
static const char *
s_env (const char *name)
{
    const char *value = ly_config_getenv (name);
    return value && *value? value: NULL;
}

//  Stores a copy of value in *field (which must be NULL)
static int
s_set (char **field, const char *value, char *err, size_t errlen)
{
    assert (*field == NULL);
    *field = strdup (value);
    if (!*field)
        return s_fail (err, errlen, "out of memory");
    return 0;
}

static int
s_set_printf (char **field, char *err, size_t errlen, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static int
s_set_printf (char **field, char *err, size_t errlen, const char *format, ...)
{
    assert (*field == NULL);
    va_list args;
    va_start (args, format);
    int rc = vasprintf (field, format, args);
    va_end (args);
    if (rc < 0) {
        *field = NULL;
        return s_fail (err, errlen, "out of memory");
    }
    return 0;
}

static bool
s_has_space_or_control (const char *value)
{
    for (const unsigned char *c = (const unsigned char *) value; *c; c++)
        if (*c <= ' ' || *c == 0x7F)
            return true;
    return false;
}

static bool
s_prefix (const char *value, const char *prefix)
{
    return strncasecmp (value, prefix, strlen (prefix)) == 0;
}

//  Lexical clean-up of an absolute path: no "//", ".", "..", or trailing "/".
//  Works in place; the result is never longer than the input.
static void
s_normalize (char *path)
{
    assert (path [0] == '/');
    char *out = path;
    const char *in = path;
    while (*in) {
        while (*in == '/')
            in++;
        const char *start = in;
        while (*in && *in != '/')
            in++;
        size_t len = in - start;
        if (len == 0 || (len == 1 && start [0] == '.'))
            continue;
        if (len == 2 && start [0] == '.' && start [1] == '.') {
            while (out > path && *--out != '/')
                ;
            continue;
        }
        *out++ = '/';
        memmove (out, start, len);
        out += len;
    }
    if (out == path)
        *out++ = '/';
    *out = 0;
}

//  Makes path absolute without requiring that it exist: its real path when it
//  does, else the real path of its parent plus the last component, else the path
//  joined to the working directory and cleaned up. Caller owns; NULL with errno.
static char *
s_absolute (const char *path)
{
    char *real = realpath (path, NULL);
    if (real)
        return real;

    char *copy = strdup (path);
    if (!copy)
        return NULL;
    size_t len = strlen (copy);
    while (len > 1 && copy [len - 1] == '/')
        copy [--len] = 0;
    char *slash = strrchr (copy, '/');
    const char *base = slash? slash + 1: copy;
    const char *parent = ".";
    if (slash) {
        *slash = 0;
        parent = *copy? copy: "/";
    }
    char *result = NULL;
    if (*base && strcmp (base, ".") != 0 && strcmp (base, "..") != 0
    &&  (real = realpath (parent, NULL))) {
        if (asprintf (&result, "%s/%s", streq (real, "/")? "": real, base) < 0)
            result = NULL;
        free (real);
        free (copy);
        return result;
    }
    free (copy);

    if (path [0] == '/')
        result = strdup (path);
    else {
        char *cwd = getcwd (NULL, 0);
        if (!cwd)
            return NULL;
        if (asprintf (&result, "%s/%s", cwd, path) < 0)
            result = NULL;
        free (cwd);
    }
    if (result)
        s_normalize (result);
    return result;
}

//  Resolves a path variable into *field; a relative value is taken from the
//  working directory
static int
s_set_path (char **field, const char *name, const char *value, char *err, size_t errlen)
{
    *field = s_absolute (value);
    if (!*field)
        return s_fail (err, errlen, "could not resolve %s \"%.*s\": %s",
                       name, S_VALUE_MAX, value, strerror (errno));
    return 0;
}

//  A host name as RFC 1123 allows it; a dotted number must be an IPv4 address
static bool
s_valid_host (const char *host)
{
    size_t len = strlen (host);
    if (len == 0 || len > 253)
        return false;
    if (strspn (host, "0123456789.") == len) {
        struct in_addr addr;
        return inet_pton (AF_INET, host, &addr) == 1;
    }
    const char *label = host;
    while (true) {
        size_t size = strspn (label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-");
        if (size == 0 || size > 63 || label [0] == '-' || label [size - 1] == '-')
            return false;
        if (label [size] == 0)
            return true;
        if (label [size] != '.')
            return false;
        label += size + 1;
    }
}

//  An http:// or https:// URL with a host and no spaces. A secret value (one that
//  may hold a key) is not repeated in the error.
static int
s_check_http_url (const char *name, const char *value, bool secret, char *err, size_t errlen)
{
    char subject [S_VALUE_MAX + 64];
    if (secret)
        snprintf (subject, sizeof subject, "%s", name);
    else
        snprintf (subject, sizeof subject, "%s \"%.*s\"", name, S_VALUE_MAX, value);

    size_t scheme = s_prefix (value, "http://")? 7: s_prefix (value, "https://")? 8: 0;
    if (scheme == 0)
        return s_fail (err, errlen, "%s must start with http:// or https://", subject);
    if (s_has_space_or_control (value))
        return s_fail (err, errlen, "%s must not contain spaces or control characters", subject);
    char next = value [scheme];
    if (next == 0 || next == '/' || next == '?' || next == '#' || next == ':')
        return s_fail (err, errlen, "%s has no host", subject);
    return 0;
}

//  A web-service URL variable with a default
static int
s_load_http_url (char **field, const char *name, const char *fallback, bool secret,
                 char *err, size_t errlen)
{
    const char *value = s_env (name);
    if (!value)
        return fallback? s_set (field, fallback, err, errlen): 0;
    if (s_check_http_url (name, value, secret, err, errlen))
        return -1;
    return s_set (field, value, err, errlen);
}


//  --------------------------------------------------------------------------
//  One loader per variable

static int
s_load_http_addr (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_HTTP_ADDR";
    const char *value = s_env (name);
    if (!value)
        value = "127.0.0.1:8080";
    const char *colon;
    if (value [0] == '[') {
        const char *close = strchr (value, ']');
        if (!close || close [1] != ':')
            return s_fail (err, errlen, "%s \"%.*s\" is not HOST:PORT", name, S_VALUE_MAX, value);
        cfg->http_host = strndup (value + 1, close - value - 1);
        if (!cfg->http_host)
            return s_fail (err, errlen, "out of memory");
        struct in6_addr addr;
        if (inet_pton (AF_INET6, cfg->http_host, &addr) != 1)
            return s_fail (err, errlen, "%s \"%.*s\" has an invalid IPv6 address in brackets",
                           name, S_VALUE_MAX, value);
        colon = close + 1;
    }
    else {
        colon = strrchr (value, ':');
        if (!colon || colon == value)
            return s_fail (err, errlen, "%s \"%.*s\" is not HOST:PORT", name, S_VALUE_MAX, value);
        if (memchr (value, ':', colon - value))
            return s_fail (err, errlen, "%s \"%.*s\" is not HOST:PORT (write an IPv6 address in brackets, as in [::1]:8080)",
                           name, S_VALUE_MAX, value);
        cfg->http_host = strndup (value, colon - value);
        if (!cfg->http_host)
            return s_fail (err, errlen, "out of memory");
        if (!s_valid_host (cfg->http_host))
            return s_fail (err, errlen, "%s \"%.*s\" has an invalid host name", name, S_VALUE_MAX, value);
    }
    const char *port = colon + 1;
    size_t digits = strspn (port, "0123456789");
    long number = digits > 0 && digits <= 5 && port [digits] == 0? strtol (port, NULL, 10): 0;
    if (number < 1 || number > 65535)
        return s_fail (err, errlen, "%s \"%.*s\" has an invalid port: it must be a number from 1 to 65535",
                       name, S_VALUE_MAX, value);
    cfg->http_port = (int) number;
    ly_log_own_address (cfg->http_host);    //  not a client's: shown in the log
    return s_set (&cfg->http_addr, value, err, errlen);
}

static int
s_load_data_dir (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_DATA_DIR";
    const char *value = s_env (name);
    if (!value)
        value = "./var";
    if (s_set_path (&cfg->data_dir, name, value, err, errlen))
        return -1;
    struct stat st;
    if (stat (cfg->data_dir, &st) == 0 && !S_ISDIR (st.st_mode))
        return s_fail (err, errlen, "%s \"%.*s\" is not a directory", name, S_VALUE_MAX, value);
    return 0;
}

static int
s_load_database_url (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_DATABASE_URL";
    const char *value = s_env (name);
    if (!value)
        return 0;                   //  embedded PostgreSQL
    bool uri = strncmp (value, "postgres://", 11) == 0 || strncmp (value, "postgresql://", 13) == 0;
    if (!uri && !strchr (value, '='))
        return s_fail (err, errlen, "%s must start with postgres:// or postgresql://, or be a key=value connection string",
                       name);
    //  libpq's reason is not repeated: it may quote a piece of the password
    char *reason = NULL;
    PQconninfoOption *options = PQconninfoParse (value, &reason);
    if (reason)
        PQfreemem (reason);
    if (!options)
        return s_fail (err, errlen, "%s is not a valid PostgreSQL connection %s",
                       name, uri? "URI": "string");
    PQconninfoFree (options);
    return s_set (&cfg->database_url, value, err, errlen);
}

static int
s_load_media_url (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_MEDIA_URL";
    const char *value = s_env (name);
    if (!value) {
        //  A URL (RFC 8089): the directory's bytes beyond the unreserved ones %-escaped,
        //  so that "d%41" or "a b" is read back as that directory
        const char *dir = streq (cfg->data_dir, "/")? "": cfg->data_dir;
        char *escaped = (char *) malloc (strlen (dir) * 3 + 1);
        if (!escaped)
            return s_fail (err, errlen, "out of memory");
        size_t used = 0;
        for (const unsigned char *c = (const unsigned char *) dir; *c; c++)
            if (isalnum (*c) || strchr ("/-._~", *c))
                escaped [used++] = (char) *c;
            else
                used += (size_t) sprintf (escaped + used, "%%%02X", *c);
        escaped [used] = 0;
        int rc = s_set_printf (&cfg->media_url, err, errlen, "file://%s/media", escaped);
        free (escaped);
        return rc;
    }
    if (s_has_space_or_control (value))
        return s_fail (err, errlen, "%s must not contain spaces or control characters", name);
    if (strncmp (value, "file://", 7) == 0) {
        if (value [7] != '/')
            return s_fail (err, errlen, "%s needs an absolute path after file://, as in file:///srv/media", name);
    }
    else
    if (strncmp (value, "s3://", 5) == 0) {
        if (value [5] == 0 || value [5] == '/')
            return s_fail (err, errlen, "%s needs a bucket after s3://", name);
    }
    else
        return s_fail (err, errlen, "%s must start with file:// or s3://", name);
    return s_set (&cfg->media_url, value, err, errlen);
}

static int
s_load_geoip_db (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_GEOIP_DB";
    const char *value = s_env (name);
    if (!value)
        return 0;                   //  no geo-IP
    //  Whether the file opens is layersd's check at start (ly_geoip_new), not this
    //  one's: every actor process loads the configuration again, and one started after
    //  the file went away must still run
    return s_set_path (&cfg->geoip_db, name, value, err, errlen);
}

static int
s_load_master_key_file (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_MASTER_KEY_FILE";
    const char *value = s_env (name);
    if (!value)
        return s_set_printf (&cfg->master_key_file, err, errlen, "%s/master.key",
                             streq (cfg->data_dir, "/")? "": cfg->data_dir);
    if (s_set_path (&cfg->master_key_file, name, value, err, errlen))
        return -1;
    struct stat st;
    if (stat (cfg->master_key_file, &st) == 0 && S_ISDIR (st.st_mode))
        return s_fail (err, errlen, "%s \"%.*s\" is a directory", name, S_VALUE_MAX, value);
    return 0;
}

static int
s_load_meta_api_version (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_META_API_VERSION";
    const char *value = s_env (name);
    if (!value)
        value = "v26.0";             //  Meta's current one (2026-07-29); v21.0 ends 2027-01-21
    //  ^v[0-9]+\.[0-9]+$
    size_t major = value [0] == 'v'? strspn (value + 1, "0123456789"): 0;
    size_t minor = major && value [1 + major] == '.'? strspn (value + 2 + major, "0123456789"): 0;
    if (!minor || value [2 + major + minor] != 0)
        return s_fail (err, errlen, "%s \"%.*s\" is not a version like v21.0", name, S_VALUE_MAX, value);
    return s_set (&cfg->meta_api_version, value, err, errlen);
}

static int
s_load_model_key (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_MODEL_KEY";
    const char *value = s_env (name);
    if (!value)
        return 0;
    //  The key goes into an HTTP header; its value is never repeated
    if (s_has_space_or_control (value))
        return s_fail (err, errlen, "%s must not contain spaces or control characters", name);
    return s_set (&cfg->model_key, value, err, errlen);
}

static int
s_load_model_kind (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_MODEL_KIND";
    const char *value = s_env (name);
    if (!value)
        value = "openai";
    if (strcasecmp (value, "openai") == 0)
        return s_set (&cfg->model_kind, "openai", err, errlen);
    if (strcasecmp (value, "anthropic") == 0)
        return s_set (&cfg->model_kind, "anthropic", err, errlen);
    return s_fail (err, errlen, "%s \"%.*s\" is not openai or anthropic", name, S_VALUE_MAX, value);
}

//  Addresses and CIDR ranges, stored without spaces ("10.0.0.1,2001:db8::/32") and
//  parsed, for the gateway
static int
s_load_trusted_proxies (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_TRUSTED_PROXIES";
    const char *value = s_env (name);
    if (!value)
        return 0;
    char *list = malloc (strlen (value) + 1);
    size_t entries = 1;
    for (const char *at = value; *at; at++)
        entries += *at == ',';
    ly_netaddr_range_t *ranges = (ly_netaddr_range_t *) calloc (entries, sizeof *ranges);
    if (!list || !ranges) {
        free (list);
        free (ranges);
        return s_fail (err, errlen, "out of memory");
    }
    size_t count = 0;
    size_t size = 0;
    const char *entry = value;
    while (true) {
        const char *end = strchr (entry, ',');
        if (!end)
            end = entry + strlen (entry);
        while (entry < end && (*entry == ' ' || *entry == '\t'))
            entry++;
        const char *last = end;
        while (last > entry && (last [-1] == ' ' || last [-1] == '\t'))
            last--;
        size_t len = last - entry;
        if (len == 0) {
            free (list);
            free (ranges);
            return s_fail (err, errlen, "%s \"%.*s\" has an empty entry", name, S_VALUE_MAX, value);
        }
        if (ly_netaddr_range_parse (entry, len, &ranges [count++])) {
            free (list);
            free (ranges);
            return s_fail (err, errlen, "%s entry \"%.*s\" is not an IP address or CIDR range",
                           name, (int) (len < S_VALUE_MAX? len: S_VALUE_MAX), entry);
        }
        //  "10.0.0.1/8" trusts all of 10/8: likely one proxy meant, never what is written
        const char *slash = (const char *) memchr (entry, '/', len);
        uint8_t written [16];
        if (slash && ly_netaddr_parse (entry, (size_t) (slash - entry), written) == 0
        &&  memcmp (written, ranges [count - 1].bytes, sizeof written) != 0) {
            char network [INET6_ADDRSTRLEN];
            if (memchr (entry, ':', (size_t) (slash - entry)))  //  as written: ::ffff:10.0.0.0
                inet_ntop (AF_INET6, ranges [count - 1].bytes, network, sizeof network);
            else
                ly_netaddr_format (ranges [count - 1].bytes, network);
            int written_len = (int) (slash - entry);
            int bits_len = (int) (last - slash);
            s_fail (err, errlen, "%s entry \"%.*s\" has address bits past its prefix: write"
                    " %s%.*s for the range, or %.*s alone for one proxy", name,
                    (int) (len < S_VALUE_MAX? len: S_VALUE_MAX), entry, network, bits_len, slash,
                    written_len, entry);
            free (list);
            free (ranges);
            return -1;
        }
        if (size)
            list [size++] = ',';
        memcpy (list + size, entry, len);
        size += len;
        if (*end == 0)
            break;
        entry = end + 1;
    }
    list [size] = 0;
    cfg->trusted_proxies = list;
    cfg->trusted_ranges = ranges;
    cfg->trusted_range_count = count;
    return 0;
}

//  Reads the decimal digits at text into *number, stopping once it passes cap (so it
//  cannot overflow); returns what follows, or NULL when there was no digit.
static const char *
s_whole_number (const char *text, int64_t cap, int64_t *number)
{
    const char *at = text;
    *number = 0;
    while (*at >= '0' && *at <= '9' && *number <= cap)
        *number = *number * 10 + (*at++ - '0');
    return at == text? NULL: at;
}

//  A whole number from low to high, fallback when unset. With units, a duration in
//  seconds: the number may end in s (the default), m, h or d. With zero_off, "0" is
//  taken too (whatever low is): the setting is off.
static int
s_load_number (int64_t *out, const char *name, int64_t fallback, int64_t low, int64_t high,
               bool units, bool zero_off, char *err, size_t errlen)
{
    const char *value = s_env (name);
    *out = fallback;
    if (!value)
        return 0;
    int64_t number, unit = 1;
    const char *at = s_whole_number (value, high, &number);
    if (units && at && *at && strchr ("smhd", *at)) {
        unit = *at == 'd'? 86400: *at == 'h'? 3600: *at == 'm'? 60: 1;
        at++;
    }
    bool zero = value [0] == '0' && (!value [1] || (units && strchr ("smhd", value [1]) && !value [2]));
    if (zero_off && zero) {                             //  "0", "0s", "0m": off
        *out = 0;
        return 0;
    }
    if (!at || *at || number > high / unit || number * unit < low || number * unit > high) {
        if (!units)
            return s_fail (err, errlen, "%s \"%.*s\" is not a whole number from %" PRId64
                           " to %" PRId64, name, S_VALUE_MAX, value, low, high);
        char from [32], to [32];
        ly_time_duration_text (low, from, sizeof from);
        ly_time_duration_text (high, to, sizeof to);
        return s_fail (err, errlen, "%s \"%.*s\" is not a duration from %s to %s"
                       " (a number with s, m, h or d; a bare number is seconds)%s", name, S_VALUE_MAX, value, from, to,
                       zero_off? ", or 0 for never": "");
    }
    *out = number * unit;
    return 0;
}

static int
s_load_log_level (ly_config_t *cfg, char *err, size_t errlen)
{
    const char *name = "LAYERS_LOG_LEVEL";
    const char *value = s_env (name);
    cfg->log_level = LY_LOG_INFO;
    if (value && ly_log_level_parse (value, &cfg->log_level))
        return s_fail (err, errlen, "%s \"%.*s\" is not debug, info, warning or error",
                       name, S_VALUE_MAX, value);
    return 0;
}


//  --------------------------------------------------------------------------
//  Fills cfg (overwritten: free a loaded one first) from the environment. On -1,
//  cfg holds nothing and err says which variable is wrong and why.

int
ly_config_load (ly_config_t *cfg, char *err, size_t errlen)
{
    assert (cfg);
    assert (err || errlen == 0);
    memset (cfg, 0, sizeof *cfg);
    if (errlen > 0)
        err [0] = 0;
    if (s_load_http_addr (cfg, err, errlen)
    ||  s_load_data_dir (cfg, err, errlen)
    ||  s_load_database_url (cfg, err, errlen)
    ||  s_load_media_url (cfg, err, errlen)
    ||  s_load_geoip_db (cfg, err, errlen)
    ||  s_load_master_key_file (cfg, err, errlen)
    ||  s_load_http_url (&cfg->meta_url, "LAYERS_META_URL",
                         "https://graph.facebook.com", false, err, errlen)
    ||  s_load_meta_api_version (cfg, err, errlen)
    ||  s_load_http_url (&cfg->tiktok_url, "LAYERS_TIKTOK_URL",
                         "https://business-api.tiktok.com", false, err, errlen)
    ||  s_load_http_url (&cfg->adservices_url, "LAYERS_ADSERVICES_URL",
                         "https://api-adservices.apple.com/api/v1/", false, err, errlen)
    ||  s_load_http_url (&cfg->model_url, "LAYERS_MODEL_URL", NULL, true, err, errlen)
    ||  s_load_model_key (cfg, err, errlen)
    ||  s_load_model_kind (cfg, err, errlen)
    ||  s_load_trusted_proxies (cfg, err, errlen)
    ||  s_load_number (&cfg->event_max_age, "LAYERS_EVENT_MAX_AGE", 7 * 86400, 60,
                       3650 * 86400, true, false, err, errlen)
    ||  s_load_number (&cfg->event_max_future, "LAYERS_EVENT_MAX_FUTURE", 300, 1,
                       7 * 86400, true, false, err, errlen)
    ||  s_load_number (&cfg->event_retention, "LAYERS_EVENT_RETENTION", 0, 86400,
                       36500 * 86400LL, true, false, err, errlen)
    ||  s_load_number (&cfg->project_event_rate, "LAYERS_PROJECT_EVENT_RATE", 0, 1,
                       100000000, false, false, err, errlen)
    ||  s_load_number (&cfg->actor_timeout, "LAYERS_ACTOR_TIMEOUT", 60, 1, 86400,
                       true, true, err, errlen)
    ||  s_load_log_level (cfg, err, errlen)) {
        ly_config_free (cfg);
        return -1;
    }
    return 0;
}

//  Frees every string (the model key is wiped first) and zeroes cfg
void
ly_config_free (ly_config_t *cfg)
{
    if (!cfg)
        return;
    if (cfg->model_key)
        explicit_bzero (cfg->model_key, strlen (cfg->model_key));
    free (cfg->http_addr);
    free (cfg->http_host);
    free (cfg->data_dir);
    free (cfg->database_url);
    free (cfg->media_url);
    free (cfg->geoip_db);
    free (cfg->master_key_file);
    free (cfg->meta_url);
    free (cfg->meta_api_version);
    free (cfg->tiktok_url);
    free (cfg->adservices_url);
    free (cfg->model_url);
    free (cfg->model_key);
    free (cfg->model_kind);
    free (cfg->trusted_proxies);
    free (cfg->trusted_ranges);
    memset (cfg, 0, sizeof *cfg);
}

struct addrinfo *
ly_config_http_address (const char *actor)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV | AI_PASSIVE };
    struct addrinfo *addresses = NULL;
    char port [8];
    snprintf (port, sizeof port, "%d", ly_config.http_port);
    int rc = getaddrinfo (ly_config.http_host, port, &hints, &addresses);
    if (rc || !addresses) {
        ly_error (actor, "could not resolve LAYERS_HTTP_ADDR \"%s\": %s",
                  ly_config.http_addr, rc? gai_strerror (rc): "no address");
        if (addresses)
            freeaddrinfo (addresses);
        return NULL;
    }
    return addresses;
}
