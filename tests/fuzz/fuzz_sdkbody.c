/*  fuzz_sdkbody.c: libFuzzer target for the /l/events body: any bytes, plain, as a
    gzip claim and as the events of a batch, must give either an error with a 4xx
    status or events that decode as one msgpack array of the stated length, nested
    within the frame limit. */
#include "ly_prelude.h"
#include "ly_sdkbody.h"
#include "ly_msg.h"

static void
s_check (const void *data, size_t size, const char *encoding)
{
    ly_sdkbody_t body;
    ly_sdkbody_error_t error;
    if (ly_sdkbody_parse ("application/json; charset=utf-8", encoding, data, size, &body, &error)) {
        assert (error.status == 400 || error.status == 413 || error.status == 415);
        assert (error.code && error.message [0]);
        return;
    }
    assert (body.count >= 1 && body.count <= LY_SDKBODY_MAX_EVENTS);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    assert (msgpack_unpack_next (&unpacked, body.events, body.events_size, &offset)
            == MSGPACK_UNPACK_SUCCESS);
    assert (offset == body.events_size);
    assert (unpacked.data.type == MSGPACK_OBJECT_ARRAY);
    assert (unpacked.data.via.array.size == body.count);
    msgpack_unpacked_destroy (&unpacked);
    //  What the gateway sends must pass the codec.
    ly_msg_t *msg = ly_msg_new (LY_MSG_EVENTS_SUBMIT);
    ly_msg_set_obj (msg, LY_EVENTS_SUBMIT_EVENTS, body.events, body.events_size);
    ly_msg_set_obj (msg, LY_EVENTS_SUBMIT_REJECTED, body.rejected, body.rejected_size);
    void *frame;
    size_t frame_size;
    assert (ly_msg_encode (msg, false, &frame, &frame_size) == 0);
    ly_msg_t *copy = ly_msg_decode (frame, frame_size, NULL, 0);
    assert (copy);
    ly_msg_destroy (&copy);
    free (frame);
    ly_msg_destroy (&msg);
    ly_sdkbody_free (&body);
}

//  The fast reader answers only where the reference gives the same answer.
static void
s_compare (const void *data, size_t size)
{
    ly_sdkbody_t fast, reference;
    ly_sdkbody_error_t error;
    if (ly_sdkbody_parse_fast ((const char *) data, size, &fast))
        return;
    assert (ly_sdkbody_parse_json ((const char *) data, size, &reference, &error) == 0);
    assert (fast.count == reference.count);
    assert (reference.rejected_size == 1 && fast.rejected_size == 1);
    assert (memcmp (fast.rejected, reference.rejected, 1) == 0);
    msgpack_unpacked one, two;
    msgpack_unpacked_init (&one);
    msgpack_unpacked_init (&two);
    size_t offset = 0;
    assert (msgpack_unpack_next (&one, fast.events, fast.events_size, &offset)
            == MSGPACK_UNPACK_SUCCESS && offset == fast.events_size);
    offset = 0;
    assert (msgpack_unpack_next (&two, reference.events, reference.events_size, &offset)
            == MSGPACK_UNPACK_SUCCESS && offset == reference.events_size);
    assert (msgpack_object_equal (one.data, two.data));
    msgpack_unpacked_destroy (&one);
    msgpack_unpacked_destroy (&two);
    ly_sdkbody_free (&fast);
    ly_sdkbody_free (&reference);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_check (data, size, NULL);
    s_check (data, size, "gzip");
    s_compare (data, size);
    //  The same bytes as the inside of a batch's array, so that the event-by-event
    //  parse of a batch that does not parse whole is reached often
    static const char head [] = "{\"events\": [", tail [] = "]}";
    size_t wrapped_size = sizeof head - 1 + size + sizeof tail - 1;
    char *wrapped = (char *) malloc (wrapped_size);
    assert (wrapped);
    memcpy (wrapped, head, sizeof head - 1);
    if (size)
        memcpy (wrapped + sizeof head - 1, data, size);
    memcpy (wrapped + sizeof head - 1 + size, tail, sizeof tail - 1);
    s_check (wrapped, wrapped_size, NULL);
    s_compare (wrapped, wrapped_size);
    free (wrapped);
    return 0;
}
