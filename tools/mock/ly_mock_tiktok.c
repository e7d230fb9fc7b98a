/*  ly_mock_tiktok.c: the fake TikTok Business API, Events API 2.0:
    POST /open_api/v1.3/event/track/ with the Access-Token header and a JSON body
    {event_source, event_source_id, test_event_code?, data: [1..1000 events]}.
    Like TikTok it answers HTTP 200 with {"code", "message", "request_id", "data"}:
    code 0 when accepted, 40002 naming the event and field when the shape is wrong,
    40104 / 40105 for a missing / rejected access token. */
#include "ly_prelude.h"
#include "ly_mock.h"

#define S_TRACK_PATH "/open_api/v1.3/event/track/"
#define S_MAX_EVENTS 1000
#define S_MAX_AGE_SEC (7 * 24 * 3600)
#define S_MAX_AHEAD_SEC 300
#define S_MAX_ERRORS 50

#define S_CODE_OK 0
#define S_CODE_NO_PERMISSION 40001
#define S_CODE_INVALID 40002
#define S_CODE_TOO_MANY 40100
#define S_CODE_TOKEN_EMPTY 40104
#define S_CODE_TOKEN_INVALID 40105
#define S_CODE_INTERNAL 50000

//  TikTok's standard app events; others are accepted as custom events, with a warning.
static const char *s_standard_events [] = {
    "AchieveLevel", "AddPaymentInfo", "AddToCart", "AddToWishlist", "Checkout",
    "CompleteTutorial", "CreateGroup", "CreateRole", "GenerateLead", "InAppADClick",
    "InAppADImpr", "InstallApp", "JoinGroup", "LaunchAPP", "LoanApplication", "LoanApproval",
    "LoanDisbursal", "Login", "Purchase", "Rate", "Registration", "Search", "SpendCredits",
    "StartTrial", "Subscribe", "UnlockAchievement", "ViewContent"
};

static const char *s_att_statuses [] = {
    "AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"
};

static bool
s_in (const char *text, const char **list, size_t count)
{
    for (size_t i = 0; text && i < count; i++)
        if (streq (text, list [i]))
            return true;
    return false;
}

//  TikTok's request ids: a UTC timestamp followed by hex.
static void
s_request_id (char out [40])
{
    time_t now = time (NULL);
    struct tm tm;
    gmtime_r (&now, &tm);
    strftime (out, 15, "%Y%m%d%H%M%S", &tm);
    ly_mock_random_text (out + 14, 18, "0123456789ABCDEF");
}

static void
s_answer (ly_mock_answer_t *answer, unsigned status, json_int_t code, const char *message)
{
    char request_id [40];
    s_request_id (request_id);
    json_t *text = json_string (message);
    ly_mock_answer_json (answer, status, json_pack ("{s:I, s:o, s:s, s:{}}", "code", code,
                         "message", text? text: json_string ("invalid parameters"),
                         "request_id", request_id, "data"));
    answer->content_type = "application/json";
}

//  Records a problem in event index (or the request, index < 0).
static void
s_problem (ly_mock_answer_t *answer, long index, const char *field, const char *detail)
{
    if (json_array_size (answer->errors) >= S_MAX_ERRORS)
        return;
    if (index >= 0)
        ly_mock_error (answer, "data[%ld].%s: %s", index, field, detail);
    else
        ly_mock_error (answer, "%s: %s", field, detail);
}

//  email / phone (hashed) and external_id: a string or an array of strings.
static void
s_check_user_field (json_t *user, const char *name, bool must_hash, long index,
                    ly_mock_answer_t *answer)
{
    json_t *value = json_object_get (user, name);
    if (!value)
        return;
    char field [48];
    snprintf (field, sizeof field, "user.%s", name);
    size_t count = json_is_string (value)? 1: json_array_size (value);
    if (!json_is_string (value) && !json_is_array (value)) {
        s_problem (answer, index, field, "must be a string or an array of strings");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_is_string (value)? value: json_array_get (value, i);
        bool upper = false;
        if (!json_is_string (item))
            s_problem (answer, index, field, "must be a string or an array of strings");
        else
        if (json_string_length (item) == 0)
            ly_mock_warning (answer, "data[%ld].%s: empty string", index, field);
        else
        if (!ly_mock_is_sha256_hex (json_string_value (item), &upper)) {
            if (must_hash)
                s_problem (answer, index, field, "must be SHA-256 hashed: 64 hex digits");
            else
                ly_mock_warning (answer, "data[%ld].%s: not SHA-256 hex", index, field);
        }
        else
        if (upper)
            ly_mock_warning (answer, "data[%ld].%s: SHA-256 hex should be lower case", index, field);
    }
}

static void
s_check_event (json_t *event, long index, time_t now, bool app_source, ly_mock_answer_t *answer)
{
    if (!json_is_object (event)) {
        s_problem (answer, index, "", "must be an object");
        return;
    }
    json_t *name = json_object_get (event, "event");
    if (!json_is_string (name) || json_string_length (name) == 0)
        s_problem (answer, index, "event", "must be a non-empty string");
    else
    if (!s_in (json_string_value (name), s_standard_events,
               sizeof s_standard_events / sizeof s_standard_events [0]))
        ly_mock_warning (answer, "data[%ld].event: not a standard app event", index);

    json_t *when = json_object_get (event, "event_time");
    if (!json_is_integer (when))
        s_problem (answer, index, "event_time",
                   when? "must be an integer (Unix time in seconds)": "is required");
    else
    if (json_integer_value (when) > (json_int_t) now + S_MAX_AHEAD_SEC)
        s_problem (answer, index, "event_time", "is in the future (milliseconds instead of seconds?)");
    else
    if (json_integer_value (when) < (json_int_t) now - S_MAX_AGE_SEC)
        ly_mock_warning (answer, "data[%ld].event_time: more than 7 days in the past", index);

    json_t *event_id = json_object_get (event, "event_id");
    if (!json_is_string (event_id) || json_string_length (event_id) == 0)
        s_problem (answer, index, "event_id", event_id? "must be a non-empty string"
                                                      : "is required (TikTok deduplicates on it)");
    json_t *user = json_object_get (event, "user");
    if (user && !json_is_object (user))
        s_problem (answer, index, "user", "must be an object");
    else
    if (user) {
        s_check_user_field (user, "email", true, index, answer);
        s_check_user_field (user, "phone", true, index, answer);
        s_check_user_field (user, "external_id", false, index, answer);
        json_t *att = json_object_get (user, "att_status");
        if (att && !s_in (json_string_value (att), s_att_statuses,
                          sizeof s_att_statuses / sizeof s_att_statuses [0]))
            s_problem (answer, index, "user.att_status",
                       "must be AUTHORIZED, DENIED, NOT_DETERMINED, RESTRICTED or NOT_APPLICABLE");
        if (json_object_get (user, "ip") || json_object_get (user, "user_agent"))
            ly_mock_warning (answer, "data[%ld].user: raw IP or User-Agent sent", index);
    }
    json_t *properties = json_object_get (event, "properties");
    if (properties && !json_is_object (properties))
        s_problem (answer, index, "properties", "must be an object");
    else
    if (properties) {
        ly_mock_check_money (answer, index, "properties", properties);
        json_t *contents = json_object_get (properties, "contents");
        if (contents && !json_is_array (contents))
            s_problem (answer, index, "properties.contents", "must be an array");
    }
    json_t *app = json_object_get (event, "app");
    if (app && !json_is_object (app))
        s_problem (answer, index, "app", "must be an object");
    else
    if (app) {
        static const char *fields [] = { "app_id", "app_name", "app_version" };
        for (size_t i = 0; i < 3; i++) {
            json_t *value = json_object_get (app, fields [i]);
            if (value && !json_is_string (value)) {
                char field [32];
                snprintf (field, sizeof field, "app.%s", fields [i]);
                s_problem (answer, index, field, "must be a string");
            }
        }
    }
    else
    if (app_source)
        ly_mock_warning (answer, "data[%ld].app: missing (app_id, app_name, app_version)", index);
    json_t *ad = json_object_get (event, "ad");
    if (ad && !json_is_object (ad))
        s_problem (answer, index, "ad", "must be an object");
}

void
ly_mock_tiktok_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer)
{
    if (!streq (request->subpath, S_TRACK_PATH) && !streq (request->subpath, "/open_api/v1.3/event/track")) {
        ly_mock_error (answer, "path: not " S_TRACK_PATH);
        ly_mock_answer_json (answer, 404, json_pack ("{s:i, s:s}", "code", 40400,
                             "message", "no such endpoint in layers-mock"));
        return;
    }
    if (!streq (request->method, "POST")) {
        ly_mock_error (answer, "method: not POST");
        s_answer (answer, 405, S_CODE_INVALID, "Method not allowed");
        return;
    }
    if (!streq (request->subpath, S_TRACK_PATH))
        ly_mock_warning (answer, "path: without the trailing slash TikTok documents");
    const char *token = ly_mock_header (request, "access-token");
    if (!token || !*token) {
        ly_mock_error (answer, "access-token: missing header");
        s_answer (answer, 200, S_CODE_TOKEN_EMPTY, "Access token is null, please check.");
        return;
    }
    if (strncmp (token, "bad-", 4) == 0) {
        ly_mock_error (answer, "access-token: rejected (scripted by its prefix)");
        s_answer (answer, 200, S_CODE_TOKEN_INVALID, "Access token is incorrect or has been revoked.");
        return;
    }
    if (!ly_mock_media_type_is (ly_mock_header (request, "content-type"), "application/json")) {
        ly_mock_error (answer, "content-type: not application/json");
        s_answer (answer, 200, S_CODE_INVALID, "Content-Type must be application/json");
        return;
    }
    json_t *body = ly_mock_json_parse (request->body, request->body_size);
    if (!json_is_object (body)) {
        ly_mock_error (answer, "body: not a JSON object");
        s_answer (answer, 200, S_CODE_INVALID, "The request body must be a JSON object");
        json_decref (body);
        return;
    }
    static const char *sources [] = { "app", "web", "offline", "crm" };
    json_t *source = json_object_get (body, "event_source");
    bool app_source = false;
    if (!s_in (json_string_value (source), sources, 4))
        s_problem (answer, -1, "event_source", "must be app, web, offline or crm");
    else
    if (!(app_source = streq (json_string_value (source), "app")))
        ly_mock_warning (answer, "event_source: not \"app\"");
    json_t *source_id = json_object_get (body, "event_source_id");
    if (!json_is_string (source_id) || json_string_length (source_id) == 0)
        s_problem (answer, -1, "event_source_id", "must be a non-empty string (the TikTok App ID)");
    json_t *test_code = json_object_get (body, "test_event_code");
    if (test_code && !json_is_string (test_code))
        s_problem (answer, -1, "test_event_code", "must be a string");
    json_t *data = json_object_get (body, "data");
    if (!json_is_array (data) || json_array_size (data) == 0
    ||  json_array_size (data) > S_MAX_EVENTS)
        s_problem (answer, -1, "data", "must be an array of 1 to 1000 events");
    else {
        time_t now = time (NULL);
        for (size_t i = 0; i < json_array_size (data); i++)
            s_check_event (json_array_get (data, i), (long) i, now, app_source, answer);
    }
    if (json_array_size (answer->errors) > 0) {
        char message [600];
        snprintf (message, sizeof message, "Invalid parameters: %s", ly_mock_first_error (answer));
        s_answer (answer, 200, S_CODE_INVALID, message);
    }
    else {
        s_answer (answer, 200, S_CODE_OK, "OK");
        answer->events = (int) json_array_size (data);
    }
    json_decref (body);
}

void
ly_mock_tiktok_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                     ly_mock_answer_t *answer)
{
    unsigned status = spec->status? spec->status: 200;
    json_int_t code = spec->has_code? spec->code
                    : status == 200 || status == 429? S_CODE_TOO_MANY
                    : status == 401 || status == 403? S_CODE_NO_PERMISSION
                    : status >= 500? S_CODE_INTERNAL: S_CODE_INVALID;
    const char *message = spec->message? spec->message
                        : code == S_CODE_TOO_MANY? "Too many requests. Please retry in some time."
                        : code == S_CODE_NO_PERMISSION? "No permission to operate."
                        : code == S_CODE_TOKEN_EMPTY? "Access token is null, please check."
                        : code == S_CODE_TOKEN_INVALID? "Access token is incorrect or has been revoked."
                        : code == S_CODE_INTERNAL? "Internal service error."
                        : "Invalid parameters.";
    s_answer (answer, status, code, message);
}
