/*  ly_jsonw_test.c: self-test of ly_jsonw: commas and nesting, escaping of every byte
    that needs it (checked against jansson's own dump and by parsing the text back),
    raw values, the secret-friendly reserve, and failure on an unfinished document. */
#include "ly_prelude.h"
#include "ly_jsonw.h"

//  The text of a writer that wrote one string value, as a new C string.
static char *
s_string_text (const char *value)
{
    ly_jsonw_t w;
    ly_jsonw_init (&w, 0);
    ly_jsonw_string (&w, value);
    size_t len;
    char *text = ly_jsonw_take (&w, &len);
    assert (text && len == strlen (text));
    return text;
}

int
main (void)
{
    //  Structure: commas only between members and elements, at every depth.
    ly_jsonw_t w;
    ly_jsonw_init (&w, 1);              //  grows from the smallest buffer
    ly_jsonw_open (&w, '{');
    ly_jsonw_member_string (&w, "a", "x");
    ly_jsonw_key (&w, "b");
    ly_jsonw_open (&w, '[');
    ly_jsonw_int (&w, -42);
    ly_jsonw_open (&w, '{');
    ly_jsonw_close (&w, '}');
    ly_jsonw_open (&w, '[');
    ly_jsonw_close (&w, ']');
    ly_jsonw_bool (&w, true);
    ly_jsonw_bool (&w, false);
    ly_jsonw_string (&w, NULL);
    ly_jsonw_raw (&w, "{\"k\": [1, 2.5]}", 15);
    ly_jsonw_close (&w, ']');
    ly_jsonw_member_int (&w, "c", INT64_MAX);
    ly_jsonw_key (&w, "d");
    ly_jsonw_open (&w, '{');
    ly_jsonw_member_int (&w, "e", INT64_MIN);
    ly_jsonw_close (&w, '}');
    ly_jsonw_close (&w, '}');
    size_t len;
    char *text = ly_jsonw_take (&w, &len);
    assert (text);
    assert (streq (text, "{\"a\":\"x\",\"b\":[-42,{},[],true,false,null,{\"k\": [1, 2.5]}],"
                         "\"c\":9223372036854775807,\"d\":{\"e\":-9223372036854775808}}"));
    assert (len == strlen (text));
    assert (w.data == NULL);            //  taken: the writer holds nothing
    json_error_t error;
    json_t *back = json_loads (text, 0, &error);
    assert (back);
    json_decref (back);
    free (text);

    //  Escaping: every byte from 1 to 127 and some UTF-8 in a string parse back to the
    //  same string, and match jansson's dump but for the case of hex digits.
    char all [600];
    size_t used = 0;
    for (int byte = 1; byte < 0x80; byte++)
        all [used++] = (char) byte;
    const char *utf8 = "\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80 \"q\" \\ /";
    memcpy (all + used, utf8, strlen (utf8));
    used += strlen (utf8);
    all [used] = 0;
    text = s_string_text (all);
    json_t *string = json_string (all);
    assert (string);
    char *expected = json_dumps (string, JSON_COMPACT | JSON_ENCODE_ANY);
    assert (expected);
    assert (strcasecmp (text, expected) == 0);
    assert (strstr (text, "\\u001f\\u0020") == NULL && strstr (text, "\\u001f !"));
    back = json_loads (text, JSON_DECODE_ANY, &error);
    assert (back && streq (json_string_value (back), all));
    json_decref (back);
    json_decref (string);
    free (expected);
    free (text);

    char escape [6];
    assert (ly_jsonw_escape ('a', escape) == 0);
    assert (ly_jsonw_escape (0x80, escape) == 0);
    assert (ly_jsonw_escape ('\n', escape) == 2 && memcmp (escape, "\\n", 2) == 0);
    assert (ly_jsonw_escape (0x1f, escape) == 6 && memcmp (escape, "\\u001f", 6) == 0);

    text = s_string_text ("");
    assert (streq (text, "\"\""));
    free (text);

    //  A reserve makes room once: what is written after it does not move the text.
    ly_jsonw_init (&w, 8);
    ly_jsonw_open (&w, '{');
    ly_jsonw_reserve (&w, 4096);
    const char *before = w.data;
    size_t size = w.size;
    ly_jsonw_member_string (&w, "access_token", "secret-secret-secret-secret-secret");
    ly_jsonw_close (&w, '}');
    assert (w.data == before && w.size == size);
    text = ly_jsonw_take (&w, &len);
    assert (text && streq (text, "{\"access_token\":\"secret-secret-secret-secret-secret\"}"));
    free (text);

    //  An unfinished document is not handed out.
    ly_jsonw_init (&w, 0);
    ly_jsonw_open (&w, '[');
    ly_jsonw_int (&w, 1);
    text = ly_jsonw_take (&w, &len);
    assert (text == NULL && len == 0);

    //  A writer that was taken from starts again from nothing when written to.
    ly_jsonw_string (&w, "again");
    text = ly_jsonw_take (&w, &len);
    assert (text && streq (text, "\"again\"") && len == 7);
    free (text);

    //  Reset without take frees (and may wipe) the text.
    ly_jsonw_init (&w, 0);
    ly_jsonw_string (&w, "x");
    ly_jsonw_reset (&w, true);
    assert (w.data == NULL);

    printf ("ly_jsonw_test: OK\n");
    return 0;
}
