/* pkcs11: URIs (RFC 7512) through p11-kit, and PIN sources. */
#include "internal.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The attributes p11-kit 0.24 knows (RFC 7512 and its own). */
static const char *const path_names[] = {
    "token", "manufacturer", "serial", "model", "library-manufacturer", "library-description",
    "library-version", "slot-description", "slot-manufacturer", "slot-id", "object", "id", "type",
    "object-type", NULL,
};
static const char *const query_names[] = {"module-name", "module-path", "pin-source", "pin-value", NULL};

static bool known_name(const char *const *names, const char *a, size_t n)
{
    for (; *names != NULL; names++)
        if (strlen(*names) == n && strncmp(*names, a, n) == 0)
            return true;
    return false;
}

/* p11-kit says what is wrong with a URI but not where: parse each
 * attribute alone and describe the first one it refuses or drops, as
 * "unknown attribute 'foo'", "invalid value 'bogus' for 'type'" or
 * "<why> at 'id=%1'" (a pin-value's value is never shown). */
static bool describe_bad_attribute(const char *uri, char *out, size_t len)
{
    const char *p = uri + 7;
    bool query = false, found = false;
    while (!found && *p != '\0') {
        size_t n = strcspn(p, query ? "&" : ";?");
        char buf[512];
        P11KitUri *one = n > 0 && n < sizeof buf - 9 ? p11_kit_uri_new() : NULL;
        if (one != NULL) {
            snprintf(buf, sizeof buf, "pkcs11:%s%.*s", query ? "?" : "", (int)n, p);
            int r = p11_kit_uri_parse(buf, P11_KIT_URI_FOR_ANY, one);
            if (r != P11_KIT_URI_OK || p11_kit_uri_any_unrecognized(one)) {
                size_t nl = strcspn(p, "=");
                nl = nl < n ? nl : n;
                bool secret = nl == 9 && strncmp(p, "pin-value", 9) == 0;
                const char *v = nl < n ? p + nl + 1 : "";
                int vl = nl < n ? (int)(n - nl - 1) : 0;
                const char *why = r != P11_KIT_URI_OK ? p11_kit_uri_message(r) : NULL;
                if (r != P11_KIT_URI_OK)
                    snprintf(out, len, "%s at '%.*s%s%.*s'", why ? why : "parse error", (int)nl, p,
                             nl < n ? "=" : "", secret ? 0 : vl > 60 ? 60 : vl, v);
                else if (!known_name(query ? query_names : path_names, p, nl))
                    snprintf(out, len, "unknown attribute '%.*s'", (int)(nl > 60 ? 60 : nl), p);
                else
                    snprintf(out, len, "invalid value '%.*s' for '%.*s'", secret ? 0 : vl > 60 ? 60 : vl, v,
                             (int)nl, p);
                found = true;
            }
            p11_kit_uri_free(one);
        }
        p += n;
        if (*p == '?')
            query = true;
        if (*p != '\0')
            p++;
    }
    return found;
}

cu_rc cu__uri_parse(const char *uri, P11KitUri **_u)
{
    P11KitUri *u = NULL;
    char where[256];
    if (uri == NULL || _u == NULL)
        return cu_err_set(CU_E_URI, "no pkcs11 URI given");
    if (strncmp(uri, "pkcs11:", 7) != 0)
        return cu_err_set(CU_E_URI, "'%.60s' is not a pkcs11: URI", uri);
    if ((u = p11_kit_uri_new()) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory parsing a URI");
    int r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u);
    if (r != P11_KIT_URI_OK) {
        const char *why = p11_kit_uri_message(r);
        p11_kit_uri_free(u);
        if (describe_bad_attribute(uri, where, sizeof where))
            return cu_err_set(CU_E_URI, "malformed pkcs11 URI: %s", where);
        return cu_err_set(CU_E_URI, "malformed pkcs11 URI: %s", why ? why : "parse error");
    }
    /* p11-kit drops attributes it does not know (and bad values such as
     * type=bogus) but flags them: such a URI would match everything. */
    if (p11_kit_uri_any_unrecognized(u)) {
        p11_kit_uri_free(u);
        if (describe_bad_attribute(uri, where, sizeof where))
            return cu_err_set(CU_E_URI, "pkcs11 URI: %s", where);
        return cu_err_set(CU_E_URI, "pkcs11 URI has an unknown attribute or an invalid value");
    }
    *_u = u;
    return CU_OK;
}

const char *cu__uri_for_message(const char *uri, char *buf, size_t len)
{
    /* Messages name the URI a caller gave, but never its pin-value. */
    size_t o = 0;
    const char *q = uri ? strchr(uri, '?') : NULL;
    if (uri == NULL)
        return "(any)";
    size_t head = q ? (size_t)(q - uri) : strlen(uri);
    o = snprintf(buf, len, "%.*s", (int)head, uri) < 0 ? 0 : head;
    if (o >= len)
        return buf;
    char sep = '?';
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        size_t n = strcspn(p, "&");
        if (strncmp(p, "pin-value=", 10) != 0 && n > 0 && o + n + 2 < len) {
            buf[o++] = sep;
            memcpy(buf + o, p, n);
            o += n;
            sep = '&';
        }
        p += n;
        if (*p == '&')
            p++;
    }
    buf[o < len ? o : len - 1] = '\0';
    return buf;
}

cu_rc cu__pin_from_source(const char *src, char **_pin)
{
    char buf[256];
    if (strncmp(src, "file://", 7) == 0)
        src += 7;
    else if (strncmp(src, "file:", 5) == 0)
        src += 5;
    if (*src != '/')
        return cu_err_set(CU_E_URI, "pin-source must be an absolute file path");
    FILE *f = fopen(src, "re");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot read the pin-source %s", src);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (n == 0)
        return cu_err_set(CU_E_PIN_MISSING, "the pin-source %s is empty", src);
    *_pin = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    return *_pin ? CU_OK : cu_err_set(CU_E_NOMEM, "out of memory");
}

cu_rc cu_uri_pin(const char *uri, char **_pin)
{
    P11KitUri *u = NULL;
    if (_pin == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_uri_pin: no output");
    *_pin = NULL;
    cu_rc rc = cu__uri_parse(uri, &u);
    if (rc != CU_OK)
        return rc;
    const char *v = p11_kit_uri_get_pin_value(u), *src = p11_kit_uri_get_pin_source(u);
    if (v != NULL) {
        if ((*_pin = strdup(v)) == NULL)
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
    } else if (src != NULL) {
        rc = cu__pin_from_source(src, _pin);
    }
    p11_kit_uri_free(u);
    return rc;
}

static void clear_if_nul_padded(unsigned char *field, size_t len)
{
    if (memchr(field, 0, len) != NULL)
        memset(field, 0, len); /* an all-zero field is absent from the URI */
}

void cu__uri_token_fields(CK_TOKEN_INFO *ti)
{
    memset(ti->utcTime, 0, sizeof ti->utcTime);
    clear_if_nul_padded(ti->label, sizeof ti->label);
    clear_if_nul_padded(ti->manufacturerID, sizeof ti->manufacturerID);
    clear_if_nul_padded(ti->model, sizeof ti->model);
    clear_if_nul_padded(ti->serialNumber, sizeof ti->serialNumber);
}

void cu__secret_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}
