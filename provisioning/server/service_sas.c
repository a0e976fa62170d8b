/* Service SAS (PROTOCOL.md §5.1): "SharedAccessSignature sr=<host>[/path]&
 * sig=<b64>&se=<unix>&skn=<policy>", signed with the policy key over
 * sr + "\n" + se as sent. The host must be one the service answers to. */
#include "srv_int.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_TOKEN 4096

void (*cu_srv__service_sas_key_used)(void);

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* Percent-decoding; '+' stays '+' (base64). */
static bool pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + 1 >= cap)
            return false;
        if (s[i] == '%') {
            if (i + 2 >= n)
                return false;
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0))
                return false;
            out[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = 0;
    return true;
}

cu_rc cu_srv__service_sas_check(cu_srv_state *st, const char *authz, unsigned skew, char *why, size_t wl)
{
    static const char SCHEME[] = "SharedAccessSignature ";
    char sr[1024] = "", sr_raw[1024] = "", sig[256] = "", se[32] = "", skn[128] = "";
    bool have[4] = {false, false, false, false};
    if (authz == NULL) {
        snprintf(why, wl, "no Authorization header");
        return CU_E_VERIFY;
    }
    size_t tl = strlen(authz);
    if (tl > MAX_TOKEN || strncasecmp(authz, SCHEME, sizeof SCHEME - 1) != 0) {
        snprintf(why, wl, "not a SharedAccessSignature token");
        return CU_E_VERIFY;
    }
    const char *p = authz + sizeof SCHEME - 1;
    while (*p) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        if (eq == NULL) {
            snprintf(why, wl, "malformed token");
            return CU_E_VERIFY;
        }
        size_t kl = (size_t)(eq - p), vl = n - kl - 1;
        int idx = -1;
        char *dst = NULL;
        size_t cap = 0;
        if (kl == 2 && !strncmp(p, "sr", 2)) {
            idx = 0, dst = sr, cap = sizeof sr;
            if (vl >= sizeof sr_raw) {
                snprintf(why, wl, "sr too long");
                return CU_E_VERIFY;
            }
            memcpy(sr_raw, eq + 1, vl);
            sr_raw[vl] = 0;
        } else if (kl == 3 && !strncmp(p, "sig", 3)) {
            idx = 1, dst = sig, cap = sizeof sig;
        } else if (kl == 2 && !strncmp(p, "se", 2)) {
            idx = 2, dst = se, cap = sizeof se;
        } else if (kl == 3 && !strncmp(p, "skn", 3)) {
            idx = 3, dst = skn, cap = sizeof skn;
        }
        if (idx < 0 || have[idx]) {
            snprintf(why, wl, "unknown or repeated field in the token");
            return CU_E_VERIFY;
        }
        have[idx] = true;
        if (!pct_decode(eq + 1, vl, dst, cap)) {
            snprintf(why, wl, "bad escape in the token");
            return CU_E_VERIFY;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    if (!have[0] || !have[1] || !have[2] || !have[3]) {
        snprintf(why, wl, "the token needs sr, sig, se and skn");
        return CU_E_VERIFY;
    }
    if (strcmp(skn, CU_SRV_POLICY) != 0) {
        snprintf(why, wl, "unknown shared access policy '%.64s'", skn);
        return CU_E_VERIFY;
    }
    char *end = NULL;
    unsigned long long exp = strtoull(se, &end, 10);
    if (se[0] < '0' || se[0] > '9' || *end != 0) {
        snprintf(why, wl, "se is not a number");
        return CU_E_VERIFY;
    }
    /* The host part of sr, without a port. */
    char host[300];
    size_t hl = strcspn(sr, "/");
    snprintf(host, sizeof host, "%.*s", (int)(hl < 299 ? hl : 299), sr);
    char *colon = strrchr(host, ':');
    if (colon != NULL && strchr(host, ']') == NULL && strchr(colon + 1, ':') == NULL)
        *colon = 0;
    const char *const *names;
    size_t nn = cu_srv_state_names(st, &names);
    bool known = false;
    for (size_t i = 0; i < nn; i++)
        known = known || strcasecmp(names[i], host) == 0;
    if (!known) {
        snprintf(why, wl, "sr names another service ('%.64s')", host);
        return CU_E_VERIFY;
    }
    size_t kl = 0;
    const uint8_t *key = cu_srv_state_policy_key(st, &kl);
    /* Sign what was sent; also the decoded form, for hand-made tokens. */
    const char *forms[2] = {sr_raw, sr};
    bool ok = false;
    if (cu_srv__service_sas_key_used != NULL)
        cu_srv__service_sas_key_used();
    for (int f = 0; f < 2 && !ok; f++) {
        char msg[1100];
        uint8_t mac[32];
        unsigned ml = 0;
        char b64[64];
        snprintf(msg, sizeof msg, "%s\n%s", forms[f], se);
        if (HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, strlen(msg), mac, &ml) == NULL)
            break;
        EVP_EncodeBlock((unsigned char *)b64, mac, 32);
        ok = strlen(sig) == 44 && CRYPTO_memcmp(b64, sig, 44) == 0;
        OPENSSL_cleanse(mac, sizeof mac);
    }
    if (!ok) {
        snprintf(why, wl, "the signature does not verify");
        return CU_E_VERIFY;
    }
    if (exp + skew < (unsigned long long)time(NULL)) {
        snprintf(why, wl, "the token has expired");
        return CU_E_VERIFY;
    }
    return CU_OK;
}
