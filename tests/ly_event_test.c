/*  ly_event_test.c: self-test of ly_event_scrub: valid and refused events with their
    reasons, dropped personal-data fields, passthrough hashes, timestamps, properties as
    jsonb-ready JSON, COPY escaping, geo-IP (a test .mmdb built by
    tests/data/make_test_mmdb.pl) and User-Agent paths, and that no raw personal data
    reaches a line. With LY_EVENT_TEST_DUMP=path every accepted line is also written
    there, for loading into PostgreSQL by hand (COPY ... FROM with ly_event_copy_columns,
    into a table shaped like the store's staging table: event_time and received_at are
    epoch microseconds, bigint). */
#include "ly_prelude.h"
#include "ly_event.h"
#include "ly_sdkbody.h"
#include "ly_testsupport.h"

#define ORG_ID      "0b7e4f6a-3c1d-4e5f-9a8b-1c2d3e4f5a6b"
#define PROJECT_ID  "5f0e1d2c-3b4a-4958-8776-655443322110"
#define RECEIVED    INT64_C(1700000000000000)       /* 2023-11-14 22:13:20 UTC */
#define RECEIVED_AT "2023-11-14 22:13:20.000000+00"
#define RECEIVED_USEC "1700000000000000"                 /* the same, as the line holds it */

//  Hashes computed with printf '%s' NORMALIZED | sha256sum
#define H_JOHN_SMITH    "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"  /* john_smith@gmail.com */
#define H_US_650        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"  /* 16505551212 */
#define H_US_650_E164   "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"  /* +16505551212 */
#define H_UK            "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"  /* 442079460958 */
#define H_UK_E164       "f0bf0228144d9fe2bdf1da2d8ca698f17bf1410ee688b075c27062e47b6f0b6d"  /* +442079460958 */

#define COLUMNS 25

static int s_failures = 0;
static FILE *s_dump = NULL;             //  LY_EVENT_TEST_DUMP
static char *s_column_names [COLUMNS];  //  from ly_event_copy_columns

#define FAIL(line, ...) do { \
    printf ("line %d: ", line); printf (__VA_ARGS__); printf ("\n"); s_failures++; \
} while (0)

//  One scrubbed event: the result, the reason, the columns (COPY-unescaped; NULL for \N)
typedef struct {
    ly_result_t rc;
    char reason [256];
    char event_id [129];
    ly_event_stats_t stats;
    char *line;                 //  the raw line
    size_t line_len;
    char *column [COLUMNS];
} outcome_t;

static void
s_outcome_free (outcome_t *out)
{
    free (out->line);
    for (int i = 0; i < COLUMNS; i++)
        free (out->column [i]);
    memset (out, 0, sizeof *out);
}

static int
s_column_index (const char *name)
{
    for (int i = 0; i < COLUMNS; i++)
        if (s_column_names [i] && streq (s_column_names [i], name))
            return i;
    printf ("no column %s in ly_event_copy_columns\n", name);
    abort ();
}

static const char *
s_col (const outcome_t *out, const char *name)
{
    return out->column [s_column_index (name)];
}

//  Checks the shape of a line and splits it into unescaped columns. 0 / -1.
static int
s_split_line (int at, const char *line, size_t len, char *column [COLUMNS])
{
    if (len == 0 || line [len - 1] != '\n' || memchr (line, '\n', len - 1)) {
        FAIL (at, "line does not end in exactly one newline");
        return -1;
    }
    if (memchr (line, 0, len) || !ly_test_utf8_valid (line, len)) {
        FAIL (at, "line holds NUL or invalid UTF-8");
        return -1;
    }
    int index = 0;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (line [i] == '\\') {
            i++;                //  the escaped character
            continue;
        }
        if (line [i] != '\t' && line [i] != '\n')
            continue;
        if (index >= COLUMNS) {
            FAIL (at, "line has more than %d columns", COLUMNS);
            return -1;
        }
        const char *field = line + start;
        size_t field_len = i - start;
        if (field_len == 2 && memcmp (field, "\\N", 2) == 0)
            column [index] = NULL;
        else {
            char *value = (char *) malloc (field_len + 1);
            size_t value_len = 0;
            for (size_t j = 0; j < field_len; j++) {
                char c = field [j];
                if (c == '\\' && j + 1 < field_len) {
                    c = field [++j];
                    if (c == 't') c = '\t';
                    else if (c == 'n') c = '\n';
                    else if (c == 'r') c = '\r';
                    else if (c != '\\')
                        FAIL (at, "unexpected escape \\%c", c);
                }
                else
                if (c == '\\')
                    FAIL (at, "backslash at the end of a column");
                value [value_len++] = c;
            }
            value [value_len] = 0;
            column [index] = value;
        }
        index++;
        start = i + 1;
    }
    if (index != COLUMNS) {
        FAIL (at, "line has %d columns, wanted %d", index, COLUMNS);
        return -1;
    }
    return 0;
}

//  Scrubs the msgpack event in data; on LY_OK checks and splits the line.
static void
s_run_packed (int at, const char *data, size_t size, const ly_event_ctx_t *ctx, outcome_t *out)
{
    memset (out, 0, sizeof *out);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    if (msgpack_unpack_next (&unpacked, data, size, &offset) != MSGPACK_UNPACK_SUCCESS) {
        FAIL (at, "test event does not unpack");
        out->rc = LY_ERROR;
        msgpack_unpacked_destroy (&unpacked);
        return;
    }
    out->rc = ly_event_scrub (&unpacked.data, ctx, &out->line, &out->line_len, out->event_id,
                              &out->stats, out->reason, sizeof out->reason);
    if (out->rc == LY_OK) {
        if (out->reason [0])
            FAIL (at, "accepted with a reason: %s", out->reason);
        s_split_line (at, out->line, out->line_len, out->column);
        if (s_dump)
            fwrite (out->line, 1, out->line_len, s_dump);
    }
    else {
        if (!out->reason [0])
            FAIL (at, "refused without a reason");
        if (out->line_len)
            FAIL (at, "refused, yet appended %zu bytes", out->line_len);
    }
    msgpack_unpacked_destroy (&unpacked);
}

static void
s_run_json (int at, const char *text, const ly_event_ctx_t *ctx, outcome_t *out)
{
    json_error_t error;
    json_t *json = json_loads (text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (!json) {
        printf ("line %d: bad test JSON: %s\n", at, error.text);
        abort ();
    }
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
    ly_sdkbody_pack_json (&pk, json);
    json_decref (json);
    s_run_packed (at, buffer.data, buffer.size, ctx, out);
    msgpack_sbuffer_destroy (&buffer);
}

static ly_event_ctx_t
s_ctx (void)
{
    ly_event_ctx_t ctx = {
        .org_id = ORG_ID,
        .project_id = PROJECT_ID,
        .received_usec = RECEIVED,
    };
    return ctx;
}

//  Expects the JSON event accepted; the caller frees out.
#define ACCEPT(json, ctx, out) s_accept (__LINE__, json, ctx, out)
static bool
s_accept (int at, const char *json, const ly_event_ctx_t *ctx, outcome_t *out)
{
    s_run_json (at, json, ctx, out);
    if (out->rc != LY_OK) {
        FAIL (at, "refused (%d): %s", out->rc, out->reason);
        return false;
    }
    return out->column [0] != NULL;
}

//  Expects the JSON event refused with exactly this reason.
#define REFUSE(json, reason) s_refuse (__LINE__, json, reason)
static void
s_refuse (int at, const char *json, const char *reason)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    s_run_json (at, json, &ctx, &out);
    if (out.rc != LY_INVALID || strcmp (out.reason, reason) != 0)
        FAIL (at, "%s\n  gave %d \"%s\"\n  wanted LY_INVALID \"%s\"", json, out.rc, out.reason, reason);
    s_outcome_free (&out);
}

//  A UTC time written "YYYY-MM-DD HH:MM:SS.uuuuuu+00" as the epoch microseconds the
//  line holds, into out; the test's own conversion (timegm), apart from the library's.
static const char *
s_epoch_usec (const char *readable, char out [32])
{
    struct tm tm = { 0 };
    int usec = 0;
    if (sscanf (readable, "%d-%d-%d %d:%d:%d.%d+00", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &usec) != 7)
        return readable;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    snprintf (out, 32, "%lld", (long long) timegm (&tm) * 1000000 + usec);
    return out;
}

#define EXPECT_COL(out, name, wanted) s_expect_col (__LINE__, out, name, wanted)
static void
s_expect_col (int at, const outcome_t *out, const char *name, const char *wanted)
{
    if (!out->column [0])
        return;                 //  already failed
    char usec [32];
    if (wanted && (streq (name, "event_time") || streq (name, "received_at")))
        wanted = s_epoch_usec (wanted, usec);
    const char *value = s_col (out, name);
    if (wanted == NULL? value != NULL: (!value || strcmp (value, wanted) != 0))
        FAIL (at, "%s is %s%s%s, wanted %s%s%s", name, value? "\"": "", value? value: "NULL",
              value? "\"": "", wanted? "\"": "", wanted? wanted: "NULL", wanted? "\"": "");
}

//  Expects the event accepted and one column to hold wanted.
#define ACCEPT_COL(json, name, wanted) s_accept_col (__LINE__, json, name, wanted)
static void
s_accept_col (int at, const char *json, const char *name, const char *wanted)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    if (s_accept (at, json, &ctx, &out))
        s_expect_col (at, &out, name, wanted);
    s_outcome_free (&out);
}

//  msgpack events with what JSON cannot say: a packer on a buffer, then run.
typedef struct {
    msgpack_sbuffer buffer;
    msgpack_packer pk;
} packed_t;

static msgpack_packer *
s_packed_new (packed_t *packed)
{
    msgpack_sbuffer_init (&packed->buffer);
    msgpack_packer_init (&packed->pk, &packed->buffer, msgpack_sbuffer_write);
    return &packed->pk;
}

static void
s_pack_str (msgpack_packer *pk, const char *text, size_t len)
{
    msgpack_pack_str_with_body (pk, text, len);
}

static void
s_pack_cstr (msgpack_packer *pk, const char *text)
{
    msgpack_pack_str_with_body (pk, text, strlen (text));
}

//  Packs {"event_id": "p1", "name": "test", <key>: <the caller packs the value>}
static msgpack_packer *
s_packed_event (packed_t *packed, const char *key)
{
    msgpack_packer *pk = s_packed_new (packed);
    msgpack_pack_map (pk, 3);
    s_pack_cstr (pk, "event_id");
    s_pack_cstr (pk, "p1");
    s_pack_cstr (pk, "name");
    s_pack_cstr (pk, "test");
    s_pack_cstr (pk, key);
    return pk;
}

#define RUN_PACKED(packed, ctx, out) \
    s_run_packed (__LINE__, (packed)->buffer.data, (packed)->buffer.size, ctx, out)

#define REFUSE_PACKED(packed, reason) s_refuse_packed (__LINE__, packed, reason)
static void
s_refuse_packed (int at, packed_t *packed, const char *reason)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    s_run_packed (at, packed->buffer.data, packed->buffer.size, &ctx, &out);
    if (out.rc != LY_INVALID || strcmp (out.reason, reason) != 0)
        FAIL (at, "gave %d \"%s\", wanted LY_INVALID \"%s\"", out.rc, out.reason, reason);
    s_outcome_free (&out);
    msgpack_sbuffer_destroy (&packed->buffer);
}

//  True when needle (len bytes) occurs in the line.
static bool
s_line_has (const outcome_t *out, const char *needle)
{
    return out->line && memmem (out->line, out->line_len, needle, strlen (needle)) != NULL;
}


//  --------------------------------------------------------------------------------------

static void
s_test_columns (void)
{
    static const char *wanted [COLUMNS] = {
        "org_id", "project_id", "event_id", "name", "event_time", "received_at", "user_id",
        "email_sha256", "phone_sha256", "phone_e164_sha256", "properties", "device_os",
        "device_os_version", "device_model", "device_brand", "device_locale",
        "device_timezone", "app_version", "app_build", "app_package", "geo_country",
        "geo_region", "attribution_token", "consent_ads", "consent_att"
    };
    char *columns = strdup (ly_event_copy_columns);
    int count = 0;
    for (char *name = strtok (columns, ", "); name; name = strtok (NULL, ", ")) {
        if (count < COLUMNS)
            s_column_names [count] = strdup (name);
        count++;
    }
    free (columns);
    if (count != COLUMNS) {
        printf ("ly_event_copy_columns has %d columns, wanted %d\n", count, COLUMNS);
        exit (1);
    }
    for (int i = 0; i < COLUMNS; i++)
        if (strcmp (s_column_names [i], wanted [i]) != 0)
            FAIL (__LINE__, "column %d is %s, wanted %s", i, s_column_names [i], wanted [i]);
}

static void
s_test_minimal (void)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    if (ACCEPT ("{\"event_id\": \"e1\", \"name\": \"app_open\"}", &ctx, &out)) {
        EXPECT_COL (&out, "org_id", ORG_ID);
        EXPECT_COL (&out, "project_id", PROJECT_ID);
        EXPECT_COL (&out, "event_id", "e1");
        EXPECT_COL (&out, "name", "app_open");
        EXPECT_COL (&out, "event_time", RECEIVED_AT);       //  the receive time
        EXPECT_COL (&out, "received_at", RECEIVED_AT);
        EXPECT_COL (&out, "properties", "{}");
        const char *nulls [] = {
            "user_id", "email_sha256", "phone_sha256", "phone_e164_sha256", "device_os",
            "device_os_version", "device_model", "device_brand", "device_locale",
            "device_timezone", "app_version", "app_build", "app_package", "geo_country",
            "geo_region", "attribution_token", "consent_ads", "consent_att", NULL
        };
        for (int i = 0; nulls [i]; i++)
            EXPECT_COL (&out, nulls [i], NULL);
        if (strcmp (out.event_id, "e1") != 0)
            FAIL (__LINE__, "event_id out is \"%s\"", out.event_id);
        const char *line = ORG_ID "\t" PROJECT_ID "\te1\tapp_open\t" RECEIVED_USEC "\t" RECEIVED_USEC
            "\t\\N\t\\N\t\\N\t\\N\t{}\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N"
            "\t\\N\t\\N\n";
        if (out.line_len != strlen (line) || memcmp (out.line, line, out.line_len) != 0)
            FAIL (__LINE__, "line is \"%.*s\"", (int) out.line_len, out.line);
    }
    s_outcome_free (&out);

    //  Null optional fields are absent; unknown fields of any type are ignored.
    ACCEPT_COL ("{\"event_id\": \"e1\", \"name\": \"x\", \"user_id\": null, \"email\": null,"
                " \"phone\": null, \"properties\": null, \"device\": null, \"app\": null,"
                " \"attribution_token\": null, \"consent\": null, \"timestamp\": null,"
                " \"extra\": [1, {\"a\": null}], \"Name\": 5, \"ip\": \"1.2.3.4\"}",
                "properties", "{}");
    //  A key given twice: the last wins (as jansson does).
    packed_t packed;
    msgpack_packer *pk = s_packed_new (&packed);
    msgpack_pack_map (pk, 3);
    s_pack_cstr (pk, "event_id"); s_pack_cstr (pk, "e1");
    s_pack_cstr (pk, "name"); s_pack_cstr (pk, "first");
    s_pack_cstr (pk, "name"); s_pack_cstr (pk, "second");
    RUN_PACKED (&packed, &ctx, &out);
    EXPECT_COL (&out, "name", "second");
    s_outcome_free (&out);
    msgpack_sbuffer_destroy (&packed.buffer);
    //  A map with keys that are not strings: ignored.
    pk = s_packed_new (&packed);
    msgpack_pack_map (pk, 3);
    msgpack_pack_int (pk, 1); s_pack_cstr (pk, "one");
    s_pack_cstr (pk, "event_id"); s_pack_cstr (pk, "e1");
    s_pack_cstr (pk, "name"); s_pack_cstr (pk, "x");
    RUN_PACKED (&packed, &ctx, &out);
    if (out.rc != LY_OK)
        FAIL (__LINE__, "integer key: %s", out.reason);
    s_outcome_free (&out);
    msgpack_sbuffer_destroy (&packed.buffer);
}

static void
s_test_full (void)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    const char *event =
        "{\"event_id\": \"7c1e5b9a-purchase-0001\", \"name\": \"purchase\","
        " \"timestamp\": \"2023-11-14T23:13:19.5+01:00\", \"user_id\": \"customer-42\","
        " \"email\": \" John_Smith@gmail.com \", \"phone\": \"+1 (650) 555-1212\","
        " \"properties\": {\"value\": 9.99, \"currency\": \"USD\", \"content_ids\": [\"sku-1\", \"sku-2\"],"
        "                  \"quantity\": 2, \"meta\": {\"coupon\": null, \"first\": true}},"
        " \"device\": {\"os\": \"iOS\", \"os_version\": \"17.1.2\", \"model\": \"iPhone15,2\","
        "              \"brand\": \"Apple\", \"locale\": \"de_DE\", \"timezone\": \"Europe/Berlin\","
        "              \"screen\": \"1179x2556\"},"
        " \"app\": {\"version\": \"2.3.1\", \"build\": \"231\", \"package\": \"com.example.shop\"},"
        " \"attribution_token\": \"tok+/=ABC\","
        " \"consent\": {\"ads\": true, \"att\": \"authorized\"}}";
    if (ACCEPT (event, &ctx, &out)) {
        EXPECT_COL (&out, "event_id", "7c1e5b9a-purchase-0001");
        EXPECT_COL (&out, "name", "purchase");
        EXPECT_COL (&out, "event_time", "2023-11-14 22:13:19.500000+00");
        EXPECT_COL (&out, "received_at", RECEIVED_AT);
        EXPECT_COL (&out, "user_id", "customer-42");
        EXPECT_COL (&out, "email_sha256", H_JOHN_SMITH);
        EXPECT_COL (&out, "phone_sha256", H_US_650);
        EXPECT_COL (&out, "phone_e164_sha256", H_US_650_E164);
        EXPECT_COL (&out, "properties", "{\"value\":9.99,\"currency\":\"USD\","
                    "\"content_ids\":[\"sku-1\",\"sku-2\"],\"quantity\":2,"
                    "\"meta\":{\"coupon\":null,\"first\":true}}");
        EXPECT_COL (&out, "device_os", "iOS");
        EXPECT_COL (&out, "device_os_version", "17.1.2");
        EXPECT_COL (&out, "device_model", "iPhone15,2");
        EXPECT_COL (&out, "device_brand", "Apple");
        EXPECT_COL (&out, "device_locale", "de_DE");
        EXPECT_COL (&out, "device_timezone", "Europe/Berlin");
        EXPECT_COL (&out, "app_version", "2.3.1");
        EXPECT_COL (&out, "app_build", "231");
        EXPECT_COL (&out, "app_package", "com.example.shop");
        EXPECT_COL (&out, "geo_country", NULL);
        EXPECT_COL (&out, "geo_region", NULL);
        EXPECT_COL (&out, "attribution_token", "tok+/=ABC");
        EXPECT_COL (&out, "consent_ads", "t");
        EXPECT_COL (&out, "consent_att", "authorized");
        if (out.stats.email_invalid || out.stats.phone_invalid)
            FAIL (__LINE__, "fields counted invalid");
        if (strcmp (out.event_id, "7c1e5b9a-purchase-0001") != 0)
            FAIL (__LINE__, "event_id out is \"%s\"", out.event_id);
        //  No raw personal data in the line.
        const char *raw [] = { "John", "john", "gmail", "650", "555", "1212", NULL };
        for (int i = 0; raw [i]; i++)
            if (s_line_has (&out, raw [i]))
                FAIL (__LINE__, "line holds \"%s\"", raw [i]);
    }
    s_outcome_free (&out);

    //  Lines append to the caller's buffer; a refused event appends nothing.
    char *line = NULL;
    size_t line_len = 0;
    char event_id [129], reason [256];
    ly_event_stats_t stats = { 0 };
    const char *events [] = {
        "{\"event_id\": \"a\", \"name\": \"one\"}",
        "{\"event_id\": \"b\", \"name\": \"Two\"}",
        "{\"event_id\": \"c\", \"name\": \"three\", \"email\": \"nope\", \"phone\": \"123\"}",
        "{\"event_id\": \"d\", \"name\": \"four\", \"email\": \"nope@\"}",
        //  "" is missing, as SDKs send for "not known": nothing dropped, nothing counted
        "{\"event_id\": \"e\", \"name\": \"five\", \"email\": \"\", \"phone\": \"\"}",
    };
    int accepted = 0;
    for (int i = 0; i < 5; i++) {
        json_t *json = json_loads (events [i], 0, NULL);
        msgpack_sbuffer buffer;
        msgpack_sbuffer_init (&buffer);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
        ly_sdkbody_pack_json (&pk, json);
        json_decref (json);
        msgpack_unpacked unpacked;
        msgpack_unpacked_init (&unpacked);
        msgpack_unpack_next (&unpacked, buffer.data, buffer.size, NULL);
        size_t before = line_len;
        ly_result_t rc = ly_event_scrub (&unpacked.data, &ctx, &line, &line_len, event_id,
                                         &stats, reason, sizeof reason);
        if (rc == LY_OK)
            accepted++;
        else
        if (line_len != before || event_id [0])
            FAIL (__LINE__, "refused event changed the buffer or event_id");
        msgpack_unpacked_destroy (&unpacked);
        msgpack_sbuffer_destroy (&buffer);
    }
    size_t newlines = 0;
    for (size_t i = 0; i < line_len; i++)
        newlines += line [i] == '\n';
    if (accepted != 4 || newlines != 4 || stats.email_invalid != 2 || stats.phone_invalid != 1
    ||  memcmp (line, ORG_ID "\t" PROJECT_ID "\ta\tone\t", strlen (ORG_ID PROJECT_ID) + 8) != 0)
        FAIL (__LINE__, "appending: %d accepted, %zu lines, stats %u/%u", accepted, newlines,
              stats.email_invalid, stats.phone_invalid);
    free (line);

    //  An incomplete context is our error, not the client's.
    ctx.org_id = NULL;
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\"}", &ctx, &out);
    if (out.rc != LY_ERROR || !out.reason [0])
        FAIL (__LINE__, "no org_id: %d %s", out.rc, out.reason);
    s_outcome_free (&out);
    ctx.org_id = "not-a-uuid";
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\"}", &ctx, &out);
    if (out.rc != LY_ERROR)
        FAIL (__LINE__, "bad org_id: %d %s", out.rc, out.reason);
    s_outcome_free (&out);
    //  A past window wide enough to reach times the store could not convert exactly
    ctx = s_ctx ();
    ctx.max_past_usec = INT64_C(400) * 365 * 86400 * 1000000;
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": \"1700-01-01T00:00:00Z\"}",
                &ctx, &out);
    if (out.rc != LY_OK)
        FAIL (__LINE__, "year 1700: %d %s", out.rc, out.reason);
    else
        EXPECT_COL (&out, "event_time", "-8520336000000000");
    s_outcome_free (&out);
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": \"1680-01-01T00:00:00Z\"}",
                &ctx, &out);
    if (out.rc != LY_INVALID || !strstr (out.reason, "out of range"))
        FAIL (__LINE__, "year 1680: %d %s", out.rc, out.reason);
    s_outcome_free (&out);
    //  No receive time in the context: now.
    ctx = s_ctx ();
    ctx.received_usec = 0;
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\"}", &ctx, &out);
    long long now_usec = (long long) time (NULL) * 1000000;
    if (out.rc != LY_OK || !s_col (&out, "received_at")
    ||  llabs (atoll (s_col (&out, "received_at")) - now_usec) > 60LL * 1000000)
        FAIL (__LINE__, "receive time now: %d %s", out.rc, out.reason);
    s_outcome_free (&out);
}

static void
s_test_required (void)
{
    REFUSE ("null", "the event must be an object");
    REFUSE ("[1, 2]", "the event must be an object");
    REFUSE ("\"event\"", "the event must be an object");
    REFUSE ("{}", "event_id is required");
    REFUSE ("{\"name\": \"x\"}", "event_id is required");
    REFUSE ("{\"event_id\": null, \"name\": \"x\"}", "event_id is required");
    REFUSE ("{\"event_id\": 42, \"name\": \"x\"}", "event_id must be a string of 1 to 128 bytes");
    REFUSE ("{\"event_id\": \"\", \"name\": \"x\"}", "event_id must be a string of 1 to 128 bytes");
    REFUSE ("{\"event_id\": \"a\\tb\", \"name\": \"x\"}",
            "event_id must be valid UTF-8 without control characters");
    REFUSE ("{\"event_id\": \"a\\u0001\", \"name\": \"x\"}",
            "event_id must be valid UTF-8 without control characters");
    REFUSE ("{\"event_id\": \"a\\u007f\", \"name\": \"x\"}",
            "event_id must be valid UTF-8 without control characters");
    REFUSE ("{\"event_id\": \"a\\u0085\", \"name\": \"x\"}",
            "event_id must be valid UTF-8 without control characters");
    REFUSE ("{\"event_id\": \"a\\u0000b\", \"name\": \"x\"}",
            "event_id must be valid UTF-8 without control characters");
    ACCEPT_COL ("{\"event_id\": \"événement 1\", \"name\": \"x\"}", "event_id", "événement 1");
    char event [400];
    char id [130];
    memset (id, 'i', 128);
    id [128] = 0;
    snprintf (event, sizeof event, "{\"event_id\": \"%s\", \"name\": \"x\"}", id);
    ACCEPT_COL (event, "event_id", id);
    strcat (id, "i");
    snprintf (event, sizeof event, "{\"event_id\": \"%s\", \"name\": \"x\"}", id);
    REFUSE (event, "event_id must be a string of 1 to 128 bytes");
    //  43 three-byte characters are 129 bytes: too long, though 43 characters.
    strcpy (event, "{\"event_id\": \"");
    for (int i = 0; i < 43; i++)
        strcat (event, "€");
    strcat (event, "\", \"name\": \"x\"}");
    REFUSE (event, "event_id must be a string of 1 to 128 bytes");

    REFUSE ("{\"event_id\": \"e\"}", "name is required");
    REFUSE ("{\"event_id\": \"e\", \"name\": null}", "name is required");
    const char *bad_names [] = {
        "\"\"", "\"Purchase\"", "\"add-to-cart\"", "\"a b\"", "\"é\"", "7", "true",
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",  /* 65 */
        "[\"x\"]", "\"x\\n\"", NULL
    };
    for (int i = 0; bad_names [i]; i++) {
        snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": %s}", bad_names [i]);
        REFUSE (event, "name must match [a-z0-9_]{1,64}");
    }
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                "name", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"level_2_complete\"}", "name", "level_2_complete");
}

#define TS_ACCEPT(value, wanted) s_ts_accept (__LINE__, value, wanted)
static void
s_ts_accept (int at, const char *value, const char *wanted)
{
    char event [256];
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": %s}", value);
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    if (s_accept (at, event, &ctx, &out))
        s_expect_col (at, &out, "event_time", wanted);
    s_outcome_free (&out);
}

#define TS_REFUSE(value, reason) s_ts_refuse (__LINE__, value, reason)
static void
s_ts_refuse (int at, const char *value, const char *reason)
{
    char event [256];
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": %s}", value);
    s_refuse (at, event, reason);
}

static void
s_test_timestamp (void)
{
    const char *wrong = "timestamp must be an RFC 3339 date-time with an offset"
                        " (2026-01-31T12:00:00Z) or a number of epoch milliseconds";
    //  RFC 3339, with offsets, fractions, lower-case t/z and the space separator
    TS_ACCEPT ("\"2023-11-14T22:13:20Z\"", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("\"2023-11-14T22:10:00.123456Z\"", "2023-11-14 22:10:00.123456+00");
    TS_ACCEPT ("\"2023-11-14t22:10:00.123456789z\"", "2023-11-14 22:10:00.123456+00");
    TS_ACCEPT ("\"2023-11-14 22:10:00.1Z\"", "2023-11-14 22:10:00.100000+00");
    TS_ACCEPT ("\"2023-11-14T22:13:20.1234567890Z\"", "2023-11-14 22:13:20.123456+00");
    TS_ACCEPT ("\"2023-11-14T22:13:20.000000000000000000000000000000000000000000000000000009Z\"",
               "2023-11-14 22:13:20.000000+00");      //  RFC 3339: 1*DIGIT
    TS_ACCEPT ("\"2023-11-15T00:13:20+02:00\"", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("\"2023-11-14T12:43:20-09:30\"", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("\"2023-11-14T22:13:20+00:00\"", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("\"2023-11-14T22:13:20-00:00\"", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("\"2023-11-07T22:13:20Z\"", "2023-11-07 22:13:20.000000+00");     //  7 days exactly
    TS_ACCEPT ("\"2023-11-14T22:18:20Z\"", "2023-11-14 22:18:20.000000+00");     //  5 minutes exactly
    TS_ACCEPT ("\"2023-11-14T22:12:60Z\"", "2023-11-14 22:13:00.000000+00");     //  a leap second
    //  epoch milliseconds
    TS_ACCEPT ("1700000000000", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("1699999999123", "2023-11-14 22:13:19.123000+00");
    TS_ACCEPT ("1699395200000", "2023-11-07 22:13:20.000000+00");
    //  with a fraction, as SDKs that compute them from a double send them
    TS_ACCEPT ("1700000000000.0", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("1.7e12", "2023-11-14 22:13:20.000000+00");
    TS_ACCEPT ("1699999999123.456", "2023-11-14 22:13:19.123456+00");
    TS_ACCEPT ("1699999999123.4564", "2023-11-14 22:13:19.123456+00");
    TS_ACCEPT ("1699999999123.4566", "2023-11-14 22:13:19.123457+00");

    TS_REFUSE ("\"2023-11-14T22:18:20.000001Z\"", "timestamp is more than 5 minutes in the future");
    TS_REFUSE ("\"2023-11-07T22:13:19.999999Z\"", "timestamp is more than 7 days in the past");
    TS_REFUSE ("1700000300001", "timestamp is more than 5 minutes in the future");
    TS_REFUSE ("1699395199999", "timestamp is more than 7 days in the past");
    TS_REFUSE ("1700000000", "timestamp is more than 7 days in the past (it looks like epoch seconds; epoch milliseconds are expected)");
    TS_REFUSE ("1700000000.25", "timestamp is more than 7 days in the past (it looks like epoch seconds; epoch milliseconds are expected)");
    TS_REFUSE ("99999999", "timestamp is more than 7 days in the past");       //  too short for seconds
    TS_REFUSE ("1699395199999.999", "timestamp is more than 7 days in the past");
    TS_REFUSE ("1700000300000.001", "timestamp is more than 5 minutes in the future");
    TS_REFUSE ("1e300", "timestamp is more than 5 minutes in the future");
    TS_REFUSE ("-1e300", "timestamp is more than 7 days in the past");
    TS_REFUSE ("-0.0", "timestamp is more than 7 days in the past");
    TS_REFUSE ("0", "timestamp is more than 7 days in the past");
    TS_REFUSE ("-1", "timestamp is more than 7 days in the past");
    TS_REFUSE ("-9223372036854775808", "timestamp is more than 7 days in the past");
    TS_REFUSE ("9223372036854775807", "timestamp is more than 5 minutes in the future");
    TS_REFUSE ("\"9999-12-31T23:59:59Z\"", "timestamp is more than 5 minutes in the future");
    TS_REFUSE ("\"0000-01-01T00:00:00Z\"", "timestamp is more than 7 days in the past");
    const char *bad [] = {
        "\"2023-11-14\"", "\"2023-11-14T22:13:20\"", "\"2023-11-14T22:13\"",
        "\"2023-11-14T22:13:20+0100\"", "\"2023-11-14T22:13:20+01\"", "\"2023-11-14T22:13:20.Z\"",
        "\"2023-11-14T24:00:00Z\"", "\"2023-11-14T22:60:00Z\"", "\"2023-11-14T22:13:61Z\"",
        "\"2023-02-29T00:00:00Z\"", "\"2023-11-31T00:00:00Z\"", "\"2023-13-01T00:00:00Z\"",
        "\"2023-00-10T00:00:00Z\"", "\"2023-11-00T00:00:00Z\"", "\"2023-11-14T22:13:20+24:00\"",
        "\"2023-11-14T22:13:20+01:60\"", "\"2023-11-14X22:13:20Z\"", "\"2023-11-14T22:13:20ZZ\"",
        "\" 2023-11-14T22:13:20Z\"", "\"2023-1-14T22:13:20Z\"",
        "\"+2023-11-14T22:13:20Z\"", "\"yesterday\"", "\"1700000000000\"", "\"\"", "true", "[1700000000000]", "{\"ms\": 1700000000000}",
        "\"2023-11-14T22:13:20.0000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000Z\"", NULL
    };
    for (int i = 0; bad [i]; i++)
        TS_REFUSE (bad [i], wrong);

    //  Leap year: February 29th of 2024
    ly_event_ctx_t ctx = s_ctx ();
    ctx.received_usec = INT64_C(1709251200000000);          //  2024-03-01 00:00:00 UTC
    outcome_t out;
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": \"2024-02-29T23:59:59.999999Z\"}",
                &ctx, &out))
        EXPECT_COL (&out, "event_time", "2024-02-29 23:59:59.999999+00");
    s_outcome_free (&out);
    //  Windows from the context, named in the reason
    ctx = s_ctx ();
    ctx.max_future_usec = 60 * INT64_C(1000000);
    ctx.max_past_usec = 2 * 3600 * INT64_C(1000000);
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": 1700000061000}", &ctx, &out);
    if (out.rc != LY_INVALID || strcmp (out.reason, "timestamp is more than 1 minute in the future"))
        FAIL (__LINE__, "future window: %s", out.reason);
    s_outcome_free (&out);
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": 1699992799000}", &ctx, &out);
    if (out.rc != LY_INVALID || strcmp (out.reason, "timestamp is more than 2 hours in the past"))
        FAIL (__LINE__, "past window: %s", out.reason);
    s_outcome_free (&out);
    s_run_json (__LINE__, "{\"event_id\": \"e\", \"name\": \"x\", \"timestamp\": 1699992800000}", &ctx, &out);
    if (out.rc != LY_OK)
        FAIL (__LINE__, "inside the past window: %s", out.reason);
    s_outcome_free (&out);
}

static void
s_test_user_id (void)
{
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": 42}", "user_id", "42");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": -7}", "user_id", "-7");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": 9223372036854775807}",
                "user_id", "9223372036854775807");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"\"}", "user_id", NULL);
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"a\\tb\\\\c\\nd\\re\"}",
                "user_id", "a\tb\\c\nd\re");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"\\\\N\"}", "user_id", "\\N");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"\\\\.\"}", "user_id", "\\.");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"ユーザー\"}", "user_id", "ユーザー");
    const char *wrong = "user_id must be a string of at most 256 bytes or an integer";
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": 4.5}", wrong);
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": true}", wrong);
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": {\"id\": 1}}", wrong);
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"a\\u0000b\"}",
            "user_id must be valid UTF-8 without NUL bytes");
    char event [600], id [300];
    memset (id, 'u', 256);
    id [256] = 0;
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"%s\"}", id);
    ACCEPT_COL (event, "user_id", id);
    strcat (id, "u");
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"user_id\": \"%s\"}", id);
    REFUSE (event, wrong);
    //  Invalid UTF-8 (JSON cannot carry it; msgpack can)
    packed_t packed;
    s_pack_str (s_packed_event (&packed, "user_id"), "ab\xc3", 3);
    REFUSE_PACKED (&packed, "user_id must be valid UTF-8 without NUL bytes");
    s_pack_str (s_packed_event (&packed, "user_id"), "\xed\xa0\x80", 3);        //  a surrogate
    REFUSE_PACKED (&packed, "user_id must be valid UTF-8 without NUL bytes");
    s_pack_str (s_packed_event (&packed, "user_id"), "\xc0\xaf", 2);            //  overlong '/'
    REFUSE_PACKED (&packed, "user_id must be valid UTF-8 without NUL bytes");
    s_pack_str (s_packed_event (&packed, "user_id"), "\xf4\x90\x80\x80", 4);    //  past U+10FFFF
    REFUSE_PACKED (&packed, "user_id must be valid UTF-8 without NUL bytes");
    msgpack_pack_bin_with_body (s_packed_event (&packed, "user_id"), "abc", 3);
    REFUSE_PACKED (&packed, wrong);
}

static void
s_test_email_phone (void)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    //  Invalid: the field is dropped and counted, the event kept.
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"email\": \"john.smith at gmail\","
                " \"phone\": \"call me\"}", &ctx, &out)) {
        EXPECT_COL (&out, "email_sha256", NULL);
        EXPECT_COL (&out, "phone_sha256", NULL);
        EXPECT_COL (&out, "phone_e164_sha256", NULL);
        if (out.stats.email_invalid != 1 || out.stats.phone_invalid != 1)
            FAIL (__LINE__, "stats %u %u", out.stats.email_invalid, out.stats.phone_invalid);
        if (s_line_has (&out, "john") || s_line_has (&out, "call"))
            FAIL (__LINE__, "raw value in the line");
    }
    s_outcome_free (&out);
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"email\": \"\"}", "email_sha256", NULL);
    //  Already hashed: passed through, lower-cased; TikTok's phone hash unknown.
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\","
                " \"email\": \"62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F\","
                " \"phone\": \"E323EC626319CA94EE8BFF2E4C87CF613BE6EA19919ED1364124E16807AB3176\"}",
                &ctx, &out)) {
        EXPECT_COL (&out, "email_sha256", H_JOHN_SMITH);
        EXPECT_COL (&out, "phone_sha256", H_US_650);
        EXPECT_COL (&out, "phone_e164_sha256", NULL);
    }
    s_outcome_free (&out);
    //  A national number takes the project's calling code; without one it is dropped.
    ctx.default_country_code = "44";
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": \"020 7946 0958\"}", &ctx, &out)) {
        EXPECT_COL (&out, "phone_sha256", H_UK);
        EXPECT_COL (&out, "phone_e164_sha256", H_UK_E164);
    }
    s_outcome_free (&out);
    ctx.default_country_code = NULL;
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": \"020 7946 0958\"}", &ctx, &out)) {
        EXPECT_COL (&out, "phone_sha256", NULL);
        if (out.stats.phone_invalid != 1)
            FAIL (__LINE__, "phone not counted");
    }
    s_outcome_free (&out);
    //  A phone number as a JSON number
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": 16505551212}", &ctx, &out)) {
        EXPECT_COL (&out, "phone_sha256", H_US_650);
        EXPECT_COL (&out, "phone_e164_sha256", H_US_650_E164);
    }
    s_outcome_free (&out);

    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"email\": 5}", "email must be a string");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"email\": [\"a@b.c\"]}", "email must be a string");
    //  ... written as a real; a number that is no phone number is dropped like one
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": 16505551212.0}", &ctx, &out))
        EXPECT_COL (&out, "phone_sha256", H_US_650);
    s_outcome_free (&out);
    const char *not_phones [] = { "-16505551212", "1.5", "-1", "0", "1e300", "-0.0" };
    for (size_t i = 0; i < sizeof not_phones / sizeof *not_phones; i++) {
        char *text = zsys_sprintf ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": %s}",
                                   not_phones [i]);
        if (s_accept (__LINE__, text, &ctx, &out)) {
            EXPECT_COL (&out, "phone_sha256", NULL);
            if (out.stats.phone_invalid != 1)
                FAIL (__LINE__, "phone %s not counted", not_phones [i]);
        }
        s_outcome_free (&out);
        zstr_free (&text);
    }
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": true}", "phone must be a string or a number");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"phone\": [\"1\"]}", "phone must be a string or a number");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"email\": \"a\\u0000@b.com\"}",
            "email must be valid UTF-8 without NUL bytes");
    packed_t packed;
    s_pack_str (s_packed_event (&packed, "email"), "j\xffhn@example.com", 15);
    REFUSE_PACKED (&packed, "email must be valid UTF-8 without NUL bytes");
    s_pack_str (s_packed_event (&packed, "phone"), "+1 650\x80", 7);
    REFUSE_PACKED (&packed, "phone must be valid UTF-8 without NUL bytes");
}

//  n zeros (up to 511), in a buffer of its own for each of the last four calls.
static const char *
s_zeros (int n)
{
    static char buffers [4][512];
    static int next;
    char *zeros = buffers [next++ % 4];
    memset (zeros, '0', (size_t) n);
    zeros [n] = 0;
    return zeros;
}

static void
s_test_properties (void)
{
    ly_event_ctx_t ctx = s_ctx ();
    outcome_t out;
    //  Numbers: the digits of the shortest round-trip form, as plain decimals (as jsonb
    //  writes them back); integers of every size.
    char wanted [2048];
    snprintf (wanted, sizeof wanted, "{\"a\":0.1,\"b\":1%s,\"c\":-0,\"d\":9223372036854775807,"
              "\"e\":-9223372036854775808,\"f\":0.%s25,\"g\":100,\"h\":17976931348623157%s,"
              "\"i\":-0.0000015,\"j\":123456789012345680000}",
              s_zeros (300), s_zeros (309), s_zeros (292));
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"properties\":"
                " {\"a\": 0.1, \"b\": 1e300, \"c\": -0.0, \"d\": 9223372036854775807,"
                " \"e\": -9223372036854775808, \"f\": 2.5e-310, \"g\": 100.0, \"h\": 1.7976931348623157e308,"
                " \"i\": -1.5e-6, \"j\": 1.2345678901234568e20}}",
                "properties", wanted);
    packed_t packed;
    msgpack_packer *pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 3);
    s_pack_cstr (pk, "f32"); msgpack_pack_float (pk, 0.1f);
    s_pack_cstr (pk, "u64"); msgpack_pack_uint64 (pk, UINT64_MAX);
    s_pack_cstr (pk, "tiny"); msgpack_pack_float (pk, 1e-45f);
    RUN_PACKED (&packed, &ctx, &out);
    snprintf (wanted, sizeof wanted, "{\"f32\":0.1,\"u64\":18446744073709551615,\"tiny\":0.%s1}",
              s_zeros (44));
    EXPECT_COL (&out, "properties", wanted);
    s_outcome_free (&out);
    msgpack_sbuffer_destroy (&packed.buffer);

    //  Strings: JSON escapes, then COPY escapes; what PostgreSQL reads back is the JSON.
    const char *nasty = "tab\there\nnew line\rCR back\\slash \"quoted\" \x01\x1f\x7f é € 𝄞 \\N \\.";
    json_t *props = json_pack ("{s:s, s:[s, i], s:{s:s}}", "text", nasty, "list", nasty, 1,
                               "key\twith\\tab", "value", "x");
    json_t *event = json_pack ("{s:s, s:s, s:o}", "event_id", "e", "name", "x", "properties", props);
    char *text = json_dumps (event, 0);
    json_decref (event);
    if (ACCEPT (text, &ctx, &out)) {
        const char *properties = s_col (&out, "properties");
        json_t *back = properties? json_loads (properties, 0, NULL): NULL;
        json_t *text_value = back? json_object_get (back, "text"): NULL;
        if (!text_value || strcmp (json_string_value (text_value), nasty) != 0)
            FAIL (__LINE__, "properties string did not survive: %s", properties);
        if (!back || !json_object_get (back, "key\twith\\tab"))
            FAIL (__LINE__, "properties key did not survive: %s", properties);
        json_decref (back);
        //  In the raw line: no raw tab or newline inside the column, JSON escapes doubled.
        if (!s_line_has (&out, "tab\\\\there\\\\nnew line\\\\rCR back\\\\\\\\slash \\\\\"quoted\\\\\" \\\\u0001\\\\u001f\x7f"))
            FAIL (__LINE__, "escaping in the line: %.*s", (int) out.line_len, out.line);
    }
    s_outcome_free (&out);
    free (text);

    //  Wrong shapes
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"properties\": [1, 2]}", "properties must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"properties\": \"{}\"}", "properties must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"properties\": 5}", "properties must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"properties\": {\"a\": \"b\\u0000c\"}}",
            "properties must hold valid UTF-8 without NUL characters");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_str (pk, "a\0", 2); msgpack_pack_int (pk, 1);
    REFUSE_PACKED (&packed, "properties must hold valid UTF-8 without NUL characters");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_cstr (pk, "nan"); msgpack_pack_double (pk, NAN);
    REFUSE_PACKED (&packed, "properties must not hold NaN or infinite numbers");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_cstr (pk, "list"); msgpack_pack_array (pk, 2);
    msgpack_pack_int (pk, 1); msgpack_pack_float (pk, -INFINITY);
    REFUSE_PACKED (&packed, "properties must not hold NaN or infinite numbers");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_cstr (pk, "blob"); msgpack_pack_bin_with_body (pk, "\x00\x01", 2);
    REFUSE_PACKED (&packed, "properties must hold JSON values only");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_cstr (pk, "ext"); msgpack_pack_ext_with_body (pk, "ab", 2, 1);
    REFUSE_PACKED (&packed, "properties must hold JSON values only");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    msgpack_pack_int (pk, 7); s_pack_cstr (pk, "seven");
    REFUSE_PACKED (&packed, "properties keys must be strings");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_str (pk, "k\xe2\x82", 3); msgpack_pack_int (pk, 1);
    REFUSE_PACKED (&packed, "properties must hold valid UTF-8 without NUL characters");
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_cstr (pk, "k"); s_pack_str (pk, "\xf8\x88\x80\x80\x80", 5);
    REFUSE_PACKED (&packed, "properties must hold valid UTF-8 without NUL characters");

    //  Depth: the object and 15 more levels pass; 16 more do not.
    char deep [512];
    for (int levels = 16; levels <= 17; levels++) {
        strcpy (deep, "{\"event_id\": \"e\", \"name\": \"x\", \"properties\": ");
        for (int i = 1; i < levels; i++)
            strcat (deep, i % 2? "{\"a\": ": "[");
        strcat (deep, "{}");
        for (int i = levels - 1; i >= 1; i--)
            strcat (deep, i % 2? "}": "]");
        strcat (deep, "}");
        ly_event_ctx_t c = s_ctx ();
        s_run_json (__LINE__, deep, &c, &out);
        if (levels == 16 && out.rc != LY_OK)
            FAIL (__LINE__, "16 levels refused: %s", out.reason);
        if (levels == 17 && (out.rc != LY_INVALID
                             || strcmp (out.reason, "properties must not be nested more than 16 levels deep")))
            FAIL (__LINE__, "17 levels: %d %s", out.rc, out.reason);
        s_outcome_free (&out);
    }

    //  Size counts numbers as they are stored: 5e-324 is 326 bytes, so {"a":[...]} (8
    //  bytes) holds 100 of them with their commas (32707 bytes), not 101 (33034).
    for (int count = 100; count <= 101; count++) {
        char *tiny = (char *) malloc (64 + 8 * (size_t) count);
        strcpy (tiny, "{\"event_id\": \"e\", \"name\": \"x\", \"properties\": {\"a\": [");
        for (int i = 0; i < count; i++)
            strcat (tiny, i? ",5e-324": "5e-324");
        strcat (tiny, "]}}");
        s_run_json (__LINE__, tiny, &ctx, &out);
        if (count == 100 && (out.rc != LY_OK || strlen (s_col (&out, "properties")) != 32707))
            FAIL (__LINE__, "100 tiny numbers: %d %s", out.rc, out.reason);
        if (count == 101 && (out.rc != LY_INVALID || strcmp (out.reason, "properties must be at most 32 KiB as JSON")))
            FAIL (__LINE__, "101 tiny numbers: %d %s", out.rc, out.reason);
        s_outcome_free (&out);
        free (tiny);
    }

    //  Size: {"k":"..."} is 8 bytes and the string; 32768 in all pass, one more does not.
    for (size_t size = 32768; size <= 32769; size++) {
        char *value = (char *) malloc (size - 8 + 1);
        memset (value, 'v', size - 8);
        value [size - 8] = 0;
        json_t *big = json_pack ("{s:s, s:s, s:{s:s}}", "event_id", "e", "name", "x",
                                 "properties", "k", value);
        char *big_text = json_dumps (big, 0);
        s_run_json (__LINE__, big_text, &ctx, &out);
        if (size == 32768 && (out.rc != LY_OK || strlen (s_col (&out, "properties")) != 32768))
            FAIL (__LINE__, "32768-byte properties: %d %s", out.rc, out.reason);
        if (size == 32769 && (out.rc != LY_INVALID || strcmp (out.reason, "properties must be at most 32 KiB as JSON")))
            FAIL (__LINE__, "32769-byte properties: %d %s", out.rc, out.reason);
        s_outcome_free (&out);
        free (big_text);
        json_decref (big);
        free (value);
    }
    //  Escapes count: 5000 newlines are 10000 bytes of JSON.
    char *newlines = (char *) malloc (20000);
    memset (newlines, '\n', 16381);
    newlines [16381] = 0;
    json_t *big = json_pack ("{s:s, s:s, s:{s:s}}", "event_id", "e", "name", "x", "properties", "k", newlines);
    char *big_text = json_dumps (big, 0);
    REFUSE (big_text, "properties must be at most 32 KiB as JSON");
    free (big_text);
    json_decref (big);
    free (newlines);
    //  A huge array stops early and is refused.
    pk = s_packed_event (&packed, "properties");
    msgpack_pack_map (pk, 1);
    s_pack_cstr (pk, "many");
    msgpack_pack_array (pk, 100000);
    for (int i = 0; i < 100000; i++)
        msgpack_pack_int (pk, 1000000 + i);
    REFUSE_PACKED (&packed, "properties must be at most 32 KiB as JSON");
}

static void
s_test_objects (void)
{
    //  device, app, attribution_token, consent
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": \"iPhone\"}", "device must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": [\"iOS\"]}", "device must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os\": 17}}",
            "device.os must be a string of at most 128 bytes");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os_version\": 17.1}}",
            "device.os_version must be a string of at most 128 bytes or an integer");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os_version\": true}}",
            "device.os_version must be a string of at most 128 bytes or an integer");
    //  a version or a build may be an integer (Android's versionCode is one)
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os_version\": 17}}",
                "device_os_version", "17");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"build\": 231}}", "app_build", "231");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"version\": 9223372036854775807,"
                " \"build\": -1}}", "app_version", "9223372036854775807");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"version\": 3, \"build\": -1}}",
                "app_build", "-1");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"timezone\": {}}}",
            "device.timezone must be a string of at most 128 bytes");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"locale\": \"en\\u0000\"}}",
            "device.locale must be valid UTF-8 without NUL bytes");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"app\": 1}", "app must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"build\": 2.31}}",
            "app.build must be a string of at most 128 bytes or an integer");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"package\": false}}",
            "app.package must be a string of at most 128 bytes");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"attribution_token\": 12}",
            "attribution_token must be a string of at most 4096 bytes");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": true}", "consent must be an object");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"ads\": \"yes\"}}",
            "consent.ads must be true or false");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"ads\": 1}}",
            "consent.ads must be true or false");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"att\": \"maybe\"}}",
            "consent.att must be one of authorized, denied, not_determined, restricted");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"att\": \"Authorized\"}}",
            "consent.att must be one of authorized, denied, not_determined, restricted");
    REFUSE ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"att\": true}}",
            "consent.att must be one of authorized, denied, not_determined, restricted");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"ads\": false}}", "consent_ads", "f");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"att\": \"not_determined\"}}",
                "consent_att", "not_determined");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"ads\": null, \"att\": \"restricted\"}}",
                "consent_ads", NULL);
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"consent\": {\"att\": \"denied\", \"other\": 1}}",
                "consent_att", "denied");
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os\": \"\", \"unknown\": 5}}",
                "device_os", NULL);
    ACCEPT_COL ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"model\": \"Pixel\\t8\\\\Pro\"}}",
                "device_model", "Pixel\t8\\Pro");
    //  Lengths at and past the limits
    char event [5000], value [4200];
    memset (value, 'm', 128);
    value [128] = 0;
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"model\": \"%s\"}}", value);
    ACCEPT_COL (event, "device_model", value);
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"version\": \"%s\"}}", value);
    ACCEPT_COL (event, "app_version", value);
    strcat (value, "m");
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"model\": \"%s\"}}", value);
    REFUSE (event, "device.model must be a string of at most 128 bytes");
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"app\": {\"version\": \"%s\"}}", value);
    REFUSE (event, "app.version must be a string of at most 128 bytes or an integer");
    memset (value, 'T', 4096);
    value [4096] = 0;
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"attribution_token\": \"%s\"}", value);
    ACCEPT_COL (event, "attribution_token", value);
    strcat (value, "T");
    snprintf (event, sizeof event, "{\"event_id\": \"e\", \"name\": \"x\", \"attribution_token\": \"%s\"}", value);
    REFUSE (event, "attribution_token must be a string of at most 4096 bytes");
    //  The first problem in field order is the one named.
    REFUSE ("{\"consent\": 1, \"app\": 2, \"name\": \"X\", \"event_id\": \"e\"}", "name must match [a-z0-9_]{1,64}");
    REFUSE ("{\"consent\": 1, \"app\": 2, \"name\": \"x\", \"event_id\": \"e\"}", "app must be an object");
}

static void
s_test_geo (void)
{
    char dir [] = "/tmp/ly_event_test.XXXXXX";
    if (!mkdtemp (dir)) {
        FAIL (__LINE__, "mkdtemp: %s", strerror (errno));
        return;
    }
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/test.mmdb", dir);
    char err [256];
    ly_geoip_t *geoip = ly_testmmdb_make (path) == 0? ly_geoip_new (path, err, sizeof err): NULL;
    if (!geoip) {
        FAIL (__LINE__, "no test geo-IP database");
        rmdir (dir);
        return;
    }
    const char *event = "{\"event_id\": \"e\", \"name\": \"x\"}";
    struct { const char *ip; const char *country; const char *region; } cases [] = {
        { "81.2.69.160",            "GB", "ENG" },
        { "::ffff:81.2.69.160",     "GB", "ENG" },
        { "2001:db8::1",            "DE", "BE" },
        { "175.16.199.3",           "CN", "22" },
        { "89.160.20.112",          "SE", NULL },
        { "192.0.2.1",              NULL, NULL },   //  found, no country
        { "198.51.100.7",           NULL, NULL },   //  codes that are no ISO codes
        { "8.8.8.8",                NULL, NULL },   //  not in the database
        { "not an address",         NULL, NULL },
        { "",                       NULL, NULL },
        { NULL,                     NULL, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        ly_event_ctx_t ctx = s_ctx ();
        ctx.geoip = geoip;
        ctx.client_ip = cases [i].ip;
        outcome_t out;
        if (ACCEPT (event, &ctx, &out)) {
            EXPECT_COL (&out, "geo_country", cases [i].country);
            EXPECT_COL (&out, "geo_region", cases [i].region);
            if (cases [i].ip && cases [i].ip [0] && s_line_has (&out, cases [i].ip))
                FAIL (__LINE__, "the client IP is in the line");
        }
        s_outcome_free (&out);
    }
    //  Without a database the IP is simply not used.
    ly_event_ctx_t ctx = s_ctx ();
    ctx.client_ip = "81.2.69.160";
    outcome_t out;
    if (ACCEPT (event, &ctx, &out))
        EXPECT_COL (&out, "geo_country", NULL);
    s_outcome_free (&out);
    ly_geoip_destroy (&geoip);
    unlink (path);
    rmdir (dir);
}

static void
s_test_user_agent (void)
{
    char err [512] = "";
    ly_uap_t *uap = ly_uap_new (LY_UAP_DEFAULT_REGEXES, 100, err, sizeof err);
    if (!uap) {
        FAIL (__LINE__, "ly_uap_new: %s", err);
        return;
    }
    const char *iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
                         "(KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1";
    const char *android = "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 "
                          "(KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36";
    const char *event = "{\"event_id\": \"e\", \"name\": \"x\"}";
    ly_event_ctx_t ctx = s_ctx ();
    ctx.uap = uap;
    ctx.user_agent = iphone;
    ctx.user_agent_len = strlen (iphone);
    outcome_t out;
    if (ACCEPT (event, &ctx, &out)) {
        EXPECT_COL (&out, "device_os", "iOS");
        EXPECT_COL (&out, "device_os_version", "17.1.2");
        EXPECT_COL (&out, "device_model", "iPhone");
        EXPECT_COL (&out, "device_brand", "Apple");
        if (s_line_has (&out, "Mozilla") || s_line_has (&out, "AppleWebKit"))
            FAIL (__LINE__, "the User-Agent is in the line");
    }
    s_outcome_free (&out);
    ctx.user_agent = android;
    ctx.user_agent_len = strlen (android);
    if (ACCEPT (event, &ctx, &out)) {
        EXPECT_COL (&out, "device_os", "Android");
        EXPECT_COL (&out, "device_os_version", "13");
        EXPECT_COL (&out, "device_model", "SM-S918B");
        EXPECT_COL (&out, "device_brand", "Samsung");
    }
    s_outcome_free (&out);
    //  The SDK's own fields win, field by field.
    ctx.user_agent = iphone;
    ctx.user_agent_len = strlen (iphone);
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os\": \"iPadOS\", \"model\": \"iPad13,8\"}}",
                &ctx, &out)) {
        EXPECT_COL (&out, "device_os", "iPadOS");
        EXPECT_COL (&out, "device_os_version", "17.1.2");
        EXPECT_COL (&out, "device_model", "iPad13,8");
        EXPECT_COL (&out, "device_brand", "Apple");
    }
    s_outcome_free (&out);
    //  A User-Agent of another OS than the SDK's says nothing of the device; the same
    //  OS spelled otherwise does
    ctx.user_agent = android;
    ctx.user_agent_len = strlen (android);
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os\": \"iOS\", \"model\": \"iPhone15,2\"}}",
                &ctx, &out)) {
        EXPECT_COL (&out, "device_os", "iOS");
        EXPECT_COL (&out, "device_os_version", NULL);
        EXPECT_COL (&out, "device_model", "iPhone15,2");
        EXPECT_COL (&out, "device_brand", NULL);
    }
    s_outcome_free (&out);
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os\": \"android\"}}", &ctx, &out)) {
        EXPECT_COL (&out, "device_os", "android");
        EXPECT_COL (&out, "device_os_version", "13");
        EXPECT_COL (&out, "device_brand", "Samsung");
    }
    s_outcome_free (&out);
    //  A crawler's or an HTTP library's User-Agent (uap-core's "Spider") names no device
    const char *library = "Python-urllib/3.11";
    ctx.user_agent = library;
    ctx.user_agent_len = strlen (library);
    if (ACCEPT ("{\"event_id\": \"e\", \"name\": \"x\", \"device\": {\"os\": \"iOS\"}}", &ctx, &out)) {
        EXPECT_COL (&out, "device_model", NULL);
        EXPECT_COL (&out, "device_brand", NULL);
    }
    s_outcome_free (&out);
    //  Nothing known: NULL, not "Other".
    const char *curl = "curl/8.4.0";
    ctx.user_agent = curl;
    ctx.user_agent_len = strlen (curl);
    if (ACCEPT (event, &ctx, &out)) {
        EXPECT_COL (&out, "device_os", NULL);
        EXPECT_COL (&out, "device_os_version", NULL);
        EXPECT_COL (&out, "device_model", NULL);
        EXPECT_COL (&out, "device_brand", NULL);
    }
    s_outcome_free (&out);
    //  Garbage bytes in the User-Agent still give a clean line.
    const char garbage [] = "Mozilla/5.0 (Linux; Android 12\t\xff\xfe; Pixel\n6\x00\xc3) Chrome/1.2";
    ctx.user_agent = garbage;
    ctx.user_agent_len = sizeof garbage - 1;
    if (ACCEPT (event, &ctx, &out))
        EXPECT_COL (&out, "device_os", "Android");
    s_outcome_free (&out);
    //  Personal data where a User-Agent names the model (an email, a phone, an IP
    //  address) is not a device: dropped with the User-Agent
    const char *personal [] = {
        "Mozilla/5.0 (Linux; Android 14; jane.doe@example.com Build/UP1A) Chrome/120.0 Mobile",
        "Mozilla/5.0 (Linux; Android 14; +44 7700 900123 Build/UP1A) Chrome/120.0 Mobile",
        "Mozilla/5.0 (Linux; Android 14; 81.2.69.160 Build/UP1A) Chrome/120.0 Mobile",
        "Mozilla/5.0 (Linux; Android 14; 2001:db8::1 Build/UP1A) Chrome/120.0 Mobile",
        NULL
    };
    for (int i = 0; personal [i]; i++) {
        ctx.user_agent = personal [i];
        ctx.user_agent_len = strlen (personal [i]);
        if (ACCEPT (event, &ctx, &out)) {
            EXPECT_COL (&out, "device_os", "Android");
            EXPECT_COL (&out, "device_model", NULL);
        }
        s_outcome_free (&out);
    }
    //  No User-Agent, or an empty one
    ctx.user_agent = NULL;
    ctx.user_agent_len = 0;
    if (ACCEPT (event, &ctx, &out))
        EXPECT_COL (&out, "device_os", NULL);
    s_outcome_free (&out);
    ly_uap_destroy (&uap);
}

//  Random events with hostile strings everywhere: every accepted line is well formed.
static uint64_t s_random_state = 0x9e3779b97f4a7c15;
static uint32_t
s_random (void)
{
    s_random_state ^= s_random_state << 13;
    s_random_state ^= s_random_state >> 7;
    s_random_state ^= s_random_state << 17;
    return (uint32_t) (s_random_state >> 16);
}

static void
s_pack_random_string (msgpack_packer *pk, size_t max)
{
    static const char *pieces [] = {
        "\t", "\n", "\r", "\\", "\\N", "\\.", "\"", "'", ",", "é", "€", "𝄞", "\x01", "\x7f",
        "\xc2\x85", " ", "a", "Z", "0", "{}", "[", "\\u0000", "%s", "\xe2\x80\xa8", "null"
    };
    char text [600];
    size_t len = 0, target = s_random () % (max + 1);
    while (len < target) {
        const char *piece = pieces [s_random () % (sizeof pieces / sizeof pieces [0])];
        size_t piece_len = strlen (piece);
        if (len + piece_len > target)
            break;
        memcpy (text + len, piece, piece_len);
        len += piece_len;
    }
    msgpack_pack_str_with_body (pk, text, len);
}

static void
s_pack_random_value (msgpack_packer *pk, int depth)
{
    switch (s_random () % (depth > 3? 6: 8)) {
        case 0: msgpack_pack_nil (pk); break;
        case 1: s_random () % 2? msgpack_pack_true (pk): msgpack_pack_false (pk); break;
        case 2: msgpack_pack_int64 (pk, (int64_t) ((uint64_t) s_random () << 32 | s_random ())); break;
        case 3: msgpack_pack_double (pk, (double) (int32_t) s_random () / ((s_random () % 1000) + 1)); break;
        case 4: msgpack_pack_uint64 (pk, (uint64_t) s_random () << 32 | s_random ()); break;
        case 5: s_pack_random_string (pk, 40); break;
        case 6: {
            uint32_t count = s_random () % 4;
            msgpack_pack_array (pk, count);
            for (uint32_t i = 0; i < count; i++)
                s_pack_random_value (pk, depth + 1);
            break;
        }
        default: {
            uint32_t count = s_random () % 4;
            msgpack_pack_map (pk, count);
            for (uint32_t i = 0; i < count; i++) {
                s_pack_random_string (pk, 12);
                s_pack_random_value (pk, depth + 1);
            }
        }
    }
}

static void
s_test_random (void)
{
    int accepted = 0;
    for (int n = 0; n < 600; n++) {
        packed_t packed;
        msgpack_packer *pk = s_packed_new (&packed);
        msgpack_pack_map (pk, 12);
        char id [64];
        s_pack_cstr (pk, "event_id");
        snprintf (id, sizeof id, "random-%d-é\\ \"'", n);
        if (n % 5)
            s_pack_cstr (pk, id);
        else
            s_pack_random_string (pk, 120);
        s_pack_cstr (pk, "name");
        s_pack_cstr (pk, n % 2? "random_event": "purchase");
        s_pack_cstr (pk, "timestamp");
        msgpack_pack_int64 (pk, RECEIVED / 1000 - (int64_t) (s_random () % 600000000));
        s_pack_cstr (pk, "user_id");
        s_pack_random_string (pk, 200);
        s_pack_cstr (pk, "email");
        s_pack_random_string (pk, 30);
        s_pack_cstr (pk, "phone");
        s_pack_cstr (pk, n % 2? "+1 (650) 555-1212": "0049 30 1234567");
        s_pack_cstr (pk, "properties");
        msgpack_pack_map (pk, 3);
        for (int i = 0; i < 3; i++) {
            s_pack_random_string (pk, 10);
            s_pack_random_value (pk, 0);
        }
        s_pack_cstr (pk, "device");
        msgpack_pack_map (pk, 3);
        s_pack_cstr (pk, "os"); s_pack_random_string (pk, 20);
        s_pack_cstr (pk, "locale"); s_pack_random_string (pk, 20);
        s_pack_cstr (pk, "timezone"); s_pack_random_string (pk, 20);
        s_pack_cstr (pk, "app");
        msgpack_pack_map (pk, 1);
        s_pack_cstr (pk, "package"); s_pack_random_string (pk, 128);
        s_pack_cstr (pk, "attribution_token");
        s_pack_random_string (pk, 500);
        s_pack_cstr (pk, "consent");
        msgpack_pack_map (pk, 2);
        s_pack_cstr (pk, "ads"); s_random () % 2? msgpack_pack_true (pk): msgpack_pack_false (pk);
        s_pack_cstr (pk, "att"); s_pack_cstr (pk, n % 2? "denied": "authorized");
        s_pack_cstr (pk, "ignored");
        msgpack_pack_bin_with_body (pk, "\x00\xff", 2);

        ly_event_ctx_t ctx = s_ctx ();
        outcome_t out;
        RUN_PACKED (&packed, &ctx, &out);
        if (out.rc == LY_OK) {
            accepted++;
            json_t *properties = json_loads (s_col (&out, "properties"),
                                              JSON_DECODE_INT_AS_REAL, NULL);
            if (!json_is_object (properties))
                FAIL (__LINE__, "properties are no JSON object: %s", s_col (&out, "properties"));
            json_decref (properties);
        }
        else
        if (out.rc != LY_INVALID)
            FAIL (__LINE__, "random event: %d %s", out.rc, out.reason);
        s_outcome_free (&out);
        msgpack_sbuffer_destroy (&packed.buffer);
    }
    if (accepted < 300)
        FAIL (__LINE__, "only %d of 600 random events accepted", accepted);
}

int
main (void)
{
    setvbuf (stdout, NULL, _IONBF, 0);
    const char *dump = getenv ("LY_EVENT_TEST_DUMP");
    if (dump && *dump) {
        s_dump = fopen (dump, "w");
        if (!s_dump) {
            printf ("could not open \"%s\": %s\n", dump, strerror (errno));
            return 1;
        }
    }
    s_test_columns ();
    s_test_minimal ();
    s_test_full ();
    s_test_required ();
    s_test_timestamp ();
    s_test_user_id ();
    s_test_email_phone ();
    s_test_properties ();
    s_test_objects ();
    s_test_geo ();
    s_test_user_agent ();
    s_test_random ();
    for (int i = 0; i < COLUMNS; i++)
        free (s_column_names [i]);
    if (s_dump)
        fclose (s_dump);
    if (s_failures) {
        printf ("ly_event_test: %d failures\n", s_failures);
        return 1;
    }
    printf ("ly_event_test: OK\n");
    return 0;
}
