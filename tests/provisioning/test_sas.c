/* SAS tokens: grammar, every SDK's escaping, refusals with reasons, the
 * group-derived key vector of PROTOCOL.md §2.3; and the keyring. */
#include "fixture.h"

#include <custos/sas.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint8_t KEY[32] = "0123456789abcdef0123456789abcdef";
static const char *SCOPE = "0ne00000001";

/* base64(HMAC(KEY, sr + "\n" + se)), then escaped like the SDKs. */
static void sign(const char *sr, const char *se, bool upper, char *out, size_t outlen)
{
    char msg[512];
    unsigned char mac[32];
    unsigned int n;
    snprintf(msg, sizeof msg, "%s\n%s", sr, se);
    HMAC(EVP_sha256(), KEY, sizeof KEY, (unsigned char *)msg, strlen(msg), mac, &n);
    char b64[64];
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    size_t o = 0;
    for (char *p = b64; *p && o + 4 < outlen; p++) {
        if (*p == '+' || *p == '/' || *p == '=')
            o += (size_t)snprintf(out + o, outlen - o, upper ? "%%%02X" : "%%%02x", (unsigned char)*p);
        else
            out[o++] = *p;
    }
    out[o] = 0;
}

static cu_rc verify(const char *token, const char *regid, time_t now, char *reason, size_t rlen)
{
    cu_sas *sas = NULL;
    cu_rc rc = cu_sas_parse(token, strlen(token), &sas);
    if (rc != CU_OK) {
        snprintf(reason, rlen, "%s", cu_err_last()->msg);
        return rc;
    }
    cu_sas_key k = {KEY, sizeof KEY, "primary"};
    cu_sas_check chk = {SCOPE, regid, "registration", now, 60};
    rc = cu_sas_verify(sas, &chk, &k, 1, NULL, reason, rlen);
    cu_sas_free(sas);
    return rc;
}

static void test_sdk_forms(void)
{
    char sig[128], tok[1024], reason[512];
    const char *se = "2000000000";
    time_t now = 1900000000;
    /* C SDK: lower-case escapes in sr and sig. */
    const char *sr_c = "0ne00000001%2fregistrations%2fdev-1";
    sign(sr_c, se, false, sig, sizeof sig);
    snprintf(tok, sizeof tok, "SharedAccessSignature sr=%s&sig=%s&se=%s&skn=registration", sr_c, sig, se);
    CU_ASSERT_EQUAL(verify(tok, "dev-1", now, reason, sizeof reason), CU_OK);
    /* Node: raw sr, skn before se, upper-case sig escapes. */
    const char *sr_node = "0ne00000001/registrations/dev-1";
    sign(sr_node, se, true, sig, sizeof sig);
    snprintf(tok, sizeof tok, "SharedAccessSignature sr=%s&sig=%s&skn=registration&se=%s", sr_node, sig, se);
    CU_ASSERT_EQUAL(verify(tok, "dev-1", now, reason, sizeof reason), CU_OK);
    /* Python: upper-case %2F; docs order sig, se, skn, sr. */
    const char *sr_py = "0ne00000001%2Fregistrations%2Fdev-1";
    sign(sr_py, se, true, sig, sizeof sig);
    snprintf(tok, sizeof tok, "SharedAccessSignature sig=%s&se=%s&skn=registration&sr=%s", sig, se, sr_py);
    CU_ASSERT_EQUAL(verify(tok, "dev-1", now, reason, sizeof reason), CU_OK);
    /* Registration ids are case-insensitive in the scope check. */
    CU_ASSERT_EQUAL(verify(tok, "DEV-1", now, reason, sizeof reason), CU_OK);
    /* No skn at all (hand-made tokens). */
    snprintf(tok, sizeof tok, "SharedAccessSignature sig=%s&se=%s&sr=%s", sig, se, sr_py);
    CU_ASSERT_EQUAL(verify(tok, "dev-1", now, reason, sizeof reason), CU_OK);
    /* Our own signer (the C SDK's form). */
    char *mine = NULL;
    CU_ASSERT_EQUAL(cu_sas_sign(KEY, sizeof KEY, SCOPE, "dev-1", 2000000000, "registration", &mine), CU_OK);
    CU_ASSERT_EQUAL(verify(mine, "dev-1", now, reason, sizeof reason), CU_OK);
    free(mine);
}

static void test_refusals(void)
{
    char sig[128], tok[1024], reason[512];
    const char *sr = "0ne00000001%2fregistrations%2fdev-1";
    sign(sr, "2000000000", false, sig, sizeof sig);
    struct {
        const char *what, *fmt, *regid, *why;
        time_t now;
        cu_rc rc;
    } cases[] = {
        {"expired", "SharedAccessSignature sr=%s&sig=%s&se=2000000000&skn=registration", "dev-1", "expired",
         2000000000 + 61, CU_E_VERIFY},
        {"within skew", "SharedAccessSignature sr=%s&sig=%s&se=2000000000&skn=registration", "dev-1", "",
         2000000000 + 59, CU_OK},
        {"other id", "SharedAccessSignature sr=%s&sig=%s&se=2000000000&skn=registration", "dev-2", "not for",
         1900000000, CU_E_VERIFY},
        {"other skn", "SharedAccessSignature sr=%s&sig=%s&se=2000000000&skn=owner", "dev-1", "expected",
         1900000000, CU_E_VERIFY},
        {"bad signature (se changed)", "SharedAccessSignature sr=%s&sig=%s&se=2000000001&skn=registration",
         "dev-1", "does not verify", 1900000000, CU_E_VERIFY},
        {"missing se", "SharedAccessSignature sr=%s&sig=%s&skn=registration", "dev-1", "missing field 'se'",
         1900000000, CU_E_INVALID_ARG},
        {"duplicate sr", "SharedAccessSignature sr=%s&sig=%s&se=1&sr=x", "dev-1", "duplicate", 1, CU_E_INVALID_ARG},
        {"unknown field", "SharedAccessSignature sr=%s&sig=%s&se=1&foo=1", "dev-1", "unknown field", 1,
         CU_E_INVALID_ARG},
        {"bad scheme", "Bearer sr=%s&sig=%s&se=1", "dev-1", "scheme", 1, CU_E_INVALID_ARG},
        {"bad escape", "SharedAccessSignature sr=%s%%zz&sig=%s&se=1", "dev-1", "percent-escape", 1,
         CU_E_INVALID_ARG},
        {"se not a number", "SharedAccessSignature sr=%s&sig=%s&se=12a", "dev-1", "decimal", 1, CU_E_INVALID_ARG},
        {"trailing &", "SharedAccessSignature sr=%s&sig=%s&se=1&", "dev-1", "trailing", 1, CU_E_INVALID_ARG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reason[0] = 0;
        snprintf(tok, sizeof tok, cases[i].fmt, sr, sig);
        cu_rc rc = verify(tok, cases[i].regid, cases[i].now, reason, sizeof reason);
        bool has = strstr(reason, cases[i].why) != NULL;
        if (rc != cases[i].rc || !has)
            fprintf(stderr, "case '%s': rc %d reason '%s'\n", cases[i].what, rc, reason);
        CU_ASSERT_EQUAL(rc, cases[i].rc);
        CU_ASSERT_TRUE(has);
    }
    /* Other scope: a token for another service instance. */
    char *other = NULL;
    CU_ASSERT_EQUAL(cu_sas_sign(KEY, sizeof KEY, "0ne99999999", "dev-1", 2000000000, "registration", &other), CU_OK);
    CU_ASSERT_EQUAL(verify(other, "dev-1", 1900000000, reason, sizeof reason), CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "0ne99999999"));
    free(other);
    /* sig that is not base64 / not 32 bytes. */
    CU_ASSERT_EQUAL(verify("SharedAccessSignature sr=a&sig=!!!!&se=1", "a", 1, reason, sizeof reason), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(verify("SharedAccessSignature sr=a&sig=AAAA&se=1", "a", 1, reason, sizeof reason), CU_E_INVALID_ARG);
}

static void test_derived_key_vector(void)
{
    char *dk = NULL;
    CU_ASSERT_EQUAL(cu_sas_derive_key_b64("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
                                          "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", &dk), CU_OK);
    CU_ASSERT_STRING_EQUAL(dk, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    free(dk);
    /* Non-base64 and wrong-size keys are refused. */
    uint8_t *k = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(cu_sas_key_decode("not base64!", &k, &n), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_sas_key_decode("AAAA", &k, &n), CU_E_INVALID_ARG); /* 3 bytes */
    CU_ASSERT_EQUAL(cu_sas_derive_key_b64("@@@@", "x", &dk), CU_E_INVALID_ARG);
}

static void test_keyring(void)
{
    cu_keyring *kr = NULL, *kr2 = NULL;
    static const uint8_t k1[32] = "key one key one key one key one", k2[32] = "key two key two key two key two";
    CU_ASSERT_EQUAL_FATAL(cu_keyring_software_new(k1, sizeof k1, &kr), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_keyring_software_new(k2, sizeof k2, &kr2), CU_OK);
    char *w = NULL;
    uint8_t *p = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(cu_keyring_wrap(kr, (const uint8_t *)"secret", 6, "enrollment/a", &w), CU_OK);
    CU_ASSERT_PTR_NULL(strstr(w, "secret"));
    CU_ASSERT_EQUAL(cu_keyring_unwrap(kr, w, "enrollment/a", &p, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT_EQUAL(memcmp(p, "secret", 6), 0);
    cu_keyring_secret_free(p, n);
    /* Moved to another row, or another service key: refused. */
    CU_ASSERT_EQUAL(cu_keyring_unwrap(kr, w, "enrollment/b", &p, &n), CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_keyring_unwrap(kr2, w, "enrollment/a", &p, &n), CU_E_VERIFY);
    w[10] ^= 1;
    CU_ASSERT_NOT_EQUAL(cu_keyring_unwrap(kr, w, "enrollment/a", &p, &n), CU_OK);
    free(w);
    uint8_t seal[32];
    CU_ASSERT_EQUAL(cu_keyring_seal(kr, "group", (const uint8_t *)"row", 3, seal), CU_OK);
    CU_ASSERT_EQUAL(cu_keyring_seal_check(kr, "group", (const uint8_t *)"row", 3, seal), CU_OK);
    CU_ASSERT_EQUAL(cu_keyring_seal_check(kr, "group", (const uint8_t *)"roW", 3, seal), CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_keyring_seal_check(kr, "ca", (const uint8_t *)"row", 3, seal), CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_keyring_seal_check(kr2, "group", (const uint8_t *)"row", 3, seal), CU_E_VERIFY);
    cu_keyring_free(kr);
    cu_keyring_free(kr2);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"every SDK's token form verifies", test_sdk_forms},
        {"refusals with reasons", test_refusals},
        {"group-derived key vector (PROTOCOL 2.3)", test_derived_key_vector},
        {"keyring wrap and seal", test_keyring},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_sas", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
