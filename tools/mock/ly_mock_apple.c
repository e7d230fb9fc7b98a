/*  ly_mock_apple.c: the fake Apple AdServices attribution API: POST /api/v1/ with the
    token as text/plain. Tests script the answer through the token itself:
      notyet-K-...   404 (not known yet) the first K times, then as a plain token
      bad-...        400 (invalid token)
      noattr-...     200 {"attribution": false}
      error-...      500
      anything else  200 with an attribution record (Apple's documented example)
    The "notyet" counters are the only state a fake keeps. */
#include "ly_prelude.h"
#include "ly_mock.h"

#define S_MAX_TOKENS 100000         /* counters kept; past that they start over */

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *s_not_yet;           /* token -> 404s answered so far, owned */

//  How many 404s a "notyet-K-" token gets, or -1 for another token.
static long
s_not_yet_limit (const char *token)
{
    if (strncmp (token, "notyet-", 7) != 0)
        return -1;
    char *end = NULL;
    long limit = strtol (token + 7, &end, 10);
    if (end == token + 7 || limit < 0)
        return -1;
    return limit > 1000? 1000: limit;
}

//  True when token should still answer 404; counts this answer when commit.
static bool
s_still_unknown (const char *token, long limit, bool commit)
{
    pthread_mutex_lock (&s_lock);
    if (!s_not_yet || json_object_size (s_not_yet) >= S_MAX_TOKENS) {
        json_decref (s_not_yet);
        s_not_yet = json_object ();
    }
    json_int_t seen = json_integer_value (json_object_get (s_not_yet, token));
    bool unknown = seen < limit;
    if (unknown && commit)
        json_object_set_new (s_not_yet, token, json_integer (seen + 1));
    pthread_mutex_unlock (&s_lock);
    return unknown;
}

void
ly_mock_apple_reset (void)
{
    pthread_mutex_lock (&s_lock);
    json_decref (s_not_yet);
    s_not_yet = NULL;
    pthread_mutex_unlock (&s_lock);
}

static void
s_empty (ly_mock_answer_t *answer, unsigned status)
{
    answer->status = status;
    free (answer->body);
    answer->body = NULL;
    answer->content_type = "text/plain";
}

void
ly_mock_apple_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer)
{
    if (!streq (request->subpath, "/api/v1/") && !streq (request->subpath, "/api/v1")) {
        ly_mock_error (answer, "path: not /api/v1/");
        s_empty (answer, 404);
        return;
    }
    if (!streq (request->method, "POST")) {
        ly_mock_error (answer, "method: not POST");
        s_empty (answer, 405);
        return;
    }
    if (!ly_mock_media_type_is (ly_mock_header (request, "content-type"), "text/plain")) {
        ly_mock_error (answer, "content-type: not text/plain");
        s_empty (answer, 400);
        return;
    }
    //  The token, without surrounding white space.
    const char *start = request->body;
    size_t len = request->body_size;
    while (len > 0 && isspace ((unsigned char) *start))
        start++, len--;
    while (len > 0 && isspace ((unsigned char) start [len - 1]))
        len--;
    if (len == 0 || memchr (start, 0, len)) {
        ly_mock_error (answer, "body: no token");
        s_empty (answer, 400);
        return;
    }
    char *token = strndup (start, len);
    if (!token) {
        s_empty (answer, 500);
        return;
    }
    long limit = s_not_yet_limit (token);
    if (strncmp (token, "bad-", 4) == 0) {
        ly_mock_error (answer, "token: invalid (scripted by its prefix)");
        s_empty (answer, 400);
    }
    else
    if (strncmp (token, "error-", 6) == 0)
        s_empty (answer, 500);
    else
    if (limit >= 0 && s_still_unknown (token, limit, request->commit))
        s_empty (answer, 404);
    else
    if (strncmp (token, "noattr-", 7) == 0) {
        ly_mock_answer_json (answer, 200, json_pack ("{s:b}", "attribution", false));
        answer->events = 1;
    }
    else {
        ly_mock_answer_json (answer, 200, json_pack (
            "{s:b, s:I, s:I, s:s, s:s, s:I, s:s, s:I, s:I}",
            "attribution", true, "orgId", (json_int_t) 40669820,
            "campaignId", (json_int_t) 542370539, "conversionType", "Download",
            "claimType", "Click", "adGroupId", (json_int_t) 542317095,
            "countryOrRegion", "US", "keywordId", (json_int_t) 87675432,
            "adId", (json_int_t) 542317136));
        answer->events = 1;
    }
    free (token);
}

void
ly_mock_apple_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                    ly_mock_answer_t *answer)
{
    s_empty (answer, spec->status? spec->status: 500);
    if (spec->message) {
        answer->body = strdup (spec->message);
        answer->content_type = "text/plain; charset=utf-8";
    }
}
