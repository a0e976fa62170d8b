/* Files of the store. Writes are crash-safe: a record is written to a
 * temporary file in the same directory, fsync'd, renamed over the old one,
 * and the directory fsync'd, so a process killed at any point leaves either
 * the old record or the new one. Making or removing a token directory
 * fsyncs its parent the same way. Records are opened without following
 * symbolic links. Temporary files start with '.', which the directory scan
 * ignores. */
#include "soft.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static CK_RV errno_rv(int e)
{
    switch (e) {
    case ENOMEM: return CKR_HOST_MEMORY;
    case ENOSPC: case EDQUOT: return CKR_DEVICE_MEMORY;
    default: return CKR_DEVICE_ERROR;
    }
}

static CK_RV fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno_rv(errno);
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? CKR_OK : CKR_DEVICE_ERROR;
}

/* After a directory entry of `path` was made or removed: makes that last
 * through a crash, like the rename of a record. */
static CK_RV fsync_parent(const char *path)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return fsync_dir(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof parent)
        return CKR_DEVICE_ERROR;
    memcpy(parent, path, n);
    parent[n] = '\0';
    return fsync_dir(parent);
}

CK_RV cs_store_write(const char *dir, const char *name, const void *data, size_t len)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    unsigned char rnd[8];
    int fd = -1;
    CK_RV rv;

    if (cs_random(rnd, sizeof rnd) != CKR_OK)
        return CKR_FUNCTION_FAILED;
    if (snprintf(dst, sizeof dst, "%s/%s", dir, name) >= (int)sizeof dst ||
        snprintf(tmp, sizeof tmp, "%s/.tmp-%02x%02x%02x%02x%02x%02x%02x%02x", dir, rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]) >= (int)sizeof tmp)
        return CKR_DEVICE_ERROR;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rv = errno_rv(errno);
        cs_log("cannot create %s: %s", tmp, strerror(errno));
        return rv;
    }
    const unsigned char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rv = errno_rv(w < 0 ? errno : EIO);
            cs_log("cannot write %s: %s", tmp, strerror(errno));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        rv = errno_rv(errno);
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rv = errno_rv(errno);
        goto fail;
    }
    fd = -1;
    if (rename(tmp, dst) != 0) {
        rv = errno_rv(errno);
        cs_log("cannot rename %s to %s: %s", tmp, dst, strerror(errno));
        goto fail;
    }
    return fsync_dir(dir);
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rv;
}

CK_RV cs_store_read(const char *path, unsigned char **_data, size_t *_len, struct stat *_st)
{
    /* A record is a plain file of the store, never a link to elsewhere. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    unsigned char *buf = NULL;
    CK_RV rv = CKR_DEVICE_ERROR;

    if (fd < 0) {
        if (errno == ELOOP)
            cs_report("%s: a symbolic link, not a record; ignored", path);
        return errno == ENOENT ? CKR_OBJECT_HANDLE_INVALID : errno_rv(errno);
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto cleanup;
    if (st.st_size <= 0 || (size_t)st.st_size > CS_MAX_RECORD) {
        rv = CKR_DATA_LEN_RANGE;
        goto cleanup;
    }
    buf = malloc((size_t)st.st_size);
    if (buf == NULL) {
        rv = CKR_HOST_MEMORY;
        goto cleanup;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto cleanup;
        got += (size_t)r;
    }
    *_data = buf;
    *_len = got;
    if (_st)
        *_st = st;
    buf = NULL;
    rv = CKR_OK;
cleanup:
    free(buf);
    close(fd);
    return rv;
}

CK_RV cs_store_unlink(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return CKR_DEVICE_ERROR;
    if (unlink(path) != 0 && errno != ENOENT)
        return errno_rv(errno);
    return fsync_dir(dir);
}

CK_RV cs_store_lock(const char *dir, int *_fd)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/.lock", dir) >= (int)sizeof path)
        return CKR_DEVICE_ERROR;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != ELOOP) {
        /* A read-only store can still be read: lock with a read-only fd. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            cs_log("cannot open lock %s: %s", path, strerror(errno));
            return errno_rv(errno);
        }
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return CKR_DEVICE_ERROR;
        }
    }
    *_fd = fd;
    return CKR_OK;
}

void cs_store_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* drops the flock */
}

CK_RV cs_store_mkdir(const char *path)
{
    if (mkdir(path, 0700) != 0) {
        if (errno == EEXIST)
            return CKR_OK;
        cs_log("cannot create directory %s: %s", path, strerror(errno));
        return errno_rv(errno);
    }
    return fsync_parent(path);
}

CK_RV cs_store_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? CKR_OK : errno_rv(errno);
    struct dirent *e;
    CK_RV rv = CKR_OK;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            unlink(path) != 0)
            rv = CKR_DEVICE_ERROR;
    }
    closedir(d);
    if (rmdir(dir) != 0)
        rv = CKR_DEVICE_ERROR;
    else if (fsync_parent(dir) != CKR_OK)
        rv = CKR_DEVICE_ERROR;
    return rv;
}
