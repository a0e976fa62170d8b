/* Structured logs: one line per event, text (key=value) or JSON lines, each
 * request line carrying its request id. Lines are written whole under the
 * stdio lock so workers never interleave. */
#include "srv_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static FILE *out;
static bool owned;
static int level = CU_LOG_INFO;
static cu_srv_log_format fmt = CU_SRV_LOG_TEXT;

cu_rc cu_srv__log_open(const cu_srv_config *cfg)
{
    level = cfg->log_level;
    fmt = cfg->log_format;
    if (cfg->log_file != NULL) {
        if ((out = fopen(cfg->log_file, "a")) == NULL)
            return cu_err_set_sys(CU_E_IO, errno, "cannot open log file %s", cfg->log_file);
        owned = true;
        setvbuf(out, NULL, _IOLBF, 0);
    } else {
        out = stderr;
    }
    return CU_OK;
}

void cu_srv__log_close(void)
{
    if (owned && out != NULL)
        fclose(out);
    out = NULL;
    owned = false;
}

bool cu_srv__log_on(int l) { return l <= level; }

static void put_json_str(FILE *f, const char *s)
{
    putc_unlocked('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            putc_unlocked('\\', f);
            putc_unlocked(c, f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            putc_unlocked(c, f);
        }
    }
    putc_unlocked('"', f);
}

/* Text values are quoted when they hold spaces, quotes or '='. */
static void put_text_val(FILE *f, const char *s)
{
    if (*s != 0 && strpbrk(s, " \"=\t\n") == NULL) {
        for (; *s; s++)
            putc_unlocked((unsigned char)*s < 0x20 ? '?' : *s, f);
        return;
    }
    put_json_str(f, s);
}

static void put_num(FILE *f, double n)
{
    if (n == (double)(long long)n)
        fprintf(f, "%lld", (long long)n);
    else
        fprintf(f, "%.3f", n);
}

void cu_srv__log(int l, const char *msg, const cu_srv__lf *fl, size_t n)
{
    static const char *const NAMES[] = {"error", "warn", "info", "debug"};
    FILE *f = out ? out : stderr;
    struct timespec ts;
    struct tm tm;
    char when[40];
    if (l > level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);
    flockfile(f);
    if (fmt == CU_SRV_LOG_JSON) {
        fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", when, NAMES[l]);
        put_json_str(f, msg);
        for (size_t i = 0; i < n; i++) {
            putc_unlocked(',', f);
            put_json_str(f, fl[i].k);
            putc_unlocked(':', f);
            if (fl[i].s != NULL)
                put_json_str(f, fl[i].s);
            else
                put_num(f, fl[i].n);
        }
        fputs("}\n", f);
    } else {
        fprintf(f, "%s %s ", when, NAMES[l]);
        put_text_val(f, msg);
        for (size_t i = 0; i < n; i++) {
            fprintf(f, " %s=", fl[i].k);
            if (fl[i].s != NULL)
                put_text_val(f, fl[i].s);
            else
                put_num(f, fl[i].n);
        }
        putc_unlocked('\n', f);
    }
    funlockfile(f);
}
