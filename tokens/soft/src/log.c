/* Logging. Two kinds:
 *  - cs_log: the debug log, off unless CUSTOS_SOFT_DEBUG names "stderr" or a
 *    file to append to;
 *  - cs_report: integrity failures (a corrupt, truncated, edited or swapped
 *    record), always reported, since a key that silently vanishes is worse
 *    than one that fails loudly. They go to syslog (LOG_AUTHPRIV, warning),
 *    or to the file CUSTOS_SOFT_INTEGRITY_LOG names, and to the debug log.
 * The module never prints to the application's stdout or stderr unasked;
 * errors reach callers as CK_RV, and these logs say which object or file was
 * at fault. PINs are never logged. */
#include "soft.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static void emit(const char *dst, const char *msg)
{
    FILE *f = stderr;
    bool close_it = false;
    if (strcmp(dst, "stderr") != 0 && strcmp(dst, "1") != 0) {
        f = fopen(dst, "a");
        if (f == NULL)
            return;
        close_it = true;
    }
    fprintf(f, "custos-soft[%ld]: %s\n", (long)getpid(), msg);
    if (close_it)
        fclose(f);
    else
        fflush(f);
}

static const char *debug_dst(void)
{
    const char *dst = getenv("CUSTOS_SOFT_DEBUG");
    if (dst == NULL || *dst == '\0' || strcmp(dst, "0") == 0)
        return NULL;
    return dst;
}

void cs_log(const char *fmt, ...)
{
    const char *dst = debug_dst();
    if (dst == NULL)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(dst, msg);
}

/* Each distinct failure is reported once per C_Initialize: the store is
 * re-scanned often, and a broken record must not flood syslog. */
#define SEEN_MAX 32
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long seen[SEEN_MAX];
static size_t nseen, seen_next;

void cs_report_reset(void)
{
    pthread_mutex_lock(&seen_lock);
    nseen = seen_next = 0;
    pthread_mutex_unlock(&seen_lock);
}

static bool first_time(const char *msg)
{
    unsigned long h = 5381;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
        h = h * 33 + *p;
    bool fresh = true;
    pthread_mutex_lock(&seen_lock);
    for (size_t i = 0; i < nseen && fresh; i++)
        fresh = seen[i] != h;
    if (fresh) {
        seen[seen_next] = h;
        seen_next = (seen_next + 1) % SEEN_MAX;
        if (nseen < SEEN_MAX)
            nseen++;
    }
    pthread_mutex_unlock(&seen_lock);
    return fresh;
}

void cs_report(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *dst = debug_dst();
    if (dst != NULL)
        emit(dst, msg);
    if (!first_time(msg))
        return;
    const char *file = getenv("CUSTOS_SOFT_INTEGRITY_LOG");
    if (file != NULL && *file != '\0') {
        if (dst == NULL || strcmp(dst, file) != 0)
            emit(file, msg);
        return;
    }
    /* No openlog(): the ident and facility of the application that loaded
     * us are not ours to change; the message names the module instead. */
    syslog(LOG_AUTHPRIV | LOG_WARNING, "custos-soft: %s", msg);
}
