/*  ly_geoip.c: country and first subdivision of an IP address from a MaxMind .mmdb
    (GeoIP2 / GeoLite2 City or Country layout), with libmaxminddb. The database is read
    into memory of our own (an anonymous file, memory-mapped by libmaxminddb), so a
    file rewritten in place (cp, an editor) cannot change or cut it under a lookup; the
    map is read-only after opening, so lookups from several threads are safe
    (ly_geoip_refresh excepted). The file is watched: a new one put in its place, by a
    rename or rewritten, is opened and used from then on, once it stopped changing. The
    address is used for the lookup only: it is neither kept nor logged. */
#include "ly_geoip.h"
#include "ly_log.h"
#include <fcntl.h>
#include <maxminddb.h>
#include <sys/mman.h>
#include <sys/sendfile.h>

#define S_REFRESH_MSEC 1000         /* how often the file is looked at, at most */

struct _ly_geoip_t {
    MMDB_s mmdb;                //  the opened database, owned
    char *path;                 //  its file, owned
    struct stat opened;         //  the file as it was when opened
    struct stat seen;           //  the file as it was at the last look
    int64_t next_check;         //  monotonic msec of the next look at the file
    struct stat refused;        //  the last file that is no database, not tried
                                //  again (nor warned of) until it changes
    struct stat faulted;        //  the last file that could not be read: warned once
};

//  True when a and b are the same file, unchanged (its change time too: a copy that
//  keeps the old modification time, cp -p, still changes it).
static bool
s_same_file (const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size
        && a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
        && a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

//  Opens a copy of path, as it is in *as_is, into mmdb; -1 with the reason in err when
//  it could not be read (a passing fault: tried again at the next look), -2 when it is
//  no database libmaxminddb reads, 1 when the file changed while it was copied (it is
//  being written: try again later).
static int
s_open (const char *path, const struct stat *as_is, MMDB_s *mmdb, char *err, size_t errlen)
{
    const char *failed = NULL;
    int saved_errno = 0;
    int file = open (path, O_RDONLY | O_CLOEXEC);
    int copy = memfd_create ("layers-geoip", MFD_CLOEXEC);
    struct stat before, after;
    if (file < 0 || copy < 0 || fstat (file, &before))
        failed = file < 0? "open": copy < 0? "memfd_create": "fstat";
    else
    if (!S_ISREG (before.st_mode)) {
        failed = "not a file";
        errno = S_ISDIR (before.st_mode)? EISDIR: EINVAL;
    }
    else {
        off_t offset = 0;
        while (!failed && offset < before.st_size) {
            ssize_t sent = sendfile (copy, file, &offset, (size_t) (before.st_size - offset));
            if (sent < 0 && errno != EINTR)
                failed = "read";
            else
            if (sent == 0)
                break;                  //  cut short meanwhile: the size check says so
        }
        if (!failed && (fstat (file, &after) || !s_same_file (&before, &after)
                        || !s_same_file (&before, as_is) || offset != before.st_size)) {
            close (file);
            close (copy);
            return 1;
        }
    }
    if (failed) {
        saved_errno = errno;
        snprintf (err, errlen, "could not open geo-IP database \"%s\": %s: %s",
                  path, failed, strerror (saved_errno));
        goto fail;
    }
    char copy_path [64];
    snprintf (copy_path, sizeof copy_path, "/proc/self/fd/%d", copy);
    int rc = MMDB_open (copy_path, MMDB_MODE_MMAP, mmdb);
    if (rc == MMDB_SUCCESS) {
        close (file);
        close (copy);                   //  the map keeps the memory
        return 0;
    }
    int result = -2;                    //  the content: not read again until it changes
    //  Reopening the copy may fail for want of a descriptor (EMFILE): a passing fault
    if (rc == MMDB_IO_ERROR || rc == MMDB_OUT_OF_MEMORY_ERROR || rc == MMDB_FILE_OPEN_ERROR) {
        snprintf (err, errlen, "could not open geo-IP database \"%s\": %s: %s",
                  path, MMDB_strerror (rc), strerror (errno));
        result = -1;
    }
    else
        snprintf (err, errlen, "could not open geo-IP database \"%s\": %s",
                  path, MMDB_strerror (rc));
    close (file);
    close (copy);
    return result;
fail:
    if (file >= 0)
        close (file);
    if (copy >= 0)
        close (copy);
    return -1;
}

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
    if (stat (path, &self->opened)) {
        snprintf (err, errlen, "could not open geo-IP database \"%s\": %s",
                  path, strerror (errno));
        free (self);
        return NULL;
    }
    if (s_open (path, &self->opened, &self->mmdb, err, errlen)) {
        free (self);
        return NULL;
    }
    self->seen = self->opened;
    self->path = strdup (path);
    self->next_check = ly_mono_msec () + S_REFRESH_MSEC;
    return self;
}

void
ly_geoip_destroy (ly_geoip_t **self_p)
{
    if (self_p && *self_p) {
        MMDB_close (&(*self_p)->mmdb);
        free ((*self_p)->path);
        free (*self_p);
        *self_p = NULL;
    }
}

int
ly_geoip_refresh (ly_geoip_t *self)
{
    int64_t now = ly_mono_msec ();
    if (!self || now < self->next_check)
        return 0;
    self->next_check = now + S_REFRESH_MSEC;
    struct stat current;
    if (stat (self->path, &current))
        return 0;                   //  gone for a moment while it is replaced: keep ours
    if (s_same_file (&current, &self->opened))
        return 0;
    if (s_same_file (&current, &self->refused))
        return -1;                  //  the file we could not open, as it was: keep ours
    //  Settled: unchanged since the last look, or last written a second ago or more
    //  (a new file put in place long after a quiet spell is used by the next request)
    struct timespec wall;
    clock_gettime (CLOCK_REALTIME, &wall);
    bool settled = s_same_file (&current, &self->seen)
                || wall.tv_sec - current.st_mtim.tv_sec >= 2
                || (wall.tv_sec - current.st_mtim.tv_sec == 1
                    && wall.tv_nsec >= current.st_mtim.tv_nsec);
    self->seen = current;
    if (!settled)
        return 0;                   //  changed a moment ago: may be being written
    MMDB_s fresh;
    char err [512] = "";
    int rc = s_open (self->path, &current, &fresh, err, sizeof err);
    if (rc == 1) {
        memset (&self->seen, 0, sizeof self->seen);
        return 0;                   //  still being written: look again later
    }
    if (rc) {
        if (rc == -2 || !s_same_file (&current, &self->faulted))
            ly_warning ("ingest", "%s; still using the one opened before", err);
        if (rc == -2)
            self->refused = current;
        else
            self->faulted = current;    //  warned once, tried again at each look
        return -1;
    }
    MMDB_close (&self->mmdb);
    self->mmdb = fresh;
    self->opened = current;
    ly_info ("ingest", "opened the new geo-IP database \"%s\"", self->path);
    return 1;
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
