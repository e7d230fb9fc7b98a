/*  ly_apiv1_content.c: ads content, its links to projects (project_ads_content), and the
    content containers the generation jobs make, with their media served from the media
    store (file:// only; a path must resolve inside the store's root). */
#include "ly_apiv1_private.h"
#include "ly_config.h"
#include "ly_msg.h"
#include "ly_jsonr.h"

//  A media answer travels in one frame between actors: what fits, with room for the
//  frame's other fields
#define S_MEDIA_MAX_BYTES (LY_MSG_MAX_FRAME - 64 * 1024)

//  --------------------------------------------------------------------------
//  Ads content

#define S_AD_COLUMNS \
    "a.ad_content_id, a.kind, a.title, a.body, a.media_url, a.metadata," \
    " to_jsonb (ARRAY (SELECT l.project_id FROM project_ads_content l" \
    "                   WHERE l.ad_content_id = a.ad_content_id ORDER BY l.project_id))" \
    " AS project_ids, a.created_at, a.updated_at, " LY_APIV1_ETAG_SQL ("a.updated_at")

static bool
s_is_kind (const char *text)
{
    return ly_apiv1_is_charset (text, "abcdefghijklmnopqrstuvwxyz_", 32);
}

static bool
s_is_media_url (const char *text)
{
    if (strncmp (text, "https://", 8) && strncmp (text, "http://", 7) && strncmp (text, "s3://", 5))
        return false;
    for (const unsigned char *p = (const unsigned char *) text; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

static const ly_apiv1_field_t s_ad_fields [] = {
    { "kind", LY_FIELD_TEXT, 32, false, false, true, s_is_kind, "1 to 32 of [a-z_] (image, video, text, ...)" },
    { "title", LY_FIELD_TEXT, 500, true, false, false, NULL, NULL },
    { "body", LY_FIELD_TEXT, 100000, true, false, false, NULL, NULL },
    { "media_url", LY_FIELD_TEXT, 2048, false, true, false, s_is_media_url,
      "an https://, http:// or s3:// URL without spaces" },
    { "metadata", LY_FIELD_OBJECT, 0, false, false, false, NULL, NULL },
};

static const ly_apiv1_resource_t s_ad = {
    "ads_content AS a", "ad_content_id", "ads content", S_AD_COLUMNS, "/v1/ads-content/%s",
    s_ad_fields, sizeof s_ad_fields / sizeof s_ad_fields [0], NULL, NULL
};

//  The project_id and kind filters of the ads content and container lists; each NULL
//  when absent. 0, or -1 with 400.
static int
s_list_filters (ly_apiv1_ctx_t *ctx, const char **project_id, const char **kind)
{
    *project_id = ly_apiv1_query (ctx, "project_id");
    *kind = ly_apiv1_query (ctx, "kind");
    if (*project_id && !ly_is_uuid (*project_id)) {
        ly_apiv1_error (ctx, 400, "bad_query", "project_id must be a UUID");
        return -1;
    }
    if (*kind && !s_is_kind (*kind)) {
        ly_apiv1_error (ctx, 400, "bad_query", "kind must be 1 to 32 of [a-z_]");
        return -1;
    }
    return 0;
}

void
ly_apiv1_ads_list (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page))
        return;
    const char *project_id, *kind;
    if (s_list_filters (ctx, &project_id, &kind))
        return;
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch, project_id, kind };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT " S_AD_COLUMNS ", " LY_APIV1_CURSOR_SQL ("a.created_at", "a.ad_content_id")
        "  FROM ads_content a"
        " WHERE ($1::bigint IS NULL"
        "        OR (a.created_at, a.ad_content_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        "   AND ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM project_ads_content l"
        "                                     WHERE l.ad_content_id = a.ad_content_id"
        "                                       AND l.project_id = $4))"
        "   AND ($5::text IS NULL OR a.kind = $5)"
        " ORDER BY a.created_at DESC, a.ad_content_id DESC LIMIT $3", 5, params);
    if (res)
        ly_apiv1_page_reply (ctx, res, 'c', &page, NULL);
    PQclear (res);
}

void
ly_apiv1_ad_create (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_create (ctx, &s_ad);
}

void
ly_apiv1_ad_get (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_get (ctx, &s_ad, ctx->params [0]);
}

void
ly_apiv1_ad_update (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_update (ctx, &s_ad, ctx->params [0]);
}

void
ly_apiv1_ad_delete (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_delete (ctx, &s_ad, ctx->params [0]);
}

//  --------------------------------------------------------------------------
//  Links between projects and ads content. Both ends are looked up under the tenant
//  first, so another tenant's id is 404 like a missing one; the composite foreign keys
//  (org_id, ...) would refuse a cross-tenant link anyway.

void
ly_apiv1_project_ads_list (ly_apiv1_ctx_t *ctx)
{
    const char *project_id = ctx->params [0];
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page) || !ly_apiv1_project_exists (ctx, project_id))
        return;
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch, project_id };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT " S_AD_COLUMNS ", " LY_APIV1_CURSOR_SQL ("a.created_at", "a.ad_content_id")
        "  FROM ads_content a JOIN project_ads_content p ON p.ad_content_id = a.ad_content_id"
        " WHERE p.project_id = $4"
        "   AND ($1::bigint IS NULL"
        "        OR (a.created_at, a.ad_content_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        " ORDER BY a.created_at DESC, a.ad_content_id DESC LIMIT $3", 4, params);
    if (res)
        ly_apiv1_page_reply (ctx, res, 'c', &page, NULL);
    PQclear (res);
}

static bool
s_ad_exists (ly_apiv1_ctx_t *ctx, const char *ad_content_id)
{
    const char *params [] = { ad_content_id };
    PGresult *res = ly_apiv1_exec (ctx, "SELECT 1 FROM ads_content WHERE ad_content_id = $1",
                                   1, params);
    if (!res)
        return false;
    bool found = PQntuples (res) == 1;
    PQclear (res);
    if (!found)
        ly_apiv1_error (ctx, 404, "not_found", "no such ads content");
    return found;
}

void
ly_apiv1_project_ad_link (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->params [0], ctx->params [1] };
    if (!ly_apiv1_project_exists (ctx, params [0]) || !s_ad_exists (ctx, params [1]))
        return;
    PGresult *res = ly_apiv1_exec (ctx,
        "INSERT INTO project_ads_content (project_id, ad_content_id) VALUES ($1, $2)"
        " ON CONFLICT (project_id, ad_content_id) DO NOTHING"
        " RETURNING project_id, ad_content_id, created_at", 2, params);
    if (!res)
        return;
    bool created = PQntuples (res) == 1;
    if (!created) {
        PQclear (res);
        res = ly_apiv1_exec (ctx,
            "SELECT project_id, ad_content_id, created_at FROM project_ads_content"
            " WHERE project_id = $1 AND ad_content_id = $2", 2, params);
        if (!res)
            return;
    }
    if (PQntuples (res) == 1)
        ly_apiv1_reply (ctx, created? 201: 200, ly_apiv1_row (res, 0));
    else
        ly_apiv1_error (ctx, 409, "conflict", "the link changed meanwhile; retry");
    PQclear (res);
}

void
ly_apiv1_project_ad_unlink (ly_apiv1_ctx_t *ctx)
{
    const char *params [] = { ctx->params [0], ctx->params [1] };
    PGresult *res = ly_apiv1_exec (ctx,
        "DELETE FROM project_ads_content WHERE project_id = $1 AND ad_content_id = $2"
        " RETURNING 1", 2, params);
    if (!res)
        return;
    if (PQntuples (res) == 1)
        ly_apiv1_no_content (ctx);
    else
        ly_apiv1_error (ctx, 404, "not_found", "this ads content is not linked to the project");
    PQclear (res);
}

//  --------------------------------------------------------------------------
//  Content containers

#define S_CONTAINER_COLUMNS \
    "container_id, project_id, job_id, kind, title, body, media, metadata, created_at," \
    " updated_at, " LY_APIV1_ETAG_SQL ("updated_at")

//  The media store's URLs stay inside: each item gets its index and download path.
static void
s_container_decorate (json_t *row)
{
    const char *id = json_string_value (json_object_get (row, "container_id"));
    json_t *media = json_object_get (row, "media");
    size_t index;
    json_t *item;
    json_array_foreach (media, index, item) {
        if (!json_is_object (item)) {
            //  Not the shape the content worker writes (a bare URL string, say): shown
            //  as an item with nothing but its index, never the store's URL
            item = json_object ();
            json_array_set_new (media, index, item);
        }
        json_object_del (item, "url");
        json_object_set_new (item, "index", json_integer ((json_int_t) index));
        char *download = zsys_sprintf ("/v1/content/containers/%s/media?index=%zu", id? id: "", index);
        json_object_set_new (item, "download", json_string (download));
        zstr_free (&download);
    }
}

void
ly_apiv1_containers_list (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_page_t page;
    if (ly_apiv1_page (ctx, 'c', &page))
        return;
    const char *project_id, *kind;
    if (s_list_filters (ctx, &project_id, &kind))
        return;
    const char *params [] = { page.has_cursor? page.after_a: NULL,
                              page.has_cursor? page.after_b: NULL, page.fetch, project_id, kind };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT " S_CONTAINER_COLUMNS ", " LY_APIV1_CURSOR_SQL ("created_at", "container_id")
        "  FROM content_containers"
        " WHERE ($1::bigint IS NULL"
        "        OR (created_at, container_id) < (" LY_APIV1_USEC_SQL ("$1") ", $2::uuid))"
        "   AND ($4::uuid IS NULL OR project_id = $4)"
        "   AND ($5::text IS NULL OR kind = $5)"
        " ORDER BY created_at DESC, container_id DESC LIMIT $3", 5, params);
    if (res)
        ly_apiv1_page_reply (ctx, res, 'c', &page, s_container_decorate);
    PQclear (res);
}

static const ly_apiv1_resource_t s_container = {
    "content_containers", "container_id", "content container", S_CONTAINER_COLUMNS, NULL,
    NULL, 0, NULL, s_container_decorate
};

void
ly_apiv1_container_get (ly_apiv1_ctx_t *ctx)
{
    ly_apiv1_resource_get (ctx, &s_container, ctx->params [0]);
}

static bool
s_is_media_type (const char *text)
{
    static const char token [] = "abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-";
    const char *slash = text? strchr (text, '/'): NULL;
    if (!slash || slash == text || strlen (text) > 100)
        return false;
    size_t type = (size_t) (slash - text);
    return strspn (text, token) == type && ly_apiv1_is_charset (slash + 1, token, 100);
}

//  A stored content type the media route answers with: an image, video or audio type
//  (not SVG, which may hold script). Anything else, HTML say, goes out as
//  application/octet-stream, which a browser downloads rather than renders.
static bool
s_servable_type (const char *type)
{
    if (!s_is_media_type (type) || strncmp (type, "image/svg", 9) == 0)
        return false;
    return strncmp (type, "image/", 6) == 0 || strncmp (type, "video/", 6) == 0
        || strncmp (type, "audio/", 6) == 0;
}

//  The local path of a file:// URL (RFC 8089: "file:///abs/path" or
//  "file://localhost/abs/path", percent-escapes decoded) into out; false when it is
//  none (another host, a relative path, a bad or NUL escape).
static bool
s_file_path (const char *url, char *out, size_t size)
{
    if (strncmp (url, "file://", 7))
        return false;
    const char *path = url + 7;
    if (strncasecmp (path, "localhost/", 10) == 0)
        path += 9;
    if (*path != '/')
        return false;
    size_t used = 0;
    for (const char *c = path; *c; c++) {
        char byte = *c;
        if (byte == '%') {
            if (!isxdigit ((unsigned char) c [1]) || !isxdigit ((unsigned char) c [2]))
                return false;
            char hex [3] = { c [1], c [2], 0 };
            byte = (char) strtol (hex, NULL, 16);
            if (byte == 0)
                return false;
            c += 2;
        }
        if (used + 1 >= size)
            return false;
        out [used++] = byte;
    }
    out [used] = 0;
    return true;
}

//  True when path is below the directory root (both canonical)
static bool
s_inside (const char *path, const char *root)
{
    size_t len = strlen (root);
    return strncmp (path, root, len) == 0 && path [len] == '/';
}

//  Reads the file at url (file://...) when it resolves inside the media root. 0, or -1
//  with the answer set.
static int
s_read_media (ly_apiv1_ctx_t *ctx, const char *url, char **data, size_t *size)
{
    const char *root_url = ly_config.media_url;
    if (!root_url || strncmp (root_url, "file://", 7) || strncmp (url, "file://", 7)) {
        ly_apiv1_error (ctx, 501, "not_implemented",
                        "media downloads are served from a file:// media store only");
        return -1;
    }
    char root_path [PATH_MAX], file_path [PATH_MAX], root [PATH_MAX], path [PATH_MAX];
    char opened [PATH_MAX];
    int fd = -1;
    struct stat st;
    bool found = s_file_path (root_url, root_path, sizeof root_path)
              && s_file_path (url, file_path, sizeof file_path)
              && realpath (root_path, root) && realpath (file_path, path) && s_inside (path, root);
    if (found) {
        //  Not blocking (a FIFO would hold the actor), and judged by what was opened:
        //  a directory swapped for a symbolic link since realpath looked is followed by
        //  open, but the descriptor's own path tells
        fd = open (path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        char link [64];
        snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t len = fd == -1? -1: readlink (link, opened, sizeof opened - 1);
        if (len > 0)
            opened [len] = 0;
        found = len > 0 && s_inside (opened, root) && fstat (fd, &st) == 0 && S_ISREG (st.st_mode);
    }
    if (!found) {
        if (fd != -1)
            close (fd);
        ly_apiv1_error (ctx, 404, "not_found", "the media file is not in the media store");
        return -1;
    }
    if (st.st_size > S_MEDIA_MAX_BYTES) {
        close (fd);
        ly_apiv1_error (ctx, 413, "too_large", "media over %d KiB is not served through the "
                        "API: fetch it from the media store", S_MEDIA_MAX_BYTES / 1024);
        return -1;
    }
    size_t want = (size_t) st.st_size;
    char *buffer = (char *) malloc (want + 1);
    size_t got = 0;
    while (buffer && got < want) {
        ssize_t n = read (fd, buffer + got, want - got);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    close (fd);
    if (!buffer || got != want) {
        free (buffer);
        ly_apiv1_error (ctx, 503, "unavailable", "the media file changed while it was read; "
                        "retry");
        return -1;
    }
    *data = buffer;
    *size = got;
    return 0;
}

void
ly_apiv1_container_media (ly_apiv1_ctx_t *ctx)
{
    const char *index_text = ly_apiv1_query (ctx, "index");
    if (index_text && !ly_apiv1_is_charset (index_text, "0123456789", 4)) {
        ly_apiv1_error (ctx, 400, "bad_query", "index must be an integer from 0 to 9999");
        return;
    }
    int index = index_text? atoi (index_text): 0;
    const char *params [] = { ctx->params [0] };
    PGresult *res = ly_apiv1_exec (ctx,
        "SELECT media FROM content_containers WHERE container_id = $1", 1, params);
    if (!res)
        return;
    json_t *media = PQntuples (res) == 1? ly_jsonr_load (PQgetvalue (res, 0, 0),
                                                          strlen (PQgetvalue (res, 0, 0)), 0)
                                        : NULL;
    bool found = PQntuples (res) == 1;
    PQclear (res);
    json_t *item = json_array_get (media, (size_t) index);
    const char *url = json_string_value (json_object_get (item, "url"));
    const char *type = json_string_value (json_object_get (item, "content_type"));
    char *data = NULL;
    size_t size = 0;
    if (!found)
        ly_apiv1_error (ctx, 404, "not_found", "no such content container");
    else
    if (!url)
        ly_apiv1_error (ctx, 404, "not_found", "the container has no media at this index");
    else
    if (s_read_media (ctx, url, &data, &size) == 0) {
        ly_api_response_reset (ctx->resp);
        ctx->resp->status = 200;
        ctx->resp->body = data;
        ctx->resp->body_len = size;
        ctx->resp->content_type = strdup (s_servable_type (type)? type: "application/octet-stream");
    }
    json_decref (media);
}
