/*  ly_uap_test.c: self-test of ly_uap: every case of uap-core's own test suite (the
    three files of tests/ and the extra files its test.js runs), with and without the
    cache; the replacement rules on a small rule file; the cache's counters and bound; cut,
    empty and hostile input; and clear errors for bad rule files. */
#include "ly_prelude.h"
#include "ly_uap.h"

#include <yaml.h>

#define S_UAP_DIR       "/usr/share/uap-core"

typedef enum { S_UA, S_OS, S_DEVICE } s_kind_t;

//  A test file of uap-core and what its cases check
typedef struct {
    const char *path;                   /* under S_UAP_DIR */
    s_kind_t kind;                      /* which part of the result its cases check */
} s_suite_t;

static const s_suite_t s_suites [] = {
    { "tests/test_ua.yaml", S_UA },
    { "tests/test_os.yaml", S_OS },
    { "tests/test_device.yaml", S_DEVICE },
    //  The other files uap-core's test.js runs through its reference implementation
    { "test_resources/firefox_user_agent_strings.yaml", S_UA },
    { "test_resources/pgts_browser_list.yaml", S_UA },
    { "test_resources/opera_mini_user_agent_strings.yaml", S_UA },
    { "test_resources/podcasting_user_agent_strings.yaml", S_UA },
    { "test_resources/additional_os_tests.yaml", S_OS },
};

//  Cases that cannot pass with PCRE2, with the reason. None so far: every case of the
//  suites above passes. An entry is { suite path, user_agent_string, reason }.
static const struct {
    const char *path;
    const char *user_agent;
    const char *reason;
} s_known_failures [] = {
    { NULL, NULL, NULL }
};

static int s_passed;
static int s_failed;
static int s_cut_values;        /* expected values longer than their result field */
static char s_dir [] = "/tmp/ly_uap_test.XXXXXX";  /* scratch rule files */

#define S_CHECK(cond, ...) \
    do { \
        if (cond) \
            s_passed++; \
        else { \
            s_failed++; \
            printf ("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf (__VA_ARGS__); \
            printf ("\n"); \
        } \
    } while (0)


//  --------------------------------------------------------------------------
//  Helpers

static double
s_seconds (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static bool
s_valid_utf8_text (const char *text)
{
    const uint8_t *next = (const uint8_t *) text;
    while (*next) {
        uint8_t c = *next;
        size_t need = c < 0x80? 1: c >= 0xC2 && c <= 0xDF? 2: c >= 0xE0 && c <= 0xEF? 3:
                      c >= 0xF0 && c <= 0xF4? 4: 0;
        if (need == 0 || c < 0x20 || c == 0x7F)
            return false;
        for (size_t index = 1; index < need; index++)
            if ((next [index] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && next [1] < 0xA0) || (c == 0xED && next [1] > 0x9F)
        ||  (c == 0xF0 && next [1] < 0x90) || (c == 0xF4 && next [1] > 0x8F))
            return false;
        next += need;
    }
    return true;
}

//  Every field is terminated in its array, valid UTF-8 without control characters,
//  without white space at either end, and the families are never empty
static bool
s_result_sane (const ly_uap_result_t *result)
{
    struct { const char *text; size_t size; } fields [] = {
        { result->ua_family, sizeof result->ua_family },
        { result->ua_major, sizeof result->ua_major },
        { result->ua_minor, sizeof result->ua_minor },
        { result->ua_patch, sizeof result->ua_patch },
        { result->os_family, sizeof result->os_family },
        { result->os_major, sizeof result->os_major },
        { result->os_minor, sizeof result->os_minor },
        { result->os_patch, sizeof result->os_patch },
        { result->os_patch_minor, sizeof result->os_patch_minor },
        { result->device_family, sizeof result->device_family },
        { result->device_brand, sizeof result->device_brand },
        { result->device_model, sizeof result->device_model },
    };
    for (size_t index = 0; index < sizeof fields / sizeof fields [0]; index++) {
        size_t len = strnlen (fields [index].text, fields [index].size);
        if (len == fields [index].size || !s_valid_utf8_text (fields [index].text))
            return false;
        if (len > 0 && (isspace ((unsigned char) fields [index].text [0])
                    ||  isspace ((unsigned char) fields [index].text [len - 1])))
            return false;
    }
    return *result->ua_family && *result->os_family && *result->device_family;
}

static bool
s_result_equal (const ly_uap_result_t *one, const ly_uap_result_t *other)
{
    return streq (one->ua_family, other->ua_family) && streq (one->ua_major, other->ua_major)
        && streq (one->ua_minor, other->ua_minor) && streq (one->ua_patch, other->ua_patch)
        && streq (one->os_family, other->os_family) && streq (one->os_major, other->os_major)
        && streq (one->os_minor, other->os_minor) && streq (one->os_patch, other->os_patch)
        && streq (one->os_patch_minor, other->os_patch_minor)
        && streq (one->device_family, other->device_family)
        && streq (one->device_brand, other->device_brand)
        && streq (one->device_model, other->device_model);
}

//  Writes text to a file in the scratch directory; returns its path (static buffer)
static const char *
s_write_rules (const char *name, const char *text)
{
    static char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    FILE *file = fopen (path, "w");
    assert (file);
    fputs (text, file);
    fclose (file);
    return path;
}

static ly_uap_t *
s_new (const char *path, size_t cache_size)
{
    char err [512] = "";
    ly_uap_t *uap = ly_uap_new (path, cache_size, err, sizeof err);
    if (!uap) {
        printf ("could not load \"%s\": %s\n", path, err);
        exit (1);
    }
    assert (err [0] == 0);
    return uap;
}


//  --------------------------------------------------------------------------
//  uap-core's test suite

static yaml_node_t *
s_lookup (yaml_document_t *document, yaml_node_t *mapping, const char *key)
{
    for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
         pair < mapping->data.mapping.pairs.top; pair++) {
        yaml_node_t *name = yaml_document_get_node (document, pair->key);
        if (name && name->type == YAML_SCALAR_NODE
        &&  streq ((const char *) name->data.scalar.value, key))
            return yaml_document_get_node (document, pair->value);
    }
    return NULL;
}

//  Expected value of key: "" for an absent, null or empty value
static const char *
s_expected (yaml_document_t *document, yaml_node_t *mapping, const char *key)
{
    yaml_node_t *node = s_lookup (document, mapping, key);
    if (!node || node->type != YAML_SCALAR_NODE)
        return "";
    const char *value = (const char *) node->data.scalar.value;
    if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
    &&  (streq (value, "~") || streq (value, "null") || streq (value, "Null")
      || streq (value, "NULL")))
        return "";
    return value;
}

//  Copies the expected value as it fits a result field of size bytes: longer values are
//  cut at a character boundary, then trimmed at the end. True when it was cut.
static bool
s_cut (const char *value, size_t size, char *out, size_t out_size)
{
    assert (size <= out_size);
    size_t len = strlen (value);
    bool cut = len >= size;
    if (cut) {
        len = size - 1;
        while (len > 0 && ((uint8_t) value [len] & 0xC0) == 0x80)
            len--;
        while (len > 0 && isspace ((unsigned char) value [len - 1]))
            len--;
    }
    if (len >= out_size)
        len = out_size - 1;
    memcpy (out, value, len);
    out [len] = 0;
    return cut;
}

static const char *
s_known_failure (const char *path, const char *user_agent)
{
    for (size_t index = 0; s_known_failures [index].path; index++)
        if (streq (s_known_failures [index].path, path)
        &&  streq (s_known_failures [index].user_agent, user_agent))
            return s_known_failures [index].reason;
    return NULL;
}

//  Runs one test file through plain (no cache) and cached; returns the cases run
static size_t
s_test_suite (const s_suite_t *suite, ly_uap_t *plain, ly_uap_t *cached, double *parse_time)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", S_UAP_DIR, suite->path);
    FILE *file = fopen (path, "rb");
    S_CHECK (file, "could not open \"%s\": %s", path, strerror (errno));
    if (!file)
        return 0;
    yaml_parser_t parser;
    yaml_document_t document;
    assert (yaml_parser_initialize (&parser));
    yaml_parser_set_input_file (&parser, file);
    bool loaded = yaml_parser_load (&parser, &document);
    S_CHECK (loaded, "could not parse \"%s\": %s", path, parser.problem);
    yaml_parser_delete (&parser);
    fclose (file);
    if (!loaded)
        return 0;

    yaml_node_t *root = yaml_document_get_root_node (&document);
    yaml_node_t *cases = root && root->type == YAML_MAPPING_NODE?
                         s_lookup (&document, root, "test_cases"): NULL;
    S_CHECK (cases && cases->type == YAML_SEQUENCE_NODE, "%s: no test_cases list", path);
    size_t count = 0;
    int failures = 0;
    double suite_time = 0;
    for (yaml_node_item_t *item = cases? cases->data.sequence.items.start: NULL;
         item && item < cases->data.sequence.items.top; item++) {
        yaml_node_t *test = yaml_document_get_node (&document, *item);
        assert (test && test->type == YAML_MAPPING_NODE);
        yaml_node_t *ua_node = s_lookup (&document, test, "user_agent_string");
        assert (ua_node && ua_node->type == YAML_SCALAR_NODE);
        const char *ua = (const char *) ua_node->data.scalar.value;
        size_t ua_len = ua_node->data.scalar.length;
        count++;

        ly_uap_result_t result, again, hit;
        double start = s_seconds ();
        ly_uap_parse (plain, ua, ua_len, &result);
        suite_time += s_seconds () - start;
        //  Through the cache twice: stored (or found, for a repeated case), then found
        uint64_t hits = ly_uap_cache_hits (cached);
        ly_uap_parse (cached, ua, ua_len, &again);
        ly_uap_parse (cached, ua, ua_len, &hit);
        S_CHECK (s_result_equal (&result, &again) && s_result_equal (&result, &hit)
              && ly_uap_cache_hits (cached) > hits && s_result_sane (&result),
                 "%s line %zu: cached result differs or is malformed",
                 suite->path, (size_t) ua_node->start_mark.line + 1);

        const char *got [5], *keys [5];
        size_t sizes [5], fields;
        if (suite->kind == S_UA) {
            const char *k [] = { "family", "major", "minor", "patch" };
            const char *g [] = { result.ua_family, result.ua_major, result.ua_minor,
                                 result.ua_patch };
            size_t z [] = { sizeof result.ua_family, sizeof result.ua_major,
                            sizeof result.ua_minor, sizeof result.ua_patch };
            fields = 4;
            memcpy (keys, k, sizeof k);
            memcpy (got, g, sizeof g);
            memcpy (sizes, z, sizeof z);
        }
        else
        if (suite->kind == S_OS) {
            const char *k [] = { "family", "major", "minor", "patch", "patch_minor" };
            const char *g [] = { result.os_family, result.os_major, result.os_minor,
                                 result.os_patch, result.os_patch_minor };
            size_t z [] = { sizeof result.os_family, sizeof result.os_major,
                            sizeof result.os_minor, sizeof result.os_patch,
                            sizeof result.os_patch_minor };
            fields = 5;
            memcpy (keys, k, sizeof k);
            memcpy (got, g, sizeof g);
            memcpy (sizes, z, sizeof z);
        }
        else {
            const char *k [] = { "family", "brand", "model" };
            const char *g [] = { result.device_family, result.device_brand,
                                 result.device_model };
            size_t z [] = { sizeof result.device_family, sizeof result.device_brand,
                            sizeof result.device_model };
            fields = 3;
            memcpy (keys, k, sizeof k);
            memcpy (got, g, sizeof g);
            memcpy (sizes, z, sizeof z);
        }
        bool ok = true;
        char expected [5][256];
        for (size_t field = 0; field < fields; field++) {
            if (s_cut (s_expected (&document, test, keys [field]), sizes [field],
                       expected [field], sizeof expected [field]))
                s_cut_values++;
            if (!streq (got [field], expected [field]))
                ok = false;
        }
        const char *reason = s_known_failure (suite->path, ua);
        if (reason) {
            //  A known failure that starts passing must leave the list
            S_CHECK (!ok, "%s line %zu: listed as a known failure but passes",
                     suite->path, (size_t) ua_node->start_mark.line + 1);
            continue;
        }
        if (ok)
            s_passed++;
        else {
            s_failed++;
            if (++failures <= 20) {
                printf ("FAIL %s line %zu: %s\n", suite->path,
                        (size_t) ua_node->start_mark.line + 1, ua);
                for (size_t field = 0; field < fields; field++)
                    printf ("    %-11s expected \"%s\" got \"%s\"\n", keys [field],
                            expected [field], got [field]);
            }
        }
    }
    if (failures > 20)
        printf ("... and %d more failures in %s\n", failures - 20, suite->path);
    printf ("uap-core %s: %zu cases, %.0f uncached parses/s\n", suite->path, count,
            count / suite_time);
    *parse_time += suite_time;
    yaml_document_delete (&document);
    return count;
}

static void
s_test_uap_core (void)
{
    double start = s_seconds ();
    ly_uap_t *plain = s_new (LY_UAP_DEFAULT_REGEXES, 0);
    double load_time = s_seconds () - start;
    ly_uap_t *cached = s_new (LY_UAP_DEFAULT_REGEXES, 50000);
    double parse_time = 0;
    size_t total = 0;
    start = s_seconds ();
    for (size_t index = 0; index < sizeof s_suites / sizeof s_suites [0]; index++) {
        total += s_test_suite (&s_suites [index], plain, cached, &parse_time);
    }
    printf ("uap-core suites: %zu cases in %.1f s; rules loaded in %.0f ms; "
            "%.0f uncached parses/s\n", total, s_seconds () - start, load_time * 1000,
            total / parse_time);
    S_CHECK (total > 30000, "only %zu uap-core cases", total);
    //  The header's field sizes cut a few device values (up to 135 bytes in test_device)
    printf ("uap-core suites: %d expected values longer than their field, compared cut\n",
            s_cut_values);
    S_CHECK (s_cut_values < 10, "%d values cut", s_cut_values);
    //  The plain parser has no cache; it counts every parse as a miss
    S_CHECK (ly_uap_cache_hits (plain) == 0 && ly_uap_cache_misses (plain) == total,
             "plain parser: %" PRIu64 " hits, %" PRIu64 " misses",
             ly_uap_cache_hits (plain), ly_uap_cache_misses (plain));
    //  Each case went twice through the cache, which is large enough to keep every one
    S_CHECK (ly_uap_cache_hits (cached) + ly_uap_cache_misses (cached) == 2 * total
          && ly_uap_cache_hits (cached) >= total && ly_uap_cache_misses (cached) < total,
             "cached parser: %" PRIu64 " hits, %" PRIu64 " misses",
             ly_uap_cache_hits (cached), ly_uap_cache_misses (cached));

    //  Cached throughput, on one User-Agent
    uint64_t hits = ly_uap_cache_hits (cached);
    ly_uap_result_t result;
    const char *ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) "
                     "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.5 Mobile/15E148 Safari/604.1";
    ly_uap_parse (cached, ua, strlen (ua), &result);
    start = s_seconds ();
    for (int round = 0; round < 100000; round++)
        ly_uap_parse (cached, ua, strlen (ua), &result);
    printf ("cached parses: %.0f/s\n", 100000 / (s_seconds () - start));
    S_CHECK (ly_uap_cache_hits (cached) == hits + 100000, "cache hits not counted");
    S_CHECK (streq (result.ua_family, "Mobile Safari") && streq (result.ua_major, "16")
          && streq (result.os_family, "iOS") && streq (result.os_major, "16")
          && streq (result.os_minor, "5") && streq (result.device_family, "iPhone")
          && streq (result.device_brand, "Apple") && streq (result.device_model, "iPhone"),
             "iPhone parsed as %s %s / %s %s.%s / %s %s %s", result.ua_family,
             result.ua_major, result.os_family, result.os_major, result.os_minor,
             result.device_family, result.device_brand, result.device_model);
    ly_uap_destroy (&plain);
    ly_uap_destroy (&cached);
    S_CHECK (plain == NULL && cached == NULL, "destroy does not clear the pointer");
}


//  --------------------------------------------------------------------------
//  Replacement rules, on a rule file of our own

static void
s_test_rules (void)
{
    const char *path = s_write_rules ("rules.yaml",
        "user_agent_parsers:\n"
        "  - regex: '(First)/(\\d+)'\n"
        "  - regex: '(First)/(\\d+)\\.(\\d+)'\n"              //  never reached
        "    family_replacement: 'Second'\n"
        "  - regex: 'Sub/(\\d+)(?:\\.(\\d+))?(x)?'\n"
        "    family_replacement: ' Sub $2-$3-$9 $$1 $ '\n"
        "    v1_replacement: '$1'\n"
        "    v2_replacement: '  $3  '\n"                     //  unset group, spaces: unknown
        "  - regex: '(Plain) +([a-z ]+)/?'\n"
        "  - regex: 'NoFamily(X)?'\n"
        "  - regex: 'utf8 (.{3})$'\n"
        "  - regex: 'Empty'\n"
        "    family_replacement: ''\n"
        "os_parsers:\n"
        "  - regex: '(Os) (\\d+)_(\\d+)(?:_(\\d+))?'\n"
        "    os_replacement: 'MyOS'\n"
        "    os_v4_replacement: 'pm$2'\n"
        "device_parsers:\n"
        "  - regex: 'dev (Model\\d+)'\n"
        "  - regex: 'brand (Thing)(\\d+)'\n"
        "    device_replacement: 'Acme $1'\n"
        "    brand_replacement: 'Acme'\n"
        "  - regex: 'caseless (\\w+)'\n"
        "    regex_flag: 'i'\n"
        "    device_replacement: '$1'\n"
        "    brand_replacement: 'Case'\n"
        "    model_replacement: 'M-$1'\n"
        "  - regex: 'long (.+)$'\n");
    ly_uap_t *uap = s_new (path, 0);
    ly_uap_result_t r;

    ly_uap_parse (uap, "First/12.3", 10, &r);
    S_CHECK (streq (r.ua_family, "First") && streq (r.ua_major, "12") && *r.ua_minor == 0
          && *r.ua_patch == 0, "first match: %s %s %s", r.ua_family, r.ua_major, r.ua_minor);
    S_CHECK (streq (r.os_family, "Other") && *r.os_major == 0 && streq (r.device_family, "Other")
          && *r.device_brand == 0 && *r.device_model == 0, "no match must give Other");

    //  Absent and unset groups substitute as "", a '$' without a digit stays, ends are trimmed
    ly_uap_parse (uap, "Sub/7", 5, &r);
    S_CHECK (streq (r.ua_family, "Sub -- $7 $") && streq (r.ua_major, "7")
          && *r.ua_minor == 0, "replacement: \"%s\" \"%s\" \"%s\"",
             r.ua_family, r.ua_major, r.ua_minor);
    ly_uap_parse (uap, "Sub/7.8x", 8, &r);
    S_CHECK (streq (r.ua_family, "Sub 8-x- $7 $") && streq (r.ua_minor, "x"),
             "replacement: \"%s\" \"%s\"", r.ua_family, r.ua_minor);

    //  Groups without a replacement are trimmed too
    ly_uap_parse (uap, "Plain  abc  /", 13, &r);
    S_CHECK (streq (r.ua_family, "Plain") && streq (r.ua_major, "abc"),
             "groups: \"%s\" \"%s\"", r.ua_family, r.ua_major);

    //  A match whose family comes out empty gives Other
    ly_uap_parse (uap, "NoFamily", 8, &r);
    S_CHECK (streq (r.ua_family, "Other"), "unset family: \"%s\"", r.ua_family);
    ly_uap_parse (uap, "Empty", 5, &r);
    S_CHECK (streq (r.ua_family, "Other"), "empty family replacement: \"%s\"", r.ua_family);

    ly_uap_parse (uap, "Os 10_4", 7, &r);
    S_CHECK (streq (r.os_family, "MyOS") && streq (r.os_major, "10") && streq (r.os_minor, "4")
          && *r.os_patch == 0 && streq (r.os_patch_minor, "pm10"),
             "os: %s %s %s %s %s", r.os_family, r.os_major, r.os_minor, r.os_patch,
             r.os_patch_minor);

    //  Device: family and model default to group 1, brand only from its replacement
    ly_uap_parse (uap, "dev Model42", 11, &r);
    S_CHECK (streq (r.device_family, "Model42") && *r.device_brand == 0
          && streq (r.device_model, "Model42"), "device defaults: %s/%s/%s",
             r.device_family, r.device_brand, r.device_model);
    ly_uap_parse (uap, "brand Thing9", 12, &r);
    S_CHECK (streq (r.device_family, "Acme Thing") && streq (r.device_brand, "Acme")
          && streq (r.device_model, "Thing"), "device replacements: %s/%s/%s",
             r.device_family, r.device_brand, r.device_model);
    ly_uap_parse (uap, "CASELESS Foo", 12, &r);
    S_CHECK (streq (r.device_family, "Foo") && streq (r.device_model, "M-Foo"),
             "regex_flag i: %s/%s", r.device_family, r.device_model);
    ly_uap_parse (uap, "caseless", 8, &r);
    S_CHECK (streq (r.device_family, "Other"), "caseless without a word: %s", r.device_family);

    //  Long values are cut to the field at a character boundary: 127 bytes fit, and
    //  "é" (two bytes) at offset 126 does not
    char ua [300];
    memset (ua, 0, sizeof ua);
    strcpy (ua, "long ");
    memset (ua + 5, 'a', 126);
    strcpy (ua + 5 + 126, "\xc3\xa9tail");
    ly_uap_parse (uap, ua, strlen (ua), &r);
    S_CHECK (strlen (r.device_family) == 126 && strspn (r.device_family, "a") == 126
          && s_result_sane (&r), "long value cut to %zu bytes", strlen (r.device_family));

    //  Control characters and NUL in a group become '?', white space inside stays a space
    char controls [] = "dev Model1";
    ly_uap_parse (uap, "long a\x01" "b\tc\0d\x7f ", 14, &r);
    S_CHECK (streq (r.device_family, "a?b c?d?") && s_result_sane (&r),
             "controls: \"%s\"", r.device_family);
    ly_uap_parse (uap, controls, sizeof controls - 1, &r);
    S_CHECK (streq (r.device_model, "Model1"), "model: %s", r.device_model);

    //  Invalid UTF-8 never reaches a value
    //  Characters are UTF-8: one '.' takes the whole "é"; a byte that is not UTF-8 is
    //  read as '?', so invalid bytes never reach a value and a match goes on past them
    ly_uap_parse (uap, "long \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80", 15, &r);
    S_CHECK (streq (r.device_family, "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80"),
             "UTF-8: \"%s\"", r.device_family);
    ly_uap_parse (uap, "utf8 \xc3\xa9t\xc3\xa9", 10, &r);
    S_CHECK (streq (r.ua_family, "\xc3\xa9t\xc3\xa9"),
             "'.' must take a character, not a byte: \"%s\"", r.ua_family);
    const char invalid [] = "long ab\xff\xc3(\xed\xa0\x80z\xf0\x9f\x98\x80";
    ly_uap_parse (uap, invalid, sizeof invalid - 1, &r);
    S_CHECK (s_result_sane (&r) && streq (r.device_family, "ab?" "?(?" "??z\xf0\x9f\x98\x80"),
             "invalid UTF-8: \"%s\"", r.device_family);
    const char tail [] = "dev Model7\xff\xfe";
    ly_uap_parse (uap, tail, sizeof tail - 1, &r);
    S_CHECK (streq (r.device_model, "Model7"), "invalid UTF-8 after a match: \"%s\"",
             r.device_model);
    ly_uap_destroy (&uap);
}


//  --------------------------------------------------------------------------
//  The cache

static void
s_test_cache (void)
{
    ly_uap_t *plain = s_new (LY_UAP_DEFAULT_REGEXES, 0);
    const char *a = "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 "
                    "(KHTML, like Gecko) Chrome/114.0.0.0 Mobile Safari/537.36";
    const char *b = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0";
    const char *c = "MyApp/3.2.1 CFNetwork/1404.0.5 Darwin/22.3.0";
    const char *d = "Dalvik/2.1.0 (Linux; U; Android 11; SM-A515F Build/RP1A.200720.012)";
    ly_uap_result_t want_a, want_b, got;
    ly_uap_parse (plain, a, strlen (a), &want_a);
    ly_uap_parse (plain, b, strlen (b), &want_b);
    S_CHECK (streq (want_a.ua_family, "Chrome Mobile") && streq (want_a.device_brand, "Google")
          && streq (want_a.device_model, "Pixel 7") && streq (want_b.ua_family, "Firefox")
          && streq (want_b.os_family, "Windows"), "reference parses: %s %s %s / %s %s",
             want_a.ua_family, want_a.device_brand, want_a.device_model, want_b.ua_family,
             want_b.os_family);

    //  Three entries (fewer than a set): LRU among them
    ly_uap_t *uap = s_new (LY_UAP_DEFAULT_REGEXES, 3);
    const char *order [] = { a, b, c, a, b, c, d, a, c };
    bool hit [] =          { 0, 0, 0, 1, 1, 1, 0, 0, 1 };
    for (size_t index = 0; index < sizeof order / sizeof order [0]; index++) {
        uint64_t hits = ly_uap_cache_hits (uap);
        uint64_t misses = ly_uap_cache_misses (uap);
        ly_uap_parse (uap, order [index], strlen (order [index]), &got);
        S_CHECK (ly_uap_cache_hits (uap) == hits + hit [index]
              && ly_uap_cache_misses (uap) == misses + !hit [index],
                 "step %zu: expected a %s", index, hit [index]? "hit": "miss");
        if (order [index] == a)
            S_CHECK (s_result_equal (&got, &want_a), "step %zu: wrong result for a", index);
        if (order [index] == b)
            S_CHECK (s_result_equal (&got, &want_b), "step %zu: wrong result for b", index);
    }
    ly_uap_destroy (&uap);

    //  Bounded: 2000 different User-Agents through 100 entries; at most 100 stay
    uap = s_new (LY_UAP_DEFAULT_REGEXES, 100);
    char ua [128];
    for (int round = 0; round < 2; round++)
        for (int index = 0; index < 2000; index++) {
            int len = snprintf (ua, sizeof ua, "MyApp/%d.%d CFNetwork/1404.0.5 Darwin/22.3.0",
                                index, round);
            ly_uap_parse (uap, ua, (size_t) len, &got);
            if (index % 97 == 0) {
                ly_uap_result_t want;
                ly_uap_parse (plain, ua, (size_t) len, &want);
                S_CHECK (s_result_equal (&got, &want), "cached result differs for %s", ua);
            }
            //  The entry just stored is found again
            uint64_t hits = ly_uap_cache_hits (uap);
            ly_uap_parse (uap, ua, (size_t) len, &got);
            S_CHECK (ly_uap_cache_hits (uap) == hits + 1, "fresh entry not found");
        }
    uint64_t hits = ly_uap_cache_hits (uap);
    for (int index = 1999; index >= 0; index--) {
        int len = snprintf (ua, sizeof ua, "MyApp/%d.%d CFNetwork/1404.0.5 Darwin/22.3.0",
                            index, 1);
        ly_uap_parse (uap, ua, (size_t) len, &got);
    }
    uint64_t kept = ly_uap_cache_hits (uap) - hits;
    S_CHECK (kept > 0 && kept <= 100, "%" PRIu64 " of 2000 entries kept in a cache of 100", kept);
    S_CHECK (ly_uap_cache_hits (uap) + ly_uap_cache_misses (uap) == 10000,
             "counters do not add up: %" PRIu64 " + %" PRIu64,
             ly_uap_cache_hits (uap), ly_uap_cache_misses (uap));
    ly_uap_destroy (&uap);
    ly_uap_destroy (&plain);
}


//  --------------------------------------------------------------------------
//  Cut, empty and hostile input

static void
s_test_input (void)
{
    ly_uap_t *uap = s_new (LY_UAP_DEFAULT_REGEXES, 64);
    ly_uap_t *plain = s_new (LY_UAP_DEFAULT_REGEXES, 0);
    ly_uap_result_t r, want;

    //  Empty input
    ly_uap_parse (uap, "", 0, &r);
    S_CHECK (streq (r.ua_family, "Other") && *r.ua_major == 0 && streq (r.os_family, "Other")
          && streq (r.device_family, "Other") && *r.device_brand == 0 && *r.device_model == 0
          && s_result_sane (&r), "empty: %s/%s/%s", r.ua_family, r.os_family, r.device_family);
    ly_uap_parse (uap, NULL, 0, &want);
    S_CHECK (s_result_equal (&r, &want), "NULL with length 0 differs from empty");

    //  Longer than LY_UAP_MAX_INPUT: only the first LY_UAP_MAX_INPUT bytes count
    size_t size = LY_UAP_MAX_INPUT * 4;
    char *ua = malloc (size);
    assert (ua);
    const char *early = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101";
    const char *late = " Firefox/115.0";
    memset (ua, ' ', size);
    memcpy (ua, early, strlen (early));
    memcpy (ua + LY_UAP_MAX_INPUT, late, strlen (late));
    ly_uap_parse (plain, ua, size, &r);
    S_CHECK (streq (r.os_family, "Windows") && !streq (r.ua_family, "Firefox"),
             "token past %d bytes still seen: %s", LY_UAP_MAX_INPUT, r.ua_family);
    memset (ua, ' ', size);
    memcpy (ua, early, strlen (early));
    memcpy (ua + LY_UAP_MAX_INPUT - strlen (late), late, strlen (late));
    ly_uap_parse (plain, ua, size, &r);
    S_CHECK (streq (r.ua_family, "Firefox") && streq (r.ua_major, "115")
          && streq (r.ua_minor, "0"),
             "token within %d bytes missed: %s %s.%s", LY_UAP_MAX_INPUT, r.ua_family,
             r.ua_major, r.ua_minor);
    //  The cache keys the cut bytes: the long input and its first bytes are one entry
    ly_uap_parse (uap, ua, size, &r);
    uint64_t hits = ly_uap_cache_hits (uap);
    ly_uap_parse (uap, ua, LY_UAP_MAX_INPUT, &want);
    S_CHECK (ly_uap_cache_hits (uap) == hits + 1 && s_result_equal (&r, &want),
             "cut input is not one cache entry");
    ly_uap_parse (uap, ua, LY_UAP_MAX_INPUT - 1, &want);
    S_CHECK (ly_uap_cache_hits (uap) == hits + 1, "a shorter input hit the cache");
    free (ua);

    //  NUL bytes, invalid UTF-8, control characters: parsed, never crash, sane values
    const char nul [] = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X)\0 Safari\0\0";
    ly_uap_parse (uap, nul, sizeof nul, &r);
    S_CHECK (streq (r.os_family, "iOS") && streq (r.os_major, "12") && s_result_sane (&r),
             "NUL bytes: %s %s", r.os_family, r.os_major);
    const char bad [] = "Mozilla/5.0 (Linux; Android 10; SM-G97\xff\xfe" "0F Build/QP1A) "
                        "\xc0\xaf\xed\xa0\x80\xf8\x88\x80\x80\x80 Chrome/80.0.1 Mobile Safari/537";
    ly_uap_parse (uap, bad, sizeof bad - 1, &r);
    S_CHECK (streq (r.os_family, "Android") && s_result_sane (&r),
             "invalid UTF-8: %s", r.os_family);
    ly_uap_parse (plain, bad, sizeof bad - 1, &want);
    S_CHECK (s_result_equal (&r, &want), "invalid UTF-8: cache differs");
    //  ... and a C1 control character (valid UTF-8) shows as '?' in a value, as others do
    const char c1 [] = "Dalvik/2.1.0 (Linux; U; Android 13; Pix\xc2\x85" "el 7 Build/TQ3A.230805.001)";
    ly_uap_parse (uap, c1, sizeof c1 - 1, &r);
    S_CHECK (streq (r.device_model, "Pix?el 7") && s_result_sane (&r),
             "a C1 control in a model: %s", r.device_model);
    //  ... read as '?', so that the rules match around it as they would around a letter
    const char latin1 [] = "Dalvik/2.1.0 (Linux; U; Android 13; Pix\xff" "el 7 Build/TQ3A.230805.001)";
    ly_uap_parse (uap, latin1, sizeof latin1 - 1, &r);
    S_CHECK (streq (r.os_family, "Android") && streq (r.os_major, "13")
          && streq (r.device_model, "Pix?el 7") && s_result_sane (&r),
             "invalid UTF-8 in a model: %s %s %s", r.os_family, r.os_major, r.device_model);

    //  Random bytes, and random bytes spliced into real User-Agents
    const char *base = "Mozilla/5.0 (Linux; Android 12; SM-S906N Build/QP1A.190711.020; wv) "
                       "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/80.0.3987.119 "
                       "Mobile Safari/537.36";
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    char buffer [LY_UAP_MAX_INPUT + 64];
    bool sane = true;
    for (int round = 0; round < 300; round++) {
        size_t len = strlen (base);
        memcpy (buffer, base, len);
        for (int flip = 0; flip < 1 + round % 8; flip++) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            buffer [state % len] = (char) (state >> 32);
        }
        if (round % 3 == 0) {
            len = (size_t) (state >> 40) % sizeof buffer;
            for (size_t index = 0; index < len; index++) {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                buffer [index] = (char) state;
            }
        }
        ly_uap_parse (uap, buffer, len, &r);
        ly_uap_parse (plain, buffer, len, &want);
        if (!s_result_sane (&r) || !s_result_equal (&r, &want))
            sane = false;
    }
    S_CHECK (sane, "random input gave a malformed or differing result");
    ly_uap_destroy (&uap);
    ly_uap_destroy (&plain);
}


//  --------------------------------------------------------------------------
//  Bad rule files

static void
s_expect_error (const char *path, const char *part1, const char *part2)
{
    char err [512] = "";
    ly_uap_t *uap = ly_uap_new (path, 16, err, sizeof err);
    size_t len = strlen (err);
    S_CHECK (!uap && strstr (err, part1) && (!part2 || strstr (err, part2))
          && len > 0 && err [len - 1] != '.' && !strchr (err, '\n'),
             "\"%s\": error \"%s\", wanted \"%s\" and \"%s\"", path, err, part1,
             part2? part2: "");
    ly_uap_destroy (&uap);
}

static void
s_test_errors (void)
{
    s_expect_error ("/nonexistent/regexes.yaml",
                    "could not open \"/nonexistent/regexes.yaml\"", "No such file");
    s_expect_error (S_UAP_DIR "/tests/test_ua.yaml", "no user_agent_parsers list", NULL);
    const char *path = s_write_rules ("bad_yaml.yaml",
        "user_agent_parsers:\n"
        "  - regex: 'a'\n"
        "  - regex: 'unterminated\n");
    s_expect_error (path, "could not parse", "bad_yaml.yaml");
    path = s_write_rules ("bad_regex.yaml",
        "user_agent_parsers:\n"
        "  - regex: 'fine'\n"
        "os_parsers:\n"
        "  - regex: 'fine'\n"
        "device_parsers:\n"
        "  - regex: 'fine (\\d+)'\n"
        "\n"
        "  - regex: 'broken (\\d+'\n"
        "    device_replacement: 'x'\n");
    s_expect_error (path, "bad_regex.yaml\" line 8", "missing closing parenthesis");
    path = s_write_rules ("no_regex.yaml",
        "user_agent_parsers:\n"
        "  - family_replacement: 'x'\n"
        "os_parsers: []\n"
        "device_parsers: []\n");
    s_expect_error (path, "no_regex.yaml\" line 2 has no regex", NULL);
    path = s_write_rules ("bad_flag.yaml",
        "user_agent_parsers: []\n"
        "os_parsers:\n"
        "  - regex: 'x'\n"
        "    regex_flag: 'x'\n"
        "device_parsers: []\n");
    s_expect_error (path, "unsupported regex_flag", "line 4");
    path = s_write_rules ("empty.yaml", "");
    s_expect_error (path, "is not a uap-core regexes file", NULL);

    //  Empty lists are valid: everything is Other
    path = s_write_rules ("empty_lists.yaml",
        "user_agent_parsers: []\nos_parsers: []\ndevice_parsers: []\n");
    ly_uap_t *uap = s_new (path, 0);
    ly_uap_result_t r;
    ly_uap_parse (uap, "Mozilla/5.0", 11, &r);
    S_CHECK (streq (r.ua_family, "Other") && streq (r.os_family, "Other")
          && streq (r.device_family, "Other"), "empty lists: %s", r.ua_family);
    ly_uap_destroy (&uap);
    ly_uap_destroy (&uap);              //  destroying NULL is a no-op
}

int
main (void)
{
    double start = s_seconds ();
    if (!mkdtemp (s_dir)) {
        printf ("could not create \"%s\": %s\n", s_dir, strerror (errno));
        return 1;
    }
    s_test_rules ();
    s_test_cache ();
    s_test_input ();
    s_test_errors ();
    s_test_uap_core ();

    const char *names [] = { "rules.yaml", "bad_yaml.yaml", "bad_regex.yaml",
                             "no_regex.yaml", "bad_flag.yaml", "empty.yaml",
                             "empty_lists.yaml" };
    char path [PATH_MAX];
    for (size_t index = 0; index < sizeof names / sizeof names [0]; index++) {
        snprintf (path, sizeof path, "%s/%s", s_dir, names [index]);
        unlink (path);
    }
    rmdir (s_dir);
    printf ("ly_uap_test: %.1f s\n", s_seconds () - start);
    printf ("ly_uap_test: %d passed, %d failed\n", s_passed, s_failed);
    return s_failed? 1: 0;
}
