/*  ly_sdkbody_test.c: self-test of the two JSON readers of the /l/events body. The fast
    one must answer for the bodies SDKs send (so that it is really used), with the same
    events as the reference (jansson), down to escapes, surrogate pairs, UTF-8 and the
    edges of int64 and double; it must stand aside for everything the reference refuses
    or reads otherwise (duplicate keys, spelled two ways too; depth; a non-object event;
    a batch with other keys; too many events), and the full parse must then give the
    reference's answer. The fuzz target tests/fuzz/fuzz_sdkbody.c does the same on
    random bodies. */
#include "ly_prelude.h"
#include "ly_sdkbody.h"

static int s_failures = 0;

#define FAIL(...) do { printf (__VA_ARGS__); printf ("\n"); s_failures++; } while (0)

//  True when both hold the same events (decoded: the fast reader writes every map and
//  array with a 16-bit length header).
static bool
s_same_events (const ly_sdkbody_t *one, const ly_sdkbody_t *two)
{
    if (one->count != two->count || one->rejected_size != two->rejected_size
    ||  memcmp (one->rejected, two->rejected, one->rejected_size))
        return false;
    msgpack_unpacked a, b;
    msgpack_unpacked_init (&a);
    msgpack_unpacked_init (&b);
    size_t at_a = 0, at_b = 0;
    bool same = msgpack_unpack_next (&a, one->events, one->events_size, &at_a) == MSGPACK_UNPACK_SUCCESS
             && msgpack_unpack_next (&b, two->events, two->events_size, &at_b) == MSGPACK_UNPACK_SUCCESS
             && at_a == one->events_size && at_b == two->events_size
             && msgpack_object_equal (a.data, b.data);
    msgpack_unpacked_destroy (&a);
    msgpack_unpacked_destroy (&b);
    return same;
}

//  A body the fast reader must take, with the reference's events.
static void
s_fast (const char *text)
{
    ly_sdkbody_t fast, reference;
    ly_sdkbody_error_t error;
    if (ly_sdkbody_parse_fast (text, strlen (text), &fast)) {
        FAIL ("the fast reader gave up on %s", text);
        return;
    }
    if (ly_sdkbody_parse_json (text, strlen (text), &reference, &error))
        FAIL ("the reference refused %s: %s", text, error.message);
    else {
        if (!s_same_events (&fast, &reference))
            FAIL ("the readers disagree on %s", text);
        ly_sdkbody_free (&reference);
    }
    ly_sdkbody_free (&fast);
}

//  A body the fast reader must leave to the reference; the full parse then answers as
//  the reference does (the same events, or the same error).
static void
s_slow (const char *text, size_t size)
{
    ly_sdkbody_t fast, reference, full;
    ly_sdkbody_error_t error, full_error;
    if (ly_sdkbody_parse_fast (text, size, &fast) == 0) {
        FAIL ("the fast reader took %.*s", (int) size, text);
        ly_sdkbody_free (&fast);
    }
    int rc = ly_sdkbody_parse_json (text, size, &reference, &error);
    int full_rc = ly_sdkbody_parse ("application/json", NULL, text, size, &full, &full_error);
    if (rc != full_rc) {
        FAIL ("the full parse answers otherwise than the reference on %.*s", (int) size, text);
        if (rc == 0)
            ly_sdkbody_free (&reference);
        if (full_rc == 0)
            ly_sdkbody_free (&full);
    }
    else
    if (rc == 0) {
        if (!s_same_events (&full, &reference))
            FAIL ("the full parse gives other events than the reference on %.*s", (int) size, text);
        ly_sdkbody_free (&reference);
        ly_sdkbody_free (&full);
    }
    else
    if (error.status != full_error.status || strcmp (error.message, full_error.message))
        FAIL ("the full parse gives another error on %.*s: %s", (int) size, text, full_error.message);
}

#define SLOW(text) s_slow (text, sizeof (text) - 1)

//  What the full parse answers: status 0 with count events, those at the indexes in
//  rejected ("1,3", "" for none) refused alone; or the error status.
static void
s_answer (const char *text, size_t size, unsigned status, size_t count, const char *rejected)
{
    ly_sdkbody_t body;
    ly_sdkbody_error_t error;
    if (ly_sdkbody_parse ("application/json", NULL, text, size, &body, &error)) {
        if (error.status != status)
            FAIL ("%.60s...: %u %s, expected %u", text, error.status, error.message, status);
        return;
    }
    if (status)
        FAIL ("%.60s...: parsed, expected %u", text, status);
    msgpack_unpacked list;
    msgpack_unpacked_init (&list);
    size_t at = 0;
    char indexes [256] = "";
    if (msgpack_unpack_next (&list, body.rejected, body.rejected_size, &at) == MSGPACK_UNPACK_SUCCESS)
        for (uint32_t i = 0; i < list.data.via.array.size; i++)
            snprintf (indexes + strlen (indexes), sizeof indexes - strlen (indexes), "%s%" PRIu64,
                      i? ",": "", list.data.via.array.ptr [i].via.array.ptr [0].via.u64);
    msgpack_unpacked_destroy (&list);
    if (!status && (body.count != count || strcmp (indexes, rejected)))
        FAIL ("%.60s...: %zu events, rejected [%s], expected %zu, [%s]",
              text, body.count, indexes, count, rejected);
    ly_sdkbody_free (&body);
}

#define ANSWER(text, status, count, rejected) s_answer (text, sizeof (text) - 1, status, count, rejected)

//  A body of n events, each {"event_id":"eN"}, as a new string.
static char *
s_batch (size_t n)
{
    char *text = strdup ("{\"events\": [");
    for (size_t i = 0; i < n; i++) {
        char *longer = zsys_sprintf ("%s%s{\"event_id\":\"e%zu\"}", text, i? ",": "", i);
        free (text);
        text = longer;
    }
    char *done = zsys_sprintf ("%s]}", text);
    free (text);
    return done;
}

//  An event whose properties object has n keys, "k0" to "kN-1".
static char *
s_wide (size_t n)
{
    char *text = strdup ("{\"event_id\":\"e\",\"properties\":{");
    for (size_t i = 0; i < n; i++) {
        char *longer = zsys_sprintf ("%s%s\"k%zu\":%zu", text, i? ",": "", i, i);
        free (text);
        text = longer;
    }
    char *done = zsys_sprintf ("%s}}", text);
    free (text);
    return done;
}

//  An event whose properties nest to `depth` levels counting the event.
static char *
s_nested (size_t depth)
{
    char *text = strdup ("1");
    for (size_t i = 1; i < depth; i++) {
        char *longer = zsys_sprintf ("{\"k\":%s}", text);
        free (text);
        text = longer;
    }
    char *done = zsys_sprintf ("{\"event_id\":\"e\",\"properties\":%s}", text);
    free (text);
    return done;
}

int
main (void)
{
    setvbuf (stdout, NULL, _IONBF, 0);
    //  What SDKs send: one event, and batches.
    s_fast ("{\"event_id\":\"e-1\",\"name\":\"purchase\",\"timestamp\":1700000000000,"
            "\"user_id\":\"u1\",\"email\":\" John_Smith@Gmail.com \",\"phone\":\"+1 (650) 555-1212\","
            "\"properties\":{\"value\":12.5,\"currency\":\"USD\",\"content_ids\":[\"sku-1\",\"sku-2\"]},"
            "\"device\":{\"os\":\"iOS\"},\"app\":{\"version\":\"1.2.3\"},\"consent\":{\"ads\":true,\"att\":\"authorized\"}}");
    s_fast ("{\"events\":[{\"event_id\":\"a\",\"name\":\"x\"},{\"event_id\":\"b\",\"name\":\"y\"}]}");
    s_fast (" \r\n\t{ \"events\" :\n [ { \"event_id\" : \"a\" } , {} ] } \n");
    s_fast ("{}");
    //  Strings: every escape, surrogate pairs, UTF-8 of every length, escaped keys
    s_fast ("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"}");
    s_fast ("{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf\",\"\\u0074\":1}");
    s_fast ("{\"\":\"\",\"a\\nb\":[\"\",\"x\"]}");
    //  Numbers: the edges of int64, negative zero, reals, exponents, an underflow
    s_fast ("{\"a\":9223372036854775807,\"b\":-9223372036854775808,\"c\":0,\"d\":-0,"
            "\"e\":1.5,\"f\":-0.0,\"g\":1e2,\"h\":1E+2,\"i\":2.5e-3,\"j\":1e-400,"
            "\"k\":1.7976931348623157e308,\"l\":[0,-1,127,128,255,256,65535,65536,-32,-33,-129]}");
    //  Literals and empty containers, nested to the limit (18 levels with the event)
    s_fast ("{\"a\":[true,false,null,[],{},[[]],{\"b\":{}}]}");
    char *text = s_nested (LY_SDKBODY_MAX_DEPTH);
    s_fast (text);
    free (text);
    text = s_batch (LY_SDKBODY_MAX_EVENTS);
    s_fast (text);
    free (text);
    text = s_batch (16);                //  the first count with a 3-byte array header
    s_fast (text);
    free (text);
    //  An event may carry a key "events" inside a batch
    s_fast ("{\"events\":[{\"events\":1}]}");

    //  What the reference refuses, or reads in a way the fast reader does not
    SLOW ("{\"a\":1,\"a\":2}");                         //  duplicate keys
    SLOW ("{\"a\":1,\"\\u0061\":2}");                   //  the same key spelled twice
    SLOW ("{\"p\":{\"x\":1,\"y\":2,\"x\":3}}");
    SLOW ("{\"a\":1,}");
    SLOW ("{\"a\":[1,]}");
    SLOW ("{\"a\":[1 2]}");
    SLOW ("{\"a\" 1}");
    SLOW ("{\"a\":01}");
    SLOW ("{\"a\":-}");
    SLOW ("{\"a\":1.}");
    SLOW ("{\"a\":.5}");
    SLOW ("{\"a\":1e}");
    SLOW ("{\"a\":+1}");
    SLOW ("{\"a\":9223372036854775808}");
    SLOW ("{\"a\":-9223372036854775809}");
    SLOW ("{\"a\":1e309}");
    SLOW ("{\"a\":tru}");
    SLOW ("{\"a\":truex}");
    SLOW ("{\"a\":NaN}");
    SLOW ("{\"a\":\"\\u0000\"}");
    SLOW ("{\"a\":\"\\ud83d\"}");
    SLOW ("{\"a\":\"\\ude00\"}");
    SLOW ("{\"a\":\"\\ud83d\\u0041\"}");
    SLOW ("{\"a\":\"\\x\"}");
    SLOW ("{\"a\":\"\\u12G4\"}");
    SLOW ("{\"a\":\"tab\there\"}");
    SLOW ("{\"a\":\"\xc0\x80\"}");                      //  overlong
    SLOW ("{\"a\":\"\xed\xa0\x80\"}");                  //  a surrogate in UTF-8
    SLOW ("{\"a\":\"\xf4\x90\x80\x80\"}");              //  past U+10FFFF
    SLOW ("{\"a\":\"\xe2\x82\"}");                      //  cut short
    SLOW ("{\"a\":\"\x80\"}");
    SLOW ("{\"a\":\"unterminated}");
    SLOW ("{\"a\":1}x");
    SLOW ("{\"a\":1}\0");
    SLOW ("{\"a\":1}{}");
    SLOW ("[{\"a\":1}]");
    SLOW ("\"event\"");
    SLOW ("{\"events\":[]}");
    SLOW ("{\"events\":{}}");
    SLOW ("{\"events\":[1,{\"a\":1}]}");                 //  an event that is not an object
    SLOW ("{\"events\":[{\"a\":1}],\"sent_at\":1}");     //  a batch with another key
    SLOW ("{\"sent_at\":1,\"events\":[{\"a\":1}]}");
    SLOW ("{\"event_id\":\"e\",\"\\u0065vents\":[{\"a\":1}]}");
    SLOW ("{\"events\":[{\"a\":1}],\"events\":[{\"b\":1}]}");
    SLOW ("{\"events\":[{\"a\":1},{\"a\":1,\"a\":2}]}"); //  one unreadable event
    SLOW ("{\"events\":[{\"a\":1},{\"b\":[}]}");
    text = s_nested (LY_SDKBODY_MAX_DEPTH + 1);
    s_slow (text, strlen (text));
    free (text);
    text = s_batch (LY_SDKBODY_MAX_EVENTS + 1);
    s_slow (text, strlen (text));
    free (text);
    //  A batch is whole, and an unreadable event refused alone, whatever other keys
    //  the body has beside "events" (spelled with an escape too), and however deep
    //  the unreadable event nests; the other keys must parse
    ANSWER ("{\"events\":[{\"a\":1},{\"a\":tru}],\"sdk\":\"ios/1.2\"}", 0, 2, "1");
    ANSWER ("{\"sdk\":{\"v\":[1,{}]},\"events\":[{\"a\":tru},{\"b\":1}]}", 0, 2, "0");
    ANSWER ("{\"\\u0065vents\":[{\"a\":1},{\"a\":tru}]}", 0, 2, "1");
    ANSWER ("{\"events\":[{\"a\":tru}],\"sdk\":tru}", 400, 0, "");
    ANSWER ("{\"events\":[{\"a\":tru}],\"sdk\":[}", 400, 0, "");
    ANSWER ("{\"events\":[{\"a\":tru}],\"sdk\":1,\"sdk\":2}", 400, 0, "");
    ANSWER ("{\"events\":[{\"a\":tru}],\"\\u0065vents\":[{\"b\":1}]}", 400, 0, "");
    ANSWER ("{\"events\":[{\"a\":tru}]\"x\":1}", 400, 0, "");
    //  A body that is one event and a batch at once is refused whole, parseable or not
    ANSWER ("{\"event_id\":\"e\",\"events\":[{\"event_id\":\"i\"}]}", 400, 0, "");
    ANSWER ("{\"event_id\":\"e\",\"events\":[{\"a\":tru}]}", 400, 0, "");
    ANSWER ("{\"event_id\":\"e\",\"events\":5}", 400, 0, "");
    //  ... but null is a field left out: a batch beside "event_id": null, one event
    //  beside "events": null
    ANSWER ("{\"events\":[{\"event_id\":\"i\"}],\"event_id\":null}", 0, 1, "");
    ANSWER ("{\"events\":[{\"event_id\":\"i\"},{\"a\":tru}],\"event_id\":null}", 0, 2, "1");
    ANSWER ("{\"event_id\":\"e\",\"name\":\"a\",\"events\":null}", 0, 1, "");
    ANSWER ("{\"events\":null}", 400, 0, "");
    ANSWER ("{\"events\":null,\"event_id\":null}", 400, 0, "");
    //  Too many events is 413 (split it), even when one of them is unreadable
    text = s_batch (LY_SDKBODY_MAX_EVENTS + 1);
    text [strlen (text) - 10] = ';';   //  the last event: {"event_id";"e500"}
    s_answer (text, strlen (text), 413, 0, "");
    free (text);
    {
        size_t deep = 5000;             //  past jansson's 2048 levels, and the old 4096
        char *nested = (char *) malloc (2 * deep + 64);
        strcpy (nested, "{\"events\":[{\"a\":");
        size_t len = strlen (nested);
        memset (nested + len, '[', deep);
        memset (nested + len + deep, ']', deep);
        strcpy (nested + len + 2 * deep, "},{\"b\":1}]}");
        s_answer (nested, strlen (nested), 0, 2, "0");
        free (nested);
    }

    //  Wide objects: duplicates are looked for pairwise on the fast path, so one of
    //  more than 64 keys goes to the reference (a hash table), and a body of wide
    //  objects costs what its size does
    text = s_wide (64);
    s_fast (text);
    free (text);
    text = s_wide (65);
    s_slow (text, strlen (text));
    free (text);

    if (s_failures)
        printf ("ly_sdkbody_test: %d failures\n", s_failures);
    else
        printf ("ly_sdkbody_test: OK\n");
    return s_failures? 1: 0;
}
