/*  ly_geoip.c: country and first subdivision of an IP address from a MaxMind .mmdb
    (GeoIP2 / GeoLite2 City or Country layout), with libmaxminddb. The database is
    memory-mapped and read-only after opening, so lookups from several threads are safe.
    The address is used for the lookup only: it is neither kept nor logged. */
#include "ly_geoip.h"
#include <maxminddb.h>

struct _ly_geoip_t {
    MMDB_s mmdb;                //  the opened database, owned
};

ly_geoip_t *
ly_geoip_new (const char *path, char *err, size_t errlen)
{
    if (!path || !*path) {
        snprintf (err, errlen, "no geo-IP database given");
        return NULL;
    }
    ly_geoip_t *self = (ly_geoip_t *) calloc (1, sizeof (ly_geoip_t));
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    int rc = MMDB_open (path, MMDB_MODE_MMAP, &self->mmdb);
    if (rc != MMDB_SUCCESS) {
        if (rc == MMDB_IO_ERROR)
            snprintf (err, errlen, "could not open geo-IP database \"%s\": %s: %s",
                      path, MMDB_strerror (rc), strerror (errno));
        else
            snprintf (err, errlen, "could not open geo-IP database \"%s\": %s",
                      path, MMDB_strerror (rc));
        free (self);
        return NULL;
    }
    return self;
}

void
ly_geoip_destroy (ly_geoip_t **self_p)
{
    if (self_p && *self_p) {
        MMDB_close (&(*self_p)->mmdb);
        free (*self_p);
        *self_p = NULL;
    }
}

//  Copies the utf8_string at path under entry into out when it is 1..size-1 upper-case
//  ASCII letters or digits (ISO 3166 codes); else leaves out "". Variadic path as
//  MMDB_get_value takes it, NULL-terminated.
static void
s_get_code (MMDB_entry_s *entry, char *out, size_t size, ...)
{
    out [0] = 0;
    MMDB_entry_data_s data;
    va_list path;
    va_start (path, size);
    int rc = MMDB_vget_value (entry, &data, path);
    va_end (path);
    if (rc != MMDB_SUCCESS || !data.has_data || data.type != MMDB_DATA_TYPE_UTF8_STRING
    ||  data.data_size == 0 || data.data_size >= size)
        return;
    for (uint32_t i = 0; i < data.data_size; i++) {
        char c = data.utf8_string [i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return;
    }
    memcpy (out, data.utf8_string, data.data_size);
    out [data.data_size] = 0;
}

int
ly_geoip_lookup (ly_geoip_t *self, const char *ip, char country [3], char region [16])
{
    country [0] = 0;
    region [0] = 0;
    if (!self || !ip || !*ip)
        return -1;
    int gai_error = 0, mmdb_error = MMDB_SUCCESS;
    MMDB_lookup_result_s result = MMDB_lookup_string (&self->mmdb, ip, &gai_error, &mmdb_error);
    if (gai_error || mmdb_error != MMDB_SUCCESS || !result.found_entry)
        return -1;
    s_get_code (&result.entry, country, 3, "country", "iso_code", NULL);
    if (strlen (country) != 2 || isdigit ((unsigned char) country [0])
    ||  isdigit ((unsigned char) country [1]))
        country [0] = 0;        //  alpha-2 only: letters
    s_get_code (&result.entry, region, 16, "subdivisions", "0", "iso_code", NULL);
    return 0;
}
