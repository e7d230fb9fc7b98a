/*  ly_geoip.h: country and first subdivision of an IP address, from a MaxMind .mmdb
    (libmaxminddb), read into memory of our own. IPv4, IPv6 and IPv4-mapped IPv6
    addresses. */
#ifndef LY_GEOIP_H
#define LY_GEOIP_H

#include "ly_prelude.h"

typedef struct _ly_geoip_t ly_geoip_t;

/*  Opens the database; NULL on failure with the reason in err. Caller owns. */
ly_geoip_t *ly_geoip_new (const char *path, char *err, size_t errlen);
void ly_geoip_destroy (ly_geoip_t **self_p);
/*  Opens the database file again when another file took its place (a rename, as
    geoipupdate does) or it was rewritten in place, once it has not changed for a
    second (seen unchanged at two looks, or last modified a second ago or more).
    Looks at the file at most once a second; call it before lookups, from the thread
    that does them. 1 when it opened a new one, 0 when nothing changed, -1 when the new
    file could not be opened (warned once per such file, which is not read again until
    it changes; the old database stays in use). */
int ly_geoip_refresh (ly_geoip_t *self);
/*  Looks up ip (text). Writes the ISO country code ("DE", "" when unknown) and the first
    subdivision's ISO code ("BE", "" when unknown). 0 when found, -1 when the address is
    invalid or not in the database (both outputs ""). */
int ly_geoip_lookup (ly_geoip_t *self, const char *ip, char country [3], char region [16]);

#endif
