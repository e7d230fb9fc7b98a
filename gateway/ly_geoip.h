/*  ly_geoip.h: country and first subdivision of an IP address, from a MaxMind .mmdb
    (libmaxminddb). IPv4, IPv6 and IPv4-mapped IPv6 addresses. */
#ifndef LY_GEOIP_H
#define LY_GEOIP_H

#include "ly_prelude.h"

typedef struct _ly_geoip_t ly_geoip_t;

/*  Opens the database; NULL on failure with the reason in err. Caller owns. */
ly_geoip_t *ly_geoip_new (const char *path, char *err, size_t errlen);
void ly_geoip_destroy (ly_geoip_t **self_p);
/*  Looks up ip (text). Writes the ISO country code ("DE", "" when unknown) and the first
    subdivision's ISO code ("BE", "" when unknown). 0 when found, -1 when the address is
    invalid or not in the database (both outputs ""). */
int ly_geoip_lookup (ly_geoip_t *self, const char *ip, char country [3], char region [16]);

#endif
