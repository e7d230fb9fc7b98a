/*  ly_apiv1_private.h: what the partner API's files share (ly_apiv1*.c only): the
    request context every handler gets, the response and database helpers, field
    validation, pagination, cursors and the permission rules. The design note is at the
    top of ly_apiv1.c. */
#ifndef LY_APIV1_PRIVATE_H
#define LY_APIV1_PRIVATE_H

#include "ly_apiv1.h"
#include "ly_crypto.h"

#define LY_APIV1_ACTOR "api"
#define LY_APIV1_MAX_PATH_PARAMS 4
#define LY_APIV1_MAX_QUERY 12
#define LY_APIV1_PAGE_DEFAULT 50
#define LY_APIV1_PAGE_MAX 200
#define LY_APIV1_MAX_VALUES 16

//  --------------------------------------------------------------------------
//  Roles and permissions (the table itself is in ly_apiv1.c)

typedef enum {
    LY_PERM_READ,               /* every GET but the token list */
    LY_PERM_CONTENT_WRITE,      /* ads content and its links to projects */
    LY_PERM_PROJECT_WRITE,      /* projects, layers, SDK keys, delivery replay */
    LY_PERM_MEMBER_WRITE,       /* add, change, remove members (plus the rank rule) */
    LY_PERM_TOKEN_WRITE,        /* list, create, revoke API tokens (plus the rank rule) */
    LY_PERM_ORG_WRITE,          /* rename the organization */
    LY_PERM_COUNT
} ly_apiv1_perm_t;

/*  The rank of a role name (owner 40, admin 30, editor 20, viewer 10); 0 when unknown. */
int ly_apiv1_role_rank (const char *role);
/*  The permission's name ("project.write") and the least role that has it. */
const char *ly_apiv1_perm_name (ly_apiv1_perm_t perm);
const char *ly_apiv1_perm_role (ly_apiv1_perm_t perm);
/*  True when a member of rank may act on a member whose rank is target_rank and, when
    new_rank > 0, give it that rank: owners may do anything; others only below their own
    rank. The last-owner rule is checked by the handlers, with the owners locked. */
bool ly_apiv1_may_manage (int rank, int target_rank, int new_rank);

//  --------------------------------------------------------------------------
//  The request context

typedef struct {
    const ly_api_request_t *req;        /* borrowed */
    ly_api_response_t *resp;            /* borrowed; filled by the handler */
    PGconn *db;                         /* layers_api, in the request's transaction; borrowed */
    char org_id [37];                   /* the tenant, from the token */
    char member_id [37];                /* the token's member */
    char token_id [37];                 /* the token */
    char role [16];                     /* the member's role */
    int rank;                           /* its rank */
    const char *params [LY_APIV1_MAX_PATH_PARAMS];  /* path parameters in pattern order */
    char *path_copy;                    /* owned: the path, split; params point into it */
    size_t query_count;                 /* decoded query parameters */
    char *query_names [LY_APIV1_MAX_QUERY];     /* owned */
    char *query_values [LY_APIV1_MAX_QUERY];    /* owned */
    json_t *body;                       /* the JSON body (an object), owned; NULL: none */
    bool failed;                        /* a statement failed: roll back */
    bool db_broken;                     /* the connection broke: the session reconnects */
    bool trusted;                       /* org and member given by layersctl, no token */
    const bool *cancelled;              /* ly_apiv1_cancel was called (atomic); borrowed */
} ly_apiv1_ctx_t;

typedef void (ly_apiv1_handler_fn) (ly_apiv1_ctx_t *ctx);

//  --------------------------------------------------------------------------
//  Responses

/*  Sets an error answer {"error": {"code", "message"}}; replaces any earlier answer. */
void ly_apiv1_error (ly_apiv1_ctx_t *ctx, unsigned status, const char *code,
                     const char *format, ...) __attribute__ ((format (printf, 4, 5)));
/*  422 {"error": {"code": "invalid_field", "field", "message"}}. */
void ly_apiv1_field_error (ly_apiv1_ctx_t *ctx, const char *field, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));
/*  A JSON answer; takes json over. */
void ly_apiv1_reply (ly_apiv1_ctx_t *ctx, unsigned status, json_t *json);
/*  204 without a body. */
void ly_apiv1_no_content (ly_apiv1_ctx_t *ctx);
/*  Sets the Location header to the formatted path. */
void ly_apiv1_location (ly_apiv1_ctx_t *ctx, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
/*  True when the answer is an error (or nothing was answered yet and a statement failed). */
bool ly_apiv1_failed (const ly_apiv1_ctx_t *ctx);

//  --------------------------------------------------------------------------
//  Database

/*  Runs one parameterized statement in the request's transaction. Returns the result
    (caller clears) when it succeeded; else NULL, with the answer set (409, 422, 503, 500
    from the SQLSTATE), the failure logged without any value, and the request marked for
    rollback. */
PGresult *ly_apiv1_exec (ly_apiv1_ctx_t *ctx, const char *sql, int nparams,
                         const char *const *params);
/*  A row as a JSON object, typed by column: bool, integers, json/jsonb, timestamptz as
    RFC 3339 UTC ("2026-01-02T03:04:05.123456Z"), the rest as strings, NULL as null.
    Columns whose name starts with '_' are left out; "a.b" nests b in object a. */
json_t *ly_apiv1_row (const PGresult *res, int row);
/*  json as compact text (caller frees), its reals in the shortest form that reads back
    the same (19.99, not jansson's 19.989999999999998): for answers and stored JSON. */
char *ly_apiv1_dump (const json_t *json);
/*  The value of column name in row, or NULL when absent or NULL; borrowed. */
const char *ly_apiv1_value (const PGresult *res, int row, const char *name);
/*  Sets the ETag header from the row's "_etag" column. */
void ly_apiv1_etag (ly_apiv1_ctx_t *ctx, const PGresult *res, int row);
/*  Checks If-Match against the row's current "_etag" value; false (and 412) on mismatch. */
bool ly_apiv1_if_match (ly_apiv1_ctx_t *ctx, const char *etag_value);
/*  True when the project exists for the tenant; else 404. */
bool ly_apiv1_project_exists (ly_apiv1_ctx_t *ctx, const char *project_id);

/*  The ETag of a row: the microseconds of its updated_at, which every update moves. */
#define LY_APIV1_ETAG_SQL(column) \
    "(extract (epoch FROM " column ") * 1000000)::bigint AS _etag"
/*  A timestamp in microseconds since the epoch (a bigint parameter) as timestamptz. */
#define LY_APIV1_USEC_SQL(param) \
    "(timestamptz 'epoch' + " param "::bigint * interval '1 microsecond')"

/*  A statement built from constant fragments; only the parameters vary. */
typedef struct {
    char *sql;                          /* owned */
    int nparams;
    const char *params [LY_APIV1_MAX_VALUES];   /* borrowed values */
} ly_apiv1_sql_t;

void ly_apiv1_sql_init (ly_apiv1_sql_t *q, const char *start);
/*  Appends fragment, numbering each "$?" in it as the next parameter, whose values
    follow (count of them, as const char *; NULL is SQL NULL). */
void ly_apiv1_sql_add (ly_apiv1_sql_t *q, const char *fragment, int count, ...);
void ly_apiv1_sql_free (ly_apiv1_sql_t *q);

//  --------------------------------------------------------------------------
//  Query parameters and pagination

/*  The decoded value of a query parameter, NULL when absent. Borrowed. */
const char *ly_apiv1_query (const ly_apiv1_ctx_t *ctx, const char *name);

typedef struct {
    int limit;                          /* rows per page, 1..LY_APIV1_PAGE_MAX */
    char fetch [16];                    /* limit + 1, as text for LIMIT $n */
    char after_a [64];                  /* the cursor's first part, "" when no cursor */
    char after_b [64];                  /* its second part */
    bool has_cursor;
} ly_apiv1_page_t;

/*  Reads limit and cursor. kind names the list's order: 'c' (created_at usec, uuid),
    'e' (received_at usec, seq), 'd' (delivery_id). 0, or -1 with a 400 answered. */
int ly_apiv1_page (ly_apiv1_ctx_t *ctx, char kind, ly_apiv1_page_t *page);
/*  Answers {"data": [...], "next_cursor"} from a result fetched with LIMIT fetch; the
    rows carry a "_cursor" column ("usec.uuid", "usec.seq" or "id"). Each row goes
    through decorate (may be NULL) before it is added. */
void ly_apiv1_page_reply (ly_apiv1_ctx_t *ctx, const PGresult *res, char kind,
                          const ly_apiv1_page_t *page, void (*decorate) (json_t *row));

//  --------------------------------------------------------------------------
//  Field validation

typedef enum {
    LY_FIELD_TEXT,              /* a string (or null when nullable) */
    LY_FIELD_OBJECT,            /* a JSON object, stored as jsonb */
    LY_FIELD_BOOL               /* true or false */
} ly_apiv1_field_kind_t;

typedef struct {
    const char *name;           /* the JSON field, also the column */
    ly_apiv1_field_kind_t kind;
    size_t max_chars;           /* TEXT: the most characters; at least one unless allow_empty */
    bool allow_empty;           /* TEXT: "" is allowed */
    bool nullable;              /* null stores NULL */
    bool required;              /* must be present when creating */
    bool (*check) (const char *text);   /* TEXT: the format, may be NULL */
    const char *hint;           /* what check wants, for the message */
} ly_apiv1_field_t;

typedef struct {
    int count;
    const char *columns [LY_APIV1_MAX_VALUES];  /* borrowed from the field table */
    char *values [LY_APIV1_MAX_VALUES];         /* owned text, NULL: SQL NULL */
} ly_apiv1_values_t;

/*  Checks ctx->body against fields (unknown fields refused); when creating, required
    fields must be there. 0, or -1 with 422 answered naming the field. */
int ly_apiv1_fields (ly_apiv1_ctx_t *ctx, const ly_apiv1_field_t *fields, size_t count,
                     bool creating, ly_apiv1_values_t *out);
void ly_apiv1_values_free (ly_apiv1_values_t *values);
/*  "INSERT INTO table (cols) VALUES ($1, ...) RETURNING returning"; caller frees. */
char *ly_apiv1_insert_sql (const char *table, const ly_apiv1_values_t *values,
                           const char *returning);
/*  "UPDATE table SET col = $2, ... WHERE key = $1 RETURNING returning"; caller frees.
    The values are the parameters from $2 on. */
char *ly_apiv1_update_sql (const char *table, const char *key, const ly_apiv1_values_t *values,
                           const char *returning);
/*  Runs sql with id as $1 and values from $2 on (ly_apiv1_exec). */
PGresult *ly_apiv1_exec_values (ly_apiv1_ctx_t *ctx, const char *sql, const char *id,
                                const ly_apiv1_values_t *values);

//  --------------------------------------------------------------------------
//  Resources: one row of one table with an updated_at (the ETag), read, created,
//  updated (PATCH, If-Match) and deleted (If-Match) the same way.

typedef struct {
    const char *table;          /* "projects" */
    const char *key;            /* its id column, "project_id" */
    const char *what;           /* for messages: "project" */
    const char *columns;        /* the representation (with _etag), for SELECT and RETURNING */
    const char *location;       /* Location of a new one, "/v1/projects/%s"; may be NULL */
    const ly_apiv1_field_t *fields;     /* what a client may write */
    size_t field_count;
    /*  Checks that need more than one field or the database; 0, or -1 answered. */
    int (*validate) (ly_apiv1_ctx_t *ctx, const ly_apiv1_values_t *values);
    void (*decorate) (json_t *row);     /* adjusts a row before it is sent; may be NULL */
} ly_apiv1_resource_t;

/*  Locks the row FOR UPDATE and checks If-Match; false with 404 or 412 answered. */
bool ly_apiv1_lock (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id);
void ly_apiv1_resource_get (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id);
void ly_apiv1_resource_create (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r);
void ly_apiv1_resource_update (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id);
void ly_apiv1_resource_delete (ly_apiv1_ctx_t *ctx, const ly_apiv1_resource_t *r, const char *id);

/*  The cursor column of a list ordered by (ts DESC, id DESC). */
#define LY_APIV1_CURSOR_SQL(ts, id) \
    "(extract (epoch FROM " ts ") * 1000000)::bigint || '.' || " id " AS _cursor"

//  --------------------------------------------------------------------------
//  Formats

/*  Characters (UTF-8 code points) in text. */
size_t ly_apiv1_chars (const char *text);
/*  True when every byte of text is in the set and text has 1..max bytes. */
bool ly_apiv1_is_charset (const char *text, const char *set, size_t max);
/*  RFC 3339 date-time to microseconds since the epoch (ly_time_rfc3339), also when a
    query's unencoded '+' of the offset arrived as a space. 0 / -1. */
int ly_apiv1_rfc3339 (const char *text, int64_t *usec);
/*  base64url without padding; caller frees. */
char *ly_apiv1_base64url (const void *data, size_t len);
/*  Decodes base64url (no padding, no other characters) into a NUL-terminated buffer;
    caller frees; NULL when invalid. */
char *ly_apiv1_base64url_decode (const char *text, size_t *len);

//  --------------------------------------------------------------------------
//  Handlers (ly_apiv1_workspace.c, ly_apiv1_layers.c, ly_apiv1_content.c,
//  ly_apiv1_events.c); the route table is in ly_apiv1.c.

ly_apiv1_handler_fn ly_apiv1_org_get, ly_apiv1_org_update, ly_apiv1_me_get,
    ly_apiv1_roles_list,
    ly_apiv1_projects_list, ly_apiv1_project_create, ly_apiv1_project_get,
    ly_apiv1_project_update, ly_apiv1_project_delete,
    ly_apiv1_members_list, ly_apiv1_member_create, ly_apiv1_member_get,
    ly_apiv1_member_update, ly_apiv1_member_delete,
    ly_apiv1_tokens_list, ly_apiv1_token_create, ly_apiv1_token_delete,
    ly_apiv1_sdk_keys_list, ly_apiv1_sdk_key_create, ly_apiv1_sdk_key_delete,
    ly_apiv1_layers_list, ly_apiv1_layer_get, ly_apiv1_layer_put, ly_apiv1_layer_delete,
    ly_apiv1_ads_list, ly_apiv1_ad_create, ly_apiv1_ad_get, ly_apiv1_ad_update,
    ly_apiv1_ad_delete, ly_apiv1_project_ads_list, ly_apiv1_project_ad_link,
    ly_apiv1_project_ad_unlink,
    ly_apiv1_containers_list, ly_apiv1_container_get, ly_apiv1_container_media,
    ly_apiv1_events_list, ly_apiv1_deliveries_list, ly_apiv1_deliveries_replay;

/*  The permissions a role has, as a JSON array of names (for GET /v1/roles). */
json_t *ly_apiv1_role_permissions (int rank);

#endif
