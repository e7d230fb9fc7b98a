/*  ly_mock_model.c: a minimal fake model provider, for the content side's tests:
      POST /v1/chat/completions    OpenAI-compatible: one fixed assistant message
      POST /v1/images/generations  OpenAI-compatible: n small PNGs as b64_json
      POST /v1/messages            Anthropic-compatible: one fixed text block
    A test that needs another answer queues a fault with status 200 and its body. */
#include "ly_prelude.h"
#include "ly_mock.h"

#define S_COMPLETION "This is a completion from layers-mock."
//  An 8x8 RGB PNG.
#define S_PNG_BASE64 "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mMwTpuJFTEMLQkAyvtMgX0NuLUAAAAASUVORK5CYII="

static bool
s_anthropic (const ly_mock_request_t *request)
{
    return strncmp (request->subpath, "/v1/messages", 12) == 0;
}

//  An error in the provider's own shape.
static void
s_error (const ly_mock_request_t *request, ly_mock_answer_t *answer, unsigned status,
         const char *type, const char *message)
{
    json_t *text = json_string (message);
    if (!text)
        text = json_string ("invalid request");
    if (s_anthropic (request))
        ly_mock_answer_json (answer, status, json_pack ("{s:s, s:{s:s, s:o}}", "type", "error",
                             "error", "type", type, "message", text));
    else
        ly_mock_answer_json (answer, status, json_pack ("{s:{s:o, s:s, s:n, s:s}}", "error",
                             "message", text, "type", type, "param", "code", type));
}

static void
s_refuse (const ly_mock_request_t *request, ly_mock_answer_t *answer, const char *message)
{
    ly_mock_error (answer, "%s", message);
    s_error (request, answer, 400, "invalid_request_error", message);
}

//  The "messages" array: each an object with a string role and content.
static bool
s_messages_ok (json_t *messages)
{
    if (!json_is_array (messages) || json_array_size (messages) == 0)
        return false;
    for (size_t i = 0; i < json_array_size (messages); i++) {
        json_t *message = json_array_get (messages, i);
        if (!json_is_string (json_object_get (message, "role")))
            return false;
        json_t *content = json_object_get (message, "content");
        if (!json_is_string (content) && !json_is_array (content))
            return false;
    }
    return true;
}

static void
s_chat (const ly_mock_request_t *request, json_t *body, ly_mock_answer_t *answer)
{
    if (!json_is_string (json_object_get (body, "model"))) {
        s_refuse (request, answer, "model: must be a string");
        return;
    }
    if (!s_messages_ok (json_object_get (body, "messages"))) {
        s_refuse (request, answer, "messages: must be a non-empty array of {role, content}");
        return;
    }
    if (json_is_true (json_object_get (body, "stream"))) {
        s_refuse (request, answer, "stream: streaming is not supported by layers-mock");
        return;
    }
    char id [40] = "chatcmpl-mock-";
    ly_mock_random_text (id + 14, 20, LY_MOCK_ALNUM);
    json_int_t prompt_tokens = (json_int_t) request->body_size / 4 + 1;
    json_int_t completion_tokens = 9;
    ly_mock_answer_json (answer, 200, json_pack (
        "{s:s, s:s, s:I, s:O, s:[{s:i, s:{s:s, s:s}, s:s}], s:{s:I, s:I, s:I}}",
        "id", id, "object", "chat.completion", "created", (json_int_t) time (NULL),
        "model", json_object_get (body, "model"),
        "choices", "index", 0, "message", "role", "assistant", "content", S_COMPLETION,
        "finish_reason", "stop",
        "usage", "prompt_tokens", prompt_tokens, "completion_tokens", completion_tokens,
        "total_tokens", prompt_tokens + completion_tokens));
    answer->events = 1;
}

static void
s_messages (const ly_mock_request_t *request, json_t *body, ly_mock_answer_t *answer)
{
    if (!ly_mock_header (request, "anthropic-version"))
        ly_mock_warning (answer, "anthropic-version: missing header");
    if (!json_is_string (json_object_get (body, "model"))) {
        s_refuse (request, answer, "model: must be a string");
        return;
    }
    if (!json_is_integer (json_object_get (body, "max_tokens"))) {
        s_refuse (request, answer, "max_tokens: must be an integer");
        return;
    }
    if (!s_messages_ok (json_object_get (body, "messages"))) {
        s_refuse (request, answer, "messages: must be a non-empty array of {role, content}");
        return;
    }
    char id [40] = "msg_mock";
    ly_mock_random_text (id + 8, 20, LY_MOCK_ALNUM);
    ly_mock_answer_json (answer, 200, json_pack (
        "{s:s, s:s, s:s, s:O, s:[{s:s, s:s}], s:s, s:n, s:{s:I, s:I}}",
        "id", id, "type", "message", "role", "assistant", "model", json_object_get (body, "model"),
        "content", "type", "text", "text", S_COMPLETION,
        "stop_reason", "end_turn", "stop_sequence",
        "usage", "input_tokens", (json_int_t) request->body_size / 4 + 1,
        "output_tokens", (json_int_t) 9));
    answer->events = 1;
}

static void
s_images (const ly_mock_request_t *request, json_t *body, ly_mock_answer_t *answer)
{
    json_t *prompt = json_object_get (body, "prompt");
    if (!json_is_string (prompt) || json_string_length (prompt) == 0) {
        s_refuse (request, answer, "prompt: must be a non-empty string");
        return;
    }
    json_t *n = json_object_get (body, "n");
    json_int_t count = n? json_integer_value (n): 1;
    if (n && (!json_is_integer (n) || count < 1 || count > 10)) {
        s_refuse (request, answer, "n: must be an integer from 1 to 10");
        return;
    }
    const char *format = json_string_value (json_object_get (body, "response_format"));
    if (format && streq (format, "url"))
        ly_mock_warning (answer, "response_format: url is answered with b64_json");
    json_t *data = json_array ();
    for (json_int_t i = 0; i < count; i++)
        json_array_append_new (data, json_pack ("{s:s, s:O}", "b64_json", S_PNG_BASE64,
                                                "revised_prompt", prompt));
    ly_mock_answer_json (answer, 200, json_pack ("{s:I, s:o}", "created",
                                                 (json_int_t) time (NULL), "data", data));
    answer->events = (int) count;
}

void
ly_mock_model_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer)
{
    typedef void (s_handler_fn) (const ly_mock_request_t *, json_t *, ly_mock_answer_t *);
    s_handler_fn *handler = NULL;
    if (streq (request->subpath, "/v1/chat/completions"))
        handler = s_chat;
    else
    if (streq (request->subpath, "/v1/images/generations"))
        handler = s_images;
    else
    if (streq (request->subpath, "/v1/messages"))
        handler = s_messages;
    if (!handler) {
        ly_mock_error (answer, "path: no such model endpoint");
        s_error (request, answer, 404, "not_found_error", "no such endpoint in layers-mock");
        return;
    }
    if (!streq (request->method, "POST")) {
        ly_mock_error (answer, "method: not POST");
        s_error (request, answer, 405, "invalid_request_error", "method not allowed");
        return;
    }
    const char *authorization = ly_mock_header (request, "authorization");
    const char *api_key = ly_mock_header (request, "x-api-key");
    bool authorized = s_anthropic (request)? api_key && *api_key
                    : authorization && strncmp (authorization, "Bearer ", 7) == 0 && authorization [7];
    if (!authorized) {
        ly_mock_error (answer, "%s: missing", s_anthropic (request)? "x-api-key": "authorization");
        s_error (request, answer, 401, s_anthropic (request)? "authentication_error": "invalid_api_key",
                 "missing API key");
        return;
    }
    json_t *body = ly_mock_json_parse (request->body, request->body_size);
    if (!json_is_object (body))
        s_refuse (request, answer, "body: not a JSON object");
    else
        handler (request, body, answer);
    json_decref (body);
}

void
ly_mock_model_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                    ly_mock_answer_t *answer)
{
    unsigned status = spec->status? spec->status: 500;
    bool anthropic = s_anthropic (request);
    const char *type = status == 429? (anthropic? "rate_limit_error": "rate_limit_exceeded")
                     : status == 401? (anthropic? "authentication_error": "invalid_api_key")
                     : status == 529? "overloaded_error"
                     : status >= 500? (anthropic? "api_error": "server_error")
                     : "invalid_request_error";
    s_error (request, answer, status, type, spec->message? spec->message
             : status == 429? "rate limit reached (injected by layers-mock)"
             : "the server had an error (injected by layers-mock)");
}
