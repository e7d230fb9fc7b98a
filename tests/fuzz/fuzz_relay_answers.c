/*  fuzz_relay_answers.c: libFuzzer target for the relay's readers of network answers:
    Meta, TikTok and Apple bodies with any status, and the text kept in last_response.
    No crash; every verdict is one of the known kinds with a reason; a stored answer is
    bounded and never holds the secret. */
#include "ly_prelude.h"
#include "ly_delivery.h"
#include "ly_httpc.h"
#include "ly_meta.h"
#include "ly_tiktok.h"
#include "ly_apple.h"

static void
s_check (const ly_verdict_t *verdict)
{
    assert (verdict->kind >= LY_VERDICT_DELIVERED && verdict->kind <= LY_VERDICT_NOT_YET);
    assert (verdict->reason && *verdict->reason);
    assert (memchr (verdict->trace_id, 0, sizeof verdict->trace_id));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const long statuses [] = { 200, 201, 400, 401, 403, 404, 408, 429, 500, 502, 503, 0 };
    char *body = (char *) malloc (size);
    memcpy (body, data + 1, size - 1);
    body [size - 1] = 0;
    ly_httpc_response_t response = {
        .result = data [0] == 255? CURLE_OPERATION_TIMEDOUT: CURLE_OK,
        .error = "",
        .status = statuses [data [0] % (sizeof statuses / sizeof statuses [0])],
        .body = body,
        .body_len = size - 1,
        .retry_after = data [0] & 1? 3: -1,
        .trace_id = data [0] & 2? body: NULL,
    };
    ly_verdict_t verdict;
    memset (&verdict, 0, sizeof verdict);
    ly_meta_classify (&response, &verdict);
    s_check (&verdict);
    memset (&verdict, 0, sizeof verdict);
    ly_tiktok_classify (&response, &verdict);
    s_check (&verdict);
    memset (&verdict, 0, sizeof verdict);
    ly_apple_record_t record;
    memset (&record, 0, sizeof record);
    ly_apple_classify (&response, &verdict, &record);
    s_check (&verdict);
    ly_apple_record_reset (&record);
    char *kept = ly_response_text (body, size - 1, "EAAB-secret");
    assert (kept && strlen (kept) <= LY_RESPONSE_MAX + 16);
    assert (!strstr (kept, "EAAB-secret"));
    free (kept);
    free (body);
    return 0;
}
