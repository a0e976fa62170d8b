/* Small encoders and clocks shared by the engine. */
#include "prov_int.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

cu_rc cu_prov__b64_decode(const char *s, size_t len, uint8_t **out, size_t *outlen)
{
    cu_prov__return_val_if_fail(s != NULL && out != NULL && outlen != NULL, CU_E_INVALID_ARG);
    *out = NULL;
    *outlen = 0;
    if (len == 0 || len % 4 != 0)
        return cu_err_set(CU_E_INVALID_ARG, "not base64: length %zu is not a positive multiple of 4", len);
    size_t pad = 0;
    if (s[len - 1] == '=')
        pad++;
    if (s[len - 2] == '=')
        pad++;
    uint8_t *buf = OPENSSL_malloc(len / 4 * 3 + 1);
    if (buf == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)s[i + j];
            bool tail = i + 4 == len && j >= 4 - (int)pad;
            v[j] = tail ? 0 : b64_val(c);
            if (v[j] < 0 || (!tail && c == '=')) {
                OPENSSL_clear_free(buf, len / 4 * 3 + 1);
                return cu_err_set(CU_E_INVALID_ARG, "not base64: bad character at offset %zu", i + j);
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        buf[o++] = (uint8_t)(w >> 16);
        buf[o++] = (uint8_t)(w >> 8);
        buf[o++] = (uint8_t)w;
        /* Canonical form only: unused bits of the last group must be zero. */
        if (i + 4 == len && ((pad == 1 && (v[2] & 0x3)) || (pad == 2 && (v[1] & 0xf)))) {
            OPENSSL_clear_free(buf, len / 4 * 3 + 1);
            return cu_err_set(CU_E_INVALID_ARG, "not base64: non-canonical padding");
        }
    }
    o -= pad;
    buf[o] = 0;
    *out = buf;
    *outlen = o;
    return CU_OK;
}

char *cu_prov__b64_encode(const uint8_t *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            w |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len)
            w |= data[i + 2];
        out[o++] = tab[w >> 18 & 63];
        out[o++] = tab[w >> 12 & 63];
        out[o++] = i + 1 < len ? tab[w >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tab[w & 63] : '=';
    }
    out[o] = 0;
    return out;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

cu_rc cu_prov__pct_decode(const char *s, size_t len, char **out)
{
    cu_prov__return_val_if_fail(s != NULL && out != NULL, CU_E_INVALID_ARG);
    *out = NULL;
    char *buf = malloc(len + 1);
    if (buf == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len) {
                free(buf);
                return cu_err_set(CU_E_INVALID_ARG, "truncated percent-escape at offset %zu", i);
            }
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(buf);
                return cu_err_set(CU_E_INVALID_ARG, "bad percent-escape at offset %zu", i);
            }
            buf[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (s[i] == '\0') {
            free(buf);
            return cu_err_set(CU_E_INVALID_ARG, "NUL byte at offset %zu", i);
        } else {
            buf[o++] = s[i];
        }
    }
    buf[o] = 0;
    *out = buf;
    return CU_OK;
}

void cu_prov__hex(const uint8_t *data, size_t len, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = d[data[i] >> 4];
        out[2 * i + 1] = d[data[i] & 15];
    }
    out[2 * len] = 0;
}

void cu_prov__timestamp(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char date[24];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%.19s.%07ldZ", date, (long)(ts.tv_nsec / 100) % 10000000);
}

cu_rc cu_prov__timestamp_parse(const char *s, time_t *out)
{
    cu_prov__return_val_if_fail(s != NULL && out != NULL, CU_E_INVALID_ARG);
    struct tm tm = {0};
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 || n != 19)
        return cu_err_set(CU_E_INVALID_ARG, "not a UTC timestamp: '%.40s'", s);
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++)
            digits++;
        if (digits < 1 || digits > 7)
            return cu_err_set(CU_E_INVALID_ARG, "not a UTC timestamp: '%.40s'", s);
    }
    if (strcmp(p, "Z") != 0)
        return cu_err_set(CU_E_INVALID_ARG, "not a UTC timestamp (need a final Z): '%.40s'", s);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return CU_OK;
}

void cu_prov__etag_new(char out[48])
{
    uint8_t r[16];
    char h[33];
    if (RAND_bytes(r, sizeof r) != 1) {
        /* Fall back to time: an etag needs uniqueness, not secrecy. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(r, &ts, sizeof ts < sizeof r ? sizeof ts : sizeof r);
    }
    cu_prov__hex(r, sizeof r, h);
    snprintf(out, 48, "\"%.8s-%.4s-%.4s-%.4s-%.12s\"", h, h + 8, h + 12, h + 16, h + 20);
}

cu_rc cu_prov__refuse(cu_rc rc, char *buf, size_t len, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (buf != NULL && len > 0)
        snprintf(buf, len, "%s", tmp);
    return cu_err_set(rc, "%s", tmp);
}

bool cu_prov__ieq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
    return *a == *b;
}

char *cu_prov__lower_dup(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        o[i] = (char)tolower((unsigned char)s[i]);
    return o;
}

bool cu_prov__regid_valid(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '.' && c != '_' && c != ':')
            return false;
    }
    if (!isalnum((unsigned char)s[0]))
        return false;
    unsigned char last = (unsigned char)s[n - 1];
    return isalnum(last) || last == '-';
}
