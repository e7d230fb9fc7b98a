/*  ly_mock_meta.c: the fake Meta Graph API, Conversions API for app events:
    POST /{version}/{dataset_id}/events with the access token in the query string or the
    body, a JSON body or a form (data=<json>&access_token=...), 1 to 1000 events.
    Checked as Meta documents it (app_data with the 16-slot extinfo for app events,
    SHA-256 customer data, event_time in seconds within the last 7 days); a refusal is
    Graph's error object with code 100 and a subcode, naming the event and field. */
#include "ly_prelude.h"
#include "ly_mock.h"

#define S_MAX_EVENTS 1000
#define S_MAX_AGE_SEC (7 * 24 * 3600)       /* event_time at most 7 days old */
#define S_MAX_AHEAD_SEC 300                 /* and at most 5 minutes ahead */
#define S_MAX_ERRORS 50                     /* errors kept per request */
#define S_TRACE_ALPHABET LY_MOCK_ALNUM "-_"

//  Subcodes of code 100 (Invalid parameter) this fake uses.
#define S_SUBCODE_TOO_OLD 2804003
#define S_SUBCODE_IN_FUTURE 2804004
#define S_SUBCODE_INVALID 2804008
#define S_SUBCODE_NO_OBJECT 33

typedef struct {
    int subcode;                /* error_subcode of the first problem */
    const char *title;          /* error_user_title of the first problem */
    char user_msg [512];        /* error_user_msg of the first problem */
} s_refusal_t;

static void
s_trace_id (char out [28])
{
    out [0] = 'A';
    ly_mock_random_text (out + 1, 22, S_TRACE_ALPHABET);
}

//  A Graph error object: {"error": {message, type, code, error_subcode, ...}}.
static json_t *
s_error_body (const char *message, json_int_t code, json_int_t subcode, bool transient,
              const char *title, const char *user_msg, const char *trace_id)
{
    json_t *error = json_pack ("{s:s, s:s, s:I, s:b}", "message", message,
                               "type", "OAuthException", "code", code, "is_transient", transient);
    if (subcode)
        json_object_set_new (error, "error_subcode", json_integer (subcode));
    if (title)
        json_object_set_new (error, "error_user_title", json_string (title));
    if (user_msg) {
        json_t *text = json_string (user_msg);
        json_object_set_new (error, "error_user_msg", text? text: json_string ("(invalid UTF-8)"));
    }
    json_object_set_new (error, "fbtrace_id", json_string (trace_id));
    return json_pack ("{s:o}", "error", error);
}

static void
s_answer_error (ly_mock_answer_t *answer, unsigned status, const char *message,
                json_int_t code, json_int_t subcode, bool transient,
                const char *title, const char *user_msg)
{
    char trace_id [28];
    s_trace_id (trace_id);
    ly_mock_answer_json (answer, status,
                         s_error_body (message, code, subcode, transient, title, user_msg, trace_id));
    answer->headers = json_pack ("{s:s}", "x-fb-trace-id", trace_id);
}

//  Records a refusal of event index (or of the request, index < 0); the first one
//  becomes the answer.
static void
s_refuse (ly_mock_answer_t *answer, s_refusal_t *refusal, long index, const char *field,
          int subcode, const char *title, const char *format, ...)
    __attribute__ ((format (printf, 7, 8)));

static void
s_refuse (ly_mock_answer_t *answer, s_refusal_t *refusal, long index, const char *field,
          int subcode, const char *title, const char *format, ...)
{
    char detail [384];
    va_list args;
    va_start (args, format);
    vsnprintf (detail, sizeof detail, format, args);
    va_end (args);
    char where [96];
    if (index >= 0)
        snprintf (where, sizeof where, "data[%ld].%s", index, field);
    else
        snprintf (where, sizeof where, "%s", field);
    if (json_array_size (answer->errors) < S_MAX_ERRORS)
        ly_mock_error (answer, "%s: %s", where, detail);
    if (!refusal->title) {
        refusal->subcode = subcode;
        refusal->title = title;
        snprintf (refusal->user_msg, sizeof refusal->user_msg, "%s: %s", where, detail);
    }
}

//  0 / 1 or a boolean.
static bool
s_is_flag (json_t *value)
{
    if (json_is_boolean (value))
        return true;
    return json_is_integer (value)
        && (json_integer_value (value) == 0 || json_integer_value (value) == 1);
}

//  A customer information field: a string or an array of strings; when hashed, each a
//  SHA-256 in hex. strict: a value that is not a hash refuses the request, else warns.
static void
s_check_customer_field (json_t *user_data, const char *name, bool strict, long index,
                        ly_mock_answer_t *answer, s_refusal_t *refusal)
{
    json_t *value = json_object_get (user_data, name);
    if (!value)
        return;
    char field [64];
    snprintf (field, sizeof field, "user_data.%s", name);
    json_t *single = json_is_string (value)? value: NULL;
    size_t count = single? 1: json_array_size (value);
    if (!single && !json_is_array (value)) {
        s_refuse (answer, refusal, index, field, S_SUBCODE_INVALID, "Invalid Customer Information",
                  "must be a string or an array of strings");
        return;
    }
    if (count == 0)
        ly_mock_warning (answer, "data[%ld].%s: empty array", index, field);
    for (size_t i = 0; i < count; i++) {
        json_t *item = single? single: json_array_get (value, i);
        bool upper = false;
        if (!json_is_string (item)) {
            s_refuse (answer, refusal, index, field, S_SUBCODE_INVALID,
                      "Invalid Customer Information", "must be a string or an array of strings");
            return;
        }
        if (!ly_mock_is_sha256_hex (json_string_value (item), &upper)) {
            if (strict)
                s_refuse (answer, refusal, index, field, S_SUBCODE_INVALID,
                          "Invalid Customer Information",
                          "must be SHA-256 hashed: 64 lower-case hex digits");
            else
                ly_mock_warning (answer, "data[%ld].%s: not SHA-256 hex", index, field);
        }
        else
        if (upper)
            ly_mock_warning (answer, "data[%ld].%s: SHA-256 hex should be lower case", index, field);
    }
}

static void
s_check_user_data (json_t *event, long index, ly_mock_answer_t *answer, s_refusal_t *refusal)
{
    json_t *user_data = json_object_get (event, "user_data");
    if (!user_data) {
        s_refuse (answer, refusal, index, "user_data", S_SUBCODE_INVALID,
                  "Missing Customer Information", "is required");
        return;
    }
    if (!json_is_object (user_data)) {
        s_refuse (answer, refusal, index, "user_data", S_SUBCODE_INVALID,
                  "Invalid Customer Information", "must be an object");
        return;
    }
    if (json_object_size (user_data) == 0)
        ly_mock_warning (answer, "data[%ld].user_data: no customer information parameters", index);
    static const char *hashed [] = { "em", "ph", "external_id" };
    for (size_t i = 0; i < sizeof hashed / sizeof hashed [0]; i++)
        s_check_customer_field (user_data, hashed [i], true, index, answer, refusal);
    static const char *should_hash [] = { "fn", "ln", "ge", "db", "ct", "st", "zp", "country" };
    for (size_t i = 0; i < sizeof should_hash / sizeof should_hash [0]; i++)
        s_check_customer_field (user_data, should_hash [i], false, index, answer, refusal);
    static const char *raw [] = { "client_ip_address", "client_user_agent" };
    for (size_t i = 0; i < sizeof raw / sizeof raw [0]; i++)
        if (json_object_get (user_data, raw [i]))
            ly_mock_warning (answer, "data[%ld].user_data.%s: raw personal data sent", index, raw [i]);
}

static void
s_check_app_data (json_t *event, long index, ly_mock_answer_t *answer, s_refusal_t *refusal)
{
    json_t *app_data = json_object_get (event, "app_data");
    if (!json_is_object (app_data)) {
        s_refuse (answer, refusal, index, "app_data", S_SUBCODE_INVALID, "Missing App Data",
                  app_data? "must be an object": "is required for app events");
        return;
    }
    static const char *flags [] = { "advertiser_tracking_enabled", "application_tracking_enabled" };
    for (size_t i = 0; i < 2; i++) {
        json_t *flag = json_object_get (app_data, flags [i]);
        char field [64];
        snprintf (field, sizeof field, "app_data.%s", flags [i]);
        if (!s_is_flag (flag))
            s_refuse (answer, refusal, index, field, S_SUBCODE_INVALID, "Invalid App Data",
                      flag? "must be 0 or 1": "is required for app events");
    }
    json_t *extinfo = json_object_get (app_data, "extinfo");
    if (!json_is_array (extinfo) || json_array_size (extinfo) != 16) {
        s_refuse (answer, refusal, index, "app_data.extinfo", S_SUBCODE_INVALID, "Invalid App Data",
                  extinfo? "must be an array of exactly 16 strings": "is required for app events");
        return;
    }
    for (size_t i = 0; i < 16; i++)
        if (!json_is_string (json_array_get (extinfo, i))) {
            char field [64];
            snprintf (field, sizeof field, "app_data.extinfo[%zu]", i);
            s_refuse (answer, refusal, index, field, S_SUBCODE_INVALID, "Invalid App Data",
                      "must be a string (empty when unknown)");
            return;
        }
    const char *version = json_string_value (json_array_get (extinfo, 0));
    if (!streq (version, "i2") && !streq (version, "a2"))
        s_refuse (answer, refusal, index, "app_data.extinfo[0]", S_SUBCODE_INVALID,
                  "Invalid App Data", "must be \"i2\" (iOS) or \"a2\" (Android)");
    if (!*json_string_value (json_array_get (extinfo, 4)))
        ly_mock_warning (answer, "data[%ld].app_data.extinfo[4]: OS version is empty", index);
}

static void
s_check_event (json_t *event, long index, time_t now, ly_mock_answer_t *answer,
               s_refusal_t *refusal)
{
    if (!json_is_object (event)) {
        s_refuse (answer, refusal, index, "", S_SUBCODE_INVALID, "Invalid Event",
                  "must be an object");
        return;
    }
    json_t *name = json_object_get (event, "event_name");
    if (!json_is_string (name) || json_string_length (name) == 0)
        s_refuse (answer, refusal, index, "event_name", S_SUBCODE_INVALID, "Missing Event Name",
                  "must be a non-empty string");

    json_t *when = json_object_get (event, "event_time");
    if (!json_is_integer (when))
        s_refuse (answer, refusal, index, "event_time", S_SUBCODE_INVALID, "Invalid Event Time",
                  when? "must be an integer (Unix time in seconds)": "is required");
    else
    if (json_integer_value (when) < (json_int_t) now - S_MAX_AGE_SEC)
        s_refuse (answer, refusal, index, "event_time", S_SUBCODE_TOO_OLD, "Event Timestamp Too Old",
                  "the timestamp for this event is more than 7 days in the past");
    else
    if (json_integer_value (when) > (json_int_t) now + S_MAX_AHEAD_SEC)
        s_refuse (answer, refusal, index, "event_time", S_SUBCODE_IN_FUTURE,
                  "Event Timestamp In The Future",
                  "the timestamp for this event is in the future (milliseconds instead of seconds?)");

    json_t *event_id = json_object_get (event, "event_id");
    if (!json_is_string (event_id) || json_string_length (event_id) == 0)
        s_refuse (answer, refusal, index, "event_id", S_SUBCODE_INVALID, "Invalid Event ID",
                  event_id? "must be a non-empty string": "is required (Meta deduplicates on it)");

    static const char *sources [] = { "app", "website", "email", "phone_call", "chat",
        "physical_store", "system_generated", "business_messaging", "other" };
    json_t *source = json_object_get (event, "action_source");
    bool known = false;
    for (size_t i = 0; i < sizeof sources / sizeof sources [0] && json_is_string (source); i++)
        known |= streq (json_string_value (source), sources [i]);
    if (!known)
        s_refuse (answer, refusal, index, "action_source", S_SUBCODE_INVALID,
                  "Invalid Action Source", source? "is not a known action source": "is required");
    else
    if (streq (json_string_value (source), "app"))
        s_check_app_data (event, index, answer, refusal);
    else
        ly_mock_warning (answer, "data[%ld].action_source: not \"app\"", index);

    s_check_user_data (event, index, answer, refusal);

    json_t *custom_data = json_object_get (event, "custom_data");
    if (custom_data && !json_is_object (custom_data))
        s_refuse (answer, refusal, index, "custom_data", S_SUBCODE_INVALID, "Invalid Custom Data",
                  "must be an object");
    else
    if (custom_data)
        ly_mock_check_money (answer, index, "custom_data", custom_data);
    json_t *opt_out = json_object_get (event, "opt_out");
    if (opt_out && !json_is_boolean (opt_out))
        ly_mock_warning (answer, "data[%ld].opt_out: not a boolean", index);
}

//  The request's parameters: the query string, then the body's fields over them.
//  Returns NULL (and answers) when the body cannot be read. Caller owns.
static json_t *
s_params (const ly_mock_request_t *request, ly_mock_answer_t *answer)
{
    json_t *params = json_copy (request->query);
    const char *content_type = ly_mock_header (request, "content-type");
    if (request->body_size == 0)
        return params;
    json_t *fields = NULL;
    if (ly_mock_media_type_is (content_type, "application/x-www-form-urlencoded"))
        fields = ly_mock_form_decode (request->body, request->body_size);
    else
    if (!content_type || ly_mock_media_type_is (content_type, "application/json")) {
        fields = ly_mock_json_parse (request->body, request->body_size);
        if (!json_is_object (fields)) {
            json_decref (fields);
            json_decref (params);
            ly_mock_error (answer, "body: not a JSON object");
            s_answer_error (answer, 400, "(#100) The request body must be a JSON object", 100, 0,
                            false, NULL, NULL);
            return NULL;
        }
    }
    else {
        json_decref (params);
        ly_mock_error (answer, "content-type: not application/json or a form");
        s_answer_error (answer, 400, "(#100) Unsupported Content-Type", 100, 0, false, NULL, NULL);
        return NULL;
    }
    json_object_update (params, fields);
    json_decref (fields);
    return params;
}

//  Splits "/v21.0/123/events" into its three parts; false when it has another shape.
static bool
s_split_path (const char *subpath, char version [32], char dataset [64], char edge [32])
{
    char copy [160];
    if (!subpath || strlen (subpath) >= sizeof copy)
        return false;
    strcpy (copy, subpath);
    char *parts [4] = { NULL };
    int count = 0;
    char *save = NULL;
    for (char *part = strtok_r (copy, "/", &save); part; part = strtok_r (NULL, "/", &save)) {
        if (count == 3)
            return false;
        parts [count++] = part;
    }
    if (count != 3 || strlen (parts [0]) >= 32 || strlen (parts [1]) >= 64 || strlen (parts [2]) >= 32)
        return false;
    strcpy (version, parts [0]);
    strcpy (dataset, parts [1]);
    strcpy (edge, parts [2]);
    return true;
}

static bool
s_is_version (const char *text)
{
    if (*text++ != 'v' || !isdigit ((unsigned char) *text))
        return false;
    while (isdigit ((unsigned char) *text))
        text++;
    if (*text++ != '.' || !isdigit ((unsigned char) *text))
        return false;
    while (isdigit ((unsigned char) *text))
        text++;
    return *text == 0;
}

static bool
s_is_digits (const char *text)
{
    return *text && strspn (text, "0123456789") == strlen (text);
}

void
ly_mock_meta_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer)
{
    char version [32], dataset [64], edge [32];
    if (!s_split_path (request->subpath, version, dataset, edge)
    ||  !s_is_version (version) || !streq (edge, "events")) {
        ly_mock_error (answer, "path: not /{version}/{dataset_id}/events");
        s_answer_error (answer, 400, "Unknown path components", 2500, 0, false, NULL, NULL);
        return;
    }
    if (!streq (request->method, "POST") || !s_is_digits (dataset)) {
        char message [256];
        char method [16];
        snprintf (method, sizeof method, "%s", request->method);
        for (char *c = method; *c; c++)
            *c = (char) tolower ((unsigned char) *c);
        snprintf (message, sizeof message, "Unsupported %s request. Object with ID '%s' does not "
                  "exist, cannot be loaded due to missing permissions, or does not support this "
                  "operation", method, dataset);
        ly_mock_error (answer, "%s", streq (request->method, "POST")? "dataset_id: not a number"
                                                                     : "method: not POST");
        s_answer_error (answer, 400, message, 100, S_SUBCODE_NO_OBJECT, false, NULL, NULL);
        return;
    }
    json_t *params = s_params (request, answer);
    if (!params)
        return;
    s_refusal_t refusal = { 0 };

    const char *token = json_string_value (json_object_get (params, "access_token"));
    if (!token || !*token) {
        ly_mock_error (answer, "access_token: missing");
        s_answer_error (answer, 400, "An access token is required to request this resource.",
                        104, 0, false, NULL, NULL);
        goto cleanup;
    }
    if (strncmp (token, "bad-", 4) == 0 || strncmp (token, "expired-", 8) == 0) {
        bool expired = *token == 'e';
        ly_mock_error (answer, "access_token: %s (scripted by its prefix)",
                       expired? "expired": "invalid");
        s_answer_error (answer, 400, expired? "Error validating access token: Session has expired"
                                            : "Invalid OAuth access token - Cannot parse access token",
                        190, expired? 463: 0, false, NULL, NULL);
        json_object_set_new (answer->headers, "www-authenticate",
                             json_string ("OAuth \"Facebook Platform\" \"invalid_token\""));
        goto cleanup;
    }
    json_t *test_code = json_object_get (params, "test_event_code");
    if (test_code && !json_is_string (test_code))
        s_refuse (answer, &refusal, -1, "test_event_code", S_SUBCODE_INVALID, "Invalid Test Code",
                  "must be a string");

    json_t *data = json_object_get (params, "data");
    json_t *parsed = NULL;
    if (json_is_string (data))          //  a form, or JSON carrying data as a string
        data = parsed = ly_mock_json_parse (json_string_value (data), json_string_length (data));
    if (!data && !json_object_get (params, "data")) {
        ly_mock_error (answer, "data: missing");
        s_answer_error (answer, 400, "(#100) The parameter data is required", 100, 0, false,
                        NULL, NULL);
        goto cleanup;
    }
    if (!json_is_array (data) || json_array_size (data) == 0
    ||  json_array_size (data) > S_MAX_EVENTS) {
        ly_mock_error (answer, "data: must be an array of 1 to %d events", S_MAX_EVENTS);
        s_answer_error (answer, 400, "(#100) param data must be an array of 1 to 1000 events",
                        100, S_SUBCODE_INVALID, false, NULL, NULL);
        json_decref (parsed);
        goto cleanup;
    }
    time_t now = time (NULL);
    for (size_t i = 0; i < json_array_size (data); i++)
        s_check_event (json_array_get (data, i), (long) i, now, answer, &refusal);
    size_t count = json_array_size (data);
    json_decref (parsed);

    if (refusal.title) {
        s_answer_error (answer, 400, "Invalid parameter", 100, refusal.subcode, false,
                        refusal.title, refusal.user_msg);
        goto cleanup;
    }
    char trace_id [28];
    s_trace_id (trace_id);
    ly_mock_answer_json (answer, 200, json_pack ("{s:I, s:[], s:s}", "events_received",
                         (json_int_t) count, "messages", "fbtrace_id", trace_id));
    answer->headers = json_pack ("{s:s}", "x-fb-trace-id", trace_id);
    answer->events = (int) count;
cleanup:
    json_decref (params);
}

typedef struct {
    json_int_t code;
    bool transient;
    const char *message;
} s_known_error_t;

static const s_known_error_t s_known_errors [] = {
    { 1, true, "An unknown error occurred" },
    { 2, true, "An unexpected error has occurred. Please retry your request later." },
    { 4, true, "(#4) Application request limit reached" },
    { 10, false, "(#10) Application does not have permission for this action" },
    { 17, true, "(#17) User request limit reached" },
    { 32, true, "(#32) Page request limit reached" },
    { 100, false, "Invalid parameter" },
    { 190, false, "Invalid OAuth access token - Cannot parse access token" },
    { 200, false, "(#200) Permissions error" },
    { 341, true, "(#341) Application limit reached" },
    { 613, true, "(#613) Calls to this api have exceeded the rate limit." },
    { 80004, true, "(#80004) There have been too many calls to this ad-account. Wait a bit and try again." },
};

void
ly_mock_meta_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                   ly_mock_answer_t *answer)
{
    unsigned status = spec->status;
    json_int_t code = spec->has_code? spec->code
                    : status == 401? 190: status == 403? 10: status == 429? 4
                    : status >= 500? 2: status == 400? 100: 1;
    if (!status)
        status = code == 1 || code == 2? 500: 400;
    const s_known_error_t *known = NULL;
    for (size_t i = 0; i < sizeof s_known_errors / sizeof s_known_errors [0]; i++)
        if (s_known_errors [i].code == code)
            known = &s_known_errors [i];
    const char *message = spec->message? spec->message
                        : known? known->message: "An unknown error occurred";
    s_answer_error (answer, status, message, code, spec->has_subcode? spec->subcode: 0,
                    known? known->transient: false, NULL, NULL);
    if (code == 190)
        json_object_set_new (answer->headers, "www-authenticate",
                             json_string ("OAuth \"Facebook Platform\" \"invalid_token\""));
}
