/*  ly_jsonr.h: reading JSON with jansson, the parts the SDK body reader and the partner
    API share: jansson's reasons for refusing a text, in words for the client. */
#ifndef LY_JSONR_H_INCLUDED
#define LY_JSONR_H_INCLUDED

#include "ly_prelude.h"

/*  jansson's reason (json_error_t.text) in the client's terms: some of its messages
    name jansson's own flags ("without JSON_ALLOW_NUL") or say little ("too big
    integer"). Returns a static string (without what followed jansson's words, such as
    "near ..."), or text itself. */
const char *
    ly_jsonr_reason (const char *text);

#endif
