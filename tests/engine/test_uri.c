/* The provider's own URI handling (engine/prov/provider.c): attribute and
 * query look-up with percent-decoding, and the removal of pin-value that
 * keeps PINs out of messages. Table-driven, plus a burst of random and
 * mutated inputs for the sanitizers. Links the provider's sources directly. */
#include "cu_test.h"

#include "provider.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

typedef struct attr_case {
    const char *uri, *attr;
    int query;           /* look in the query, not the path */
    const char *want;    /* NULL: absent or malformed */
    size_t want_len;
} attr_case;

static const attr_case attr_cases[] = {
    { "pkcs11:token=hsm1;object=ec1", "object", 0, "ec1", 3 },
    { "pkcs11:token=hsm1;object=ec1", "token", 0, "hsm1", 4 },
    { "pkcs11:token=hsm1;object=ec1", "id", 0, NULL, 0 },
    { "pkcs11:id=%01%02%ff;object=a", "id", 0, "\x01\x02\xff", 3 },
    { "pkcs11:object=a%20b?pin-value=12", "object", 0, "a b", 3 },
    { "pkcs11:object=a%2", "object", 0, NULL, 0 },       /* truncated escape */
    { "pkcs11:object=a%zz", "object", 0, NULL, 0 },      /* not hex */
    { "pkcs11:object=", "object", 0, "", 0 },            /* empty but present */
    { "pkcs11:objects=x;object=y", "object", 0, "y", 1 }, /* prefix of a longer name */
    { "pkcs11:id=%00%00", "id", 0, "\0\0", 2 },
    { "PKCS11:object=x", "object", 0, "x", 1 },
    { "file:object=x", "object", 0, NULL, 0 },
    { "pkcs11:object=x?object=y", "object", 0, "x", 1 },  /* path only */
    { "pkcs11:token=t?module-path=%2Fusr%2Flib%2Fm.so&pin-source=f", "module-path", 1, "/usr/lib/m.so", 13 },
    { "pkcs11:token=t?module-path=%2Fusr&pin-value=1%32", "pin-value", 1, "12", 2 },
    { "pkcs11:token=t?pin-value=", "pin-value", 1, "", 0 },
    { "pkcs11:token=t", "module-path", 1, NULL, 0 },
    { "pkcs11:token=t?", "module-path", 1, NULL, 0 },
    { NULL, NULL, 0, NULL, 0 },
};

static void test_attrs(void)
{
    for (const attr_case *c = attr_cases; c->uri != NULL; c++) {
        char *v = NULL;
        size_t l = 0;
        int got = c->query ? cu_prov_uri_query(c->uri, c->attr, &v, &l) : cu_prov_uri_attr(c->uri, c->attr, &v, &l);
        if (c->want == NULL) {
            CU_ASSERT(got == 0);
            if (got)
                fprintf(stderr, "%s %s: unexpected \"%s\"\n", c->uri, c->attr, v);
        } else {
            CU_ASSERT(got == 1 && l == c->want_len && memcmp(v, c->want, l) == 0 && v[l] == '\0');
            if (got != 1)
                fprintf(stderr, "%s %s: missing\n", c->uri, c->attr);
        }
        OPENSSL_free(v);
    }
}

typedef struct pin_case {
    const char *uri, *clean, *pin;
} pin_case;

static const pin_case pin_cases[] = {
    { "pkcs11:token=t;object=o", "pkcs11:token=t;object=o", NULL },
    { "pkcs11:token=t?pin-value=1234", "pkcs11:token=t", "1234" },
    { "pkcs11:token=t?module-path=%2Fm.so&pin-value=12%33", "pkcs11:token=t?module-path=%2Fm.so", "123" },
    { "pkcs11:token=t?pin-value=9&module-path=%2Fm.so", "pkcs11:token=t?module-path=%2Fm.so", "9" },
    { "pkcs11:token=t?a=1&pin-value=9&b=2", "pkcs11:token=t?a=1&b=2", "9" },
    { "pkcs11:token=t?pin-source=f&&pin-value=x", "pkcs11:token=t?pin-source=f", "x" },
    { "pkcs11:token=t?", "pkcs11:token=t", NULL },
    { NULL, NULL, NULL },
};

static void test_split_pin(void)
{
    for (const pin_case *c = pin_cases; c->uri != NULL; c++) {
        char *clean = NULL, *pin = NULL;
        CU_ASSERT_FATAL(cu_prov_uri_split_pin(c->uri, &clean, &pin) == 1);
        CU_ASSERT_STRING_EQUAL(clean, c->clean);
        if (c->pin == NULL) {
            CU_ASSERT(pin == NULL);
        } else {
            CU_ASSERT(pin != NULL && strcmp(pin, c->pin) == 0);
        }
        CU_ASSERT(strstr(clean, "pin-value") == NULL);
        OPENSSL_free(clean);
        if (pin != NULL)
            OPENSSL_clear_free(pin, strlen(pin));
    }
}

/* Random and mutated URIs: nothing may read or write out of bounds. */
static void test_random(void)
{
    static const char alphabet[] = "pkcs11:;?&=%0aFzobjectidtypepin-valuemodule-path/";
    static const char *seeds[] = { "pkcs11:token=t;object=o;id=%01?module-path=%2Fm&pin-value=1",
                                   "pkcs11:?&&;;==%%", "pkcs11:" };
    char buf[128];
    unsigned int r = 12345;
    for (int i = 0; i < 20000; i++) {
        size_t n;
        if (i % 2) {
            n = (size_t)(r % (sizeof buf - 1));
            for (size_t j = 0; j < n; j++) {
                r = r * 1103515245u + 12345u;
                buf[j] = alphabet[(r >> 16) % (sizeof alphabet - 1)];
            }
            if (n >= 7)
                memcpy(buf, "pkcs11:", 7);
        } else {
            const char *s = seeds[(size_t)i % 3];
            n = strlen(s);
            memcpy(buf, s, n);
            r = r * 1103515245u + 12345u;
            if (n > 0)
                buf[(r >> 8) % n] = alphabet[(r >> 16) % (sizeof alphabet - 1)];
            n = (r >> 4) % (n + 1); /* truncate */
        }
        buf[n] = '\0';
        r = r * 1103515245u + 12345u;
        char *v = NULL, *clean = NULL, *pin = NULL;
        size_t l;
        if (cu_prov_uri_attr(buf, "object", &v, &l))
            OPENSSL_free(v);
        if (cu_prov_uri_query(buf, "pin-value", &v, &l))
            OPENSSL_free(v);
        if (cu_prov_uri_split_pin(buf, &clean, &pin)) {
            CU_ASSERT(strlen(clean) <= n);
            OPENSSL_free(clean);
            OPENSSL_free(pin);
        }
    }
}

static const cu_test_case cases[] = {
    { "path and query attributes, percent-decoding", test_attrs },
    { "pin-value split out of URIs", test_split_pin },
    { "random and mutated URIs", test_random },
    { NULL, NULL },
};

int main(void)
{
    if (cu_test_add_suite("engine-uri", NULL, NULL, cases) != 0)
        return 1;
    return cu_test_run();
}
