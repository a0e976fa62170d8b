/* Debug log: off unless CUSTOS_SOFT_DEBUG names "stderr" or a file to append
 * to. The module never prints otherwise; errors reach callers as CK_RV, and
 * this log says which object or file was at fault. PINs are never logged. */
#include "soft.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cs_log(const char *fmt, ...)
{
    const char *dst = getenv("CUSTOS_SOFT_DEBUG");
    if (dst == NULL || *dst == '\0' || strcmp(dst, "0") == 0)
        return;
    FILE *f = stderr;
    bool close_it = false;
    if (strcmp(dst, "stderr") != 0 && strcmp(dst, "1") != 0) {
        f = fopen(dst, "a");
        if (f == NULL)
            return;
        close_it = true;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(f, "custos-soft[%ld]: ", (long)getpid());
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    va_end(ap);
    if (close_it)
        fclose(f);
}
