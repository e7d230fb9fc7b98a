/*  ly_meta.c: Meta Conversions API payloads and Graph error classification (see
    ly_meta.h). An app event carries app_data with the 16-slot extinfo array Meta
    documents; customer information is only ever the stored SHA-256 hashes. */
#include "ly_meta.h"

//  Graph API error codes and what they mean for our rows. Codes not listed fall back
//  to is_transient, then to the HTTP status.
typedef struct {
    long low, high;             /* code range */
    ly_verdict_kind_t kind;
    const char *reason;
} s_code_rule_t;

static const s_code_rule_t s_code_rules [] = {
    { 1, 1,         LY_VERDICT_RETRY,    "server error" },  /* unknown error */
    { 2, 2,         LY_VERDICT_RETRY,    "server error" },  /* service temporarily unavailable */
    { 4, 4,         LY_VERDICT_THROTTLE, "throttled" },     /* application request limit */
    { 17, 17,       LY_VERDICT_THROTTLE, "throttled" },     /* user request limit */
    { 32, 32,       LY_VERDICT_THROTTLE, "throttled" },     /* page request limit */
    { 341, 341,     LY_VERDICT_THROTTLE, "throttled" },     /* application limit reached */
    { 368, 368,     LY_VERDICT_THROTTLE, "throttled" },     /* temporarily blocked */
    { 613, 613,     LY_VERDICT_THROTTLE, "throttled" },     /* rate limit */
    { 80000, 80014, LY_VERDICT_THROTTLE, "throttled" },     /* business use case rate limits */
    { 3, 3,         LY_VERDICT_DEAD,     "permission" },    /* capability missing */
    { 10, 10,       LY_VERDICT_DEAD,     "permission" },    /* permission denied */
    { 200, 299,     LY_VERDICT_DEAD,     "permission" },    /* permissions errors */
    { 102, 102,     LY_VERDICT_DEAD,     "auth" },          /* session key invalid */
    { 190, 190,     LY_VERDICT_DEAD,     "auth" },          /* access token invalid or expired */
    { 803, 803,     LY_VERDICT_DEAD,     "config" },        /* unknown object alias */
    { 2500, 2500,   LY_VERDICT_DEAD,     "config" },        /* unknown path */
    { 100, 100,     LY_VERDICT_REJECTED, "rejected" },      /* invalid parameter */
};
#define S_CODE_RULES (sizeof s_code_rules / sizeof s_code_rules [0])

#define S_SUBCODE_NO_OBJECT 33      /* with code 100: the dataset does not exist or is not ours */

static bool
s_is_digits (const char *text)
{
    return text && *text && strspn (text, "0123456789") == strlen (text);
}

//  ^v[0-9]+\.[0-9]+$
static bool
s_is_version (const char *text)
{
    if (!text || *text++ != 'v')
        return false;
    size_t major = strspn (text, "0123456789");
    if (!major || text [major] != '.')
        return false;
    size_t minor = strspn (text + major + 1, "0123456789");
    return minor && text [major + 1 + minor] == 0 && major + minor < 10;
}

int
ly_meta_settings_check (const json_t *config, char *reason, size_t size)
{
    const char *dataset = json_string_value (json_object_get (config, "dataset_id"));
    if (!s_is_digits (dataset) || strlen (dataset) > 30) {
        snprintf (reason, size, "config: dataset_id must be the dataset's number");
        return -1;
    }
    json_t *version = json_object_get (config, "api_version");
    if (version && !json_is_null (version) && !s_is_version (json_string_value (version))) {
        snprintf (reason, size, "config: api_version must be like v21.0");
        return -1;
    }
    json_t *test_code = json_object_get (config, "test_event_code");
    if (test_code && !json_is_null (test_code) && !json_is_string (test_code)) {
        snprintf (reason, size, "config: test_event_code must be a string");
        return -1;
    }
    return 0;
}

//  extinfo[0]: "i2" for iOS, "a2" for Android, NULL when the OS is neither or unknown.
static const char *
s_extinfo_version (const ly_delivery_t *delivery)
{
    ly_platform_t platform = ly_delivery_platform (delivery);
    return platform == LY_PLATFORM_IOS? "i2": platform == LY_PLATFORM_ANDROID? "a2": NULL;
}

int
ly_meta_event_check (const ly_delivery_t *delivery, time_t now, char *reason, size_t size)
{
    if (delivery->event_time < (int64_t) now - LY_META_MAX_AGE) {
        snprintf (reason, size, "invalid: event_time is more than 7 days old");
        return -1;
    }
    if (delivery->event_time > (int64_t) now + LY_META_MAX_AHEAD) {
        snprintf (reason, size, "invalid: event_time is in the future");
        return -1;
    }
    if (!s_extinfo_version (delivery)) {
        snprintf (reason, size, "invalid: app_data needs the device os (iOS or Android)");
        return -1;
    }
    return 0;
}

//  A time zone abbreviation ("PST", "CET", "UTC") when the device gave one.
static const char *
s_zone_abbreviation (const char *zone)
{
    if (!zone)
        return "";
    size_t len = strlen (zone);
    if (len < 2 || len > 5)
        return "";
    for (size_t i = 0; i < len; i++)
        if (!isupper ((unsigned char) zone [i]))
            return "";
    return zone;
}

//  "key": ["hex"], Meta's form for a hashed customer field.
static void
s_hashed_list (ly_jsonw_t *out, const char *key, const char *hex)
{
    ly_jsonw_key (out, key);
    ly_jsonw_open (out, '[');
    ly_jsonw_string (out, hex);
    ly_jsonw_close (out, ']');
}

void
ly_meta_event (const ly_delivery_t *delivery, ly_jsonw_t *out)
{
    char name [80];
    snprintf (name, sizeof name, "layers_%s", delivery->name);
    ly_jsonw_open (out, '{');
    ly_jsonw_member_string (out, "event_name", name);
    ly_jsonw_member_int (out, "event_time", delivery->event_time);
    ly_jsonw_member_string (out, "event_id", delivery->event_id);
    ly_jsonw_member_string (out, "action_source", "app");

    ly_jsonw_key (out, "user_data");
    ly_jsonw_open (out, '{');
    if (delivery->email_sha256)
        s_hashed_list (out, "em", delivery->email_sha256);
    if (delivery->phone_sha256)
        s_hashed_list (out, "ph", delivery->phone_sha256);
    if (delivery->user_id) {
        char hex [65];
        ly_delivery_sha256 (delivery->user_id, hex);
        s_hashed_list (out, "external_id", hex);
    }
    ly_jsonw_close (out, '}');

    const char *version = s_extinfo_version (delivery);
    const char *long_version = delivery->app_build? delivery->app_build: delivery->app_version;
    const char *extinfo [16] = {
        version,
        delivery->app_package,
        delivery->app_version,
        long_version,
        delivery->device_os_version,
        delivery->device_model,
        delivery->device_locale,
        s_zone_abbreviation (delivery->device_timezone),
        NULL,                   /* carrier */
        NULL, NULL, NULL,       /* screen width, height, density */
        NULL,                   /* CPU cores */
        NULL, NULL,             /* storage size, free storage */
        delivery->device_timezone
    };
    //  iOS: App Tracking Transparency says. Android has no ATT: the user's ads consent
    //  says, unless the SDK sent an ATT refusal all the same. Unknown: disabled.
    const char *att = delivery->consent_att;
    bool tracking = ly_delivery_platform (delivery) == LY_PLATFORM_IOS
                  ? att && streq (att, "authorized")
                  : delivery->consent_ads == 1
                    && !(att && (streq (att, "denied") || streq (att, "restricted")));
    ly_jsonw_key (out, "app_data");
    ly_jsonw_open (out, '{');
    ly_jsonw_member_int (out, "advertiser_tracking_enabled", tracking? 1: 0);
    ly_jsonw_member_int (out, "application_tracking_enabled", delivery->consent_ads == 0? 0: 1);
    ly_jsonw_key (out, "extinfo");
    ly_jsonw_open (out, '[');
    for (size_t slot = 0; slot < 16; slot++)
        ly_jsonw_string (out, extinfo [slot]? extinfo [slot]: "");
    ly_jsonw_close (out, ']');
    ly_jsonw_close (out, '}');

    if (delivery->properties) {
        ly_jsonw_key (out, "custom_data");
        ly_jsonw_raw (out, delivery->properties, strlen (delivery->properties));
    }
    ly_jsonw_close (out, '}');
}

//  The URL without a trailing slash on base.
static char *
s_url (const char *base, const char *version, const char *dataset)
{
    size_t len = strlen (base);
    while (len > 0 && base [len - 1] == '/')
        len--;
    char *url = NULL;
    if (asprintf (&url, "%.*s/%s/%s/events", (int) len, base, version, dataset) < 0)
        return NULL;
    return url;
}

int
ly_meta_request (const char *base, const char *default_version, const json_t *config,
                 const char *token, ly_delivery_t **deliveries, size_t count,
                 ly_request_t *request)
{
    memset (request, 0, sizeof *request);
    const char *version = json_string_value (json_object_get (config, "api_version"));
    const char *dataset = json_string_value (json_object_get (config, "dataset_id"));
    const char *test_code = json_string_value (json_object_get (config, "test_event_code"));
    ly_jsonw_t body;
    ly_jsonw_init (&body, 1024 + count * 768);
    ly_jsonw_open (&body, '{');
    ly_jsonw_key (&body, "data");
    ly_jsonw_open (&body, '[');
    for (size_t i = 0; i < count; i++)
        ly_meta_event (deliveries [i], &body);
    ly_jsonw_close (&body, ']');
    if (test_code && *test_code)
        ly_jsonw_member_string (&body, "test_event_code", test_code);
    //  The token goes last, into room made beforehand: no copy of it is left behind
    //  in a block the buffer moved out of.
    ly_jsonw_reserve (&body, strlen (token) * 6 + 32);
    ly_jsonw_member_string (&body, "access_token", token);
    ly_jsonw_close (&body, '}');
    request->body = ly_jsonw_take (&body, &request->len);
    request->url = s_url (base, version && *version? version: default_version, dataset? dataset: "");
    request->headers = curl_slist_append (NULL, "Content-Type: application/json");
    if (!request->url || !request->headers || !request->body) {
        ly_request_reset (request);
        return -1;
    }
    return 0;
}

void
ly_meta_classify (const ly_httpc_response_t *response, ly_verdict_t *verdict)
{
    if (ly_verdict_transport (verdict, response))
        return;
    if (response->trace_id)
        ly_verdict_trace (verdict, response->trace_id);
    json_t *answer = json_loadb (response->body, response->body_len, 0, NULL);
    json_t *error = json_object_get (answer, "error");
    if (response->status >= 200 && response->status < 300 && !error) {
        const char *trace = json_string_value (json_object_get (answer, "fbtrace_id"));
        if (trace)
            ly_verdict_trace (verdict, trace);
        if (json_is_integer (json_object_get (answer, "events_received"))) {
            verdict->kind = LY_VERDICT_DELIVERED;
            verdict->reason = NULL;
        }
        else
            ly_verdict_http (verdict, response->status);    //  unreadable: retry
        json_decref (answer);
        return;
    }
    if (!json_is_object (error)) {
        ly_verdict_http (verdict, response->status);
        json_decref (answer);
        return;
    }
    json_t *code = json_object_get (error, "code");
    json_t *subcode = json_object_get (error, "error_subcode");
    verdict->code = json_is_integer (code)? (long) json_integer_value (code): 0;
    verdict->subcode = json_is_integer (subcode)? (long) json_integer_value (subcode): 0;
    const char *trace = json_string_value (json_object_get (error, "fbtrace_id"));
    if (trace)
        ly_verdict_trace (verdict, trace);
    const s_code_rule_t *rule = NULL;
    for (size_t i = 0; i < S_CODE_RULES && verdict->code; i++)
        if (verdict->code >= s_code_rules [i].low && verdict->code <= s_code_rules [i].high)
            rule = &s_code_rules [i];
    if (rule && rule->kind == LY_VERDICT_REJECTED && verdict->subcode == S_SUBCODE_NO_OBJECT) {
        verdict->kind = LY_VERDICT_DEAD;
        verdict->reason = "config";
    }
    else
    if (rule) {
        verdict->kind = rule->kind;
        verdict->reason = rule->reason;
    }
    else
    if (json_is_true (json_object_get (error, "is_transient"))) {
        verdict->kind = LY_VERDICT_RETRY;
        verdict->reason = "server error";
    }
    else
        ly_verdict_http (verdict, response->status);
    json_decref (answer);
}
