/* SAS token parsing and verification (PROTOCOL.md §2.2). */
#include <custos/sas.h>

#include "prov_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cu_sas {
    char *sr;         /* as received (what the device signed) */
    char *sr_decoded; /* percent-decoded, for the scope check */
    char *se;         /* as received (signed as such) */
    char *skn;        /* percent-decoded, NULL when absent */
    uint8_t sig[32];
    size_t sig_len;
    uint64_t expiry;
};

static const char SCHEME[] = "SharedAccessSignature";

void cu_sas_free(cu_sas *sas)
{
    if (sas == NULL)
        return;
    free(sas->sr);
    free(sas->sr_decoded);
    free(sas->se);
    free(sas->skn);
    OPENSSL_cleanse(sas->sig, sizeof sas->sig);
    free(sas);
}

static char *dupn(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (o != NULL) {
        memcpy(o, s, n);
        o[n] = 0;
    }
    return o;
}

/* Stores one key=value pair; the raw value is kept as received. */
static cu_rc take_pair(cu_sas *sas, const char *k, size_t klen, const char *v, size_t vlen,
                       bool *seen_sig)
{
    cu_rc rc = CU_OK;
    char *dec = NULL;
    uint8_t *raw = NULL;
    size_t rawlen = 0;

#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(k, lit, klen) == 0)
    if (KEY_IS("sr")) {
        if (sas->sr != NULL)
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: duplicate 'sr'");
        if (vlen == 0)
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: empty 'sr'");
        if ((rc = cu_prov__pct_decode(v, vlen, &dec)) != CU_OK)
            return cu_prov__refuse(rc, NULL, 0, "SAS token: 'sr': %s", cu_err_last()->msg);
        if ((sas->sr = dupn(v, vlen)) == NULL) {
            free(dec);
            return cu_err_set(CU_E_NOMEM, "out of memory");
        }
        sas->sr_decoded = dec;
    } else if (KEY_IS("se")) {
        if (sas->se != NULL)
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: duplicate 'se'");
        if (vlen == 0 || vlen > 19)
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: 'se' is not a Unix time in seconds");
        uint64_t t = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return cu_err_set(CU_E_INVALID_ARG, "SAS token: 'se' is not a decimal number");
            t = t * 10 + (uint64_t)(v[i] - '0');
        }
        if ((sas->se = dupn(v, vlen)) == NULL)
            return cu_err_set(CU_E_NOMEM, "out of memory");
        sas->expiry = t;
    } else if (KEY_IS("sig")) {
        if (*seen_sig)
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: duplicate 'sig'");
        *seen_sig = true;
        if ((rc = cu_prov__pct_decode(v, vlen, &dec)) != CU_OK)
            return cu_prov__refuse(rc, NULL, 0, "SAS token: 'sig': %s", cu_err_last()->msg);
        rc = cu_prov__b64_decode(dec, strlen(dec), &raw, &rawlen);
        free(dec);
        if (rc != CU_OK)
            return cu_err_set(rc, "SAS token: 'sig' is not base64");
        if (rawlen != 32) {
            OPENSSL_clear_free(raw, rawlen + 1);
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: 'sig' is %zu bytes, not an HMAC-SHA256", rawlen);
        }
        memcpy(sas->sig, raw, 32);
        sas->sig_len = 32;
        OPENSSL_clear_free(raw, rawlen + 1);
    } else if (KEY_IS("skn")) {
        if (sas->skn != NULL)
            return cu_err_set(CU_E_INVALID_ARG, "SAS token: duplicate 'skn'");
        if ((rc = cu_prov__pct_decode(v, vlen, &dec)) != CU_OK)
            return cu_prov__refuse(rc, NULL, 0, "SAS token: 'skn': %s", cu_err_last()->msg);
        sas->skn = dec;
    } else {
        return cu_err_set(CU_E_INVALID_ARG, "SAS token: unknown field '%.*s'", (int)(klen > 32 ? 32 : klen), k);
    }
#undef KEY_IS
    return CU_OK;
}

cu_rc cu_sas_parse(const char *token, size_t len, cu_sas **_out)
{
    cu_prov__return_val_if_fail(token != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    cu_sas *sas = NULL;
    bool seen_sig = false;

    *_out = NULL;
    if (len > CU_SAS_MAX_LEN) {
        rc = cu_err_set(CU_E_INVALID_ARG, "SAS token: longer than %d bytes", CU_SAS_MAX_LEN);
        goto cleanup;
    }
    if (memchr(token, '\0', len) != NULL) {
        rc = cu_err_set(CU_E_INVALID_ARG, "SAS token: contains a NUL byte");
        goto cleanup;
    }
    size_t sl = sizeof SCHEME - 1;
    if (len <= sl || memcmp(token, SCHEME, sl) != 0 || token[sl] != ' ') {
        rc = cu_err_set(CU_E_INVALID_ARG, "SAS token: scheme is not 'SharedAccessSignature'");
        goto cleanup;
    }
    if ((sas = calloc(1, sizeof *sas)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    const char *p = token + sl + 1, *end = token + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq == NULL || eq == p) {
            rc = cu_err_set(CU_E_INVALID_ARG, "SAS token: field without 'key=' at offset %zu",
                            (size_t)(p - token));
            goto cleanup;
        }
        rc = take_pair(sas, p, (size_t)(eq - p), eq + 1, (size_t)(stop - eq - 1), &seen_sig);
        if (rc != CU_OK)
            goto cleanup;
        if (amp != NULL && amp + 1 == end) {
            rc = cu_err_set(CU_E_INVALID_ARG, "SAS token: trailing '&'");
            goto cleanup;
        }
        p = stop + (amp ? 1 : 0);
    }
    if (sas->sr == NULL || !seen_sig || sas->se == NULL) {
        rc = cu_err_set(CU_E_INVALID_ARG, "SAS token: missing field%s%s%s",
                        sas->sr == NULL ? " 'sr'" : "", !seen_sig ? " 'sig'" : "",
                        sas->se == NULL ? " 'se'" : "");
        goto cleanup;
    }
    *_out = sas;
    sas = NULL;
cleanup:
    cu_sas_free(sas);
    return rc;
}

const char *cu_sas_get0_sr(const cu_sas *sas) { return sas ? sas->sr : NULL; }
const char *cu_sas_get0_sr_decoded(const cu_sas *sas) { return sas ? sas->sr_decoded : NULL; }
const char *cu_sas_get0_skn(const cu_sas *sas) { return sas ? sas->skn : NULL; }
uint64_t cu_sas_get_expiry(const cu_sas *sas) { return sas ? sas->expiry : 0; }

static cu_rc hmac256(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t out[32])
{
    unsigned int olen = 0;
    if (HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &olen) == NULL || olen != 32)
        return cu_err_set(CU_E_CRYPTO, "HMAC-SHA256 failed");
    return CU_OK;
}

cu_rc cu_sas_verify(const cu_sas *sas, const cu_sas_check *chk, const cu_sas_key *keys,
                    size_t nkeys, size_t *_matched, char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(sas != NULL && chk != NULL && chk->id_scope != NULL &&
                               chk->registration_id != NULL && (keys != NULL || nkeys == 0),
                           CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    char *msg = NULL, *want = NULL;
    size_t mlen = strlen(sas->sr) + 1 + strlen(sas->se);
    bool ok = false;
    size_t which = 0;

    if (_matched != NULL)
        *_matched = (size_t)-1;
    if (chk->key_name != NULL && sas->skn != NULL && strcmp(sas->skn, chk->key_name) != 0) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len, "SAS token names key '%.64s', expected '%s'",
                        sas->skn, chk->key_name);
        goto cleanup;
    }
    if (nkeys == 0) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len, "no key to verify the SAS token with");
        goto cleanup;
    }
    if ((msg = malloc(mlen + 1)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    snprintf(msg, mlen + 1, "%s\n%s", sas->sr, sas->se);
    /* Every candidate is tried so the time taken does not say which matched. */
    for (size_t i = 0; i < nkeys; i++) {
        uint8_t mac[32];
        if ((rc = hmac256(keys[i].key, keys[i].len, msg, mlen, mac)) != CU_OK)
            goto cleanup;
        if (CRYPTO_memcmp(mac, sas->sig, 32) == 0 && !ok) {
            ok = true;
            which = i;
        }
        OPENSSL_cleanse(mac, sizeof mac);
    }
    if (!ok) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len,
                        "SAS token signature does not verify with the %s key%s", keys[0].label ? keys[0].label : "enrollment",
                        nkeys > 1 ? " nor the other keys of the enrollment" : "");
        goto cleanup;
    }
    /* The MAC verified: the caller learns which key even if the token is
     * refused below, so that it can say "expired" rather than "unknown". */
    if (_matched != NULL)
        *_matched = which;
    time_t now = chk->now ? chk->now : time(NULL);
    if (sas->expiry + chk->skew <= (uint64_t)now) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len,
                        "SAS token expired at %llu (now %lld, skew %us)",
                        (unsigned long long)sas->expiry, (long long)now, chk->skew);
        goto cleanup;
    }
    size_t wl = strlen(chk->id_scope) + strlen("/registrations/") + strlen(chk->registration_id) + 1;
    if ((want = malloc(wl)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    snprintf(want, wl, "%s/registrations/%s", chk->id_scope, chk->registration_id);
    if (!cu_prov__ieq(sas->sr_decoded, want)) {
        rc = cu_prov__refuse(CU_E_VERIFY, reason, reason_len,
                        "SAS token is for '%.200s', not for '%.200s'", sas->sr_decoded, want);
        goto cleanup;
    }
cleanup:
    if (msg != NULL)
        OPENSSL_clear_free(msg, mlen + 1);
    free(want);
    return rc;
}

cu_rc cu_sas_key_decode(const char *b64, uint8_t **_key, size_t *_len)
{
    cu_prov__return_val_if_fail(b64 != NULL && _key != NULL && _len != NULL, CU_E_INVALID_ARG);
    cu_rc rc = cu_prov__b64_decode(b64, strlen(b64), _key, _len);
    if (rc != CU_OK)
        return cu_err_set(rc, "symmetric key is not valid base64");
    if (*_len < 16 || *_len > 64) {
        size_t n = *_len;
        cu_sas_key_free(*_key, n);
        *_key = NULL;
        *_len = 0;
        return cu_err_set(CU_E_INVALID_ARG, "symmetric key is %zu bytes; it must be 16 to 64", n);
    }
    return CU_OK;
}

void cu_sas_key_free(uint8_t *key, size_t len)
{
    if (key != NULL)
        OPENSSL_clear_free(key, len + 1);
}

cu_rc cu_sas_derive_key(const uint8_t *group_key, size_t len, const char *registration_id,
                        uint8_t out[32])
{
    cu_prov__return_val_if_fail(group_key != NULL && registration_id != NULL && out != NULL,
                           CU_E_INVALID_ARG);
    return hmac256(group_key, len, registration_id, strlen(registration_id), out);
}

cu_rc cu_sas_derive_key_b64(const char *group_key_b64, const char *registration_id, char **_out)
{
    cu_prov__return_val_if_fail(group_key_b64 != NULL && registration_id != NULL && _out != NULL,
                           CU_E_INVALID_ARG);
    uint8_t *gk = NULL, dk[32];
    size_t gl = 0;
    *_out = NULL;
    cu_rc rc = cu_sas_key_decode(group_key_b64, &gk, &gl);
    if (rc != CU_OK)
        goto cleanup;
    if ((rc = cu_sas_derive_key(gk, gl, registration_id, dk)) != CU_OK)
        goto cleanup;
    if ((*_out = cu_prov__b64_encode(dk, sizeof dk)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    OPENSSL_cleanse(dk, sizeof dk);
    cu_sas_key_free(gk, gl);
    return rc;
}

/* The C SDK's URL encoder: keeps A-Za-z0-9 ! ( ) * - . _, lower-case hex. */
static char *url_encode(const char *s)
{
    static const char hx[] = "0123456789abcdef";
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1), *q = o;
    if (o == NULL)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("!()*-._", c) != NULL) {
            *q++ = (char)c;
        } else {
            *q++ = '%';
            *q++ = hx[c >> 4];
            *q++ = hx[c & 15];
        }
    }
    *q = 0;
    return o;
}

cu_rc cu_sas_sign(const uint8_t *key, size_t len, const char *id_scope,
                  const char *registration_id, uint64_t expiry, const char *key_name,
                  char **_token)
{
    cu_prov__return_val_if_fail(key != NULL && id_scope != NULL && registration_id != NULL &&
                               _token != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    char *res = NULL, *sr = NULL, *msg = NULL, *b64 = NULL, *sig = NULL, *tok = NULL;
    uint8_t mac[32];
    size_t n;

    *_token = NULL;
    n = strlen(id_scope) + strlen(registration_id) + 16;
    if ((res = malloc(n)) == NULL)
        goto nomem;
    snprintf(res, n, "%s/registrations/%s", id_scope, registration_id);
    if ((sr = url_encode(res)) == NULL)
        goto nomem;
    n = strlen(sr) + 24;
    if ((msg = malloc(n)) == NULL)
        goto nomem;
    snprintf(msg, n, "%s\n%llu", sr, (unsigned long long)expiry);
    if ((rc = hmac256(key, len, msg, strlen(msg), mac)) != CU_OK)
        goto cleanup;
    if ((b64 = cu_prov__b64_encode(mac, sizeof mac)) == NULL || (sig = url_encode(b64)) == NULL)
        goto nomem;
    n = strlen(sr) + strlen(sig) + (key_name ? strlen(key_name) : 0) + 80;
    if ((tok = malloc(n)) == NULL)
        goto nomem;
    snprintf(tok, n, "SharedAccessSignature sr=%s&sig=%s&se=%llu%s%s", sr, sig,
             (unsigned long long)expiry, key_name ? "&skn=" : "", key_name ? key_name : "");
    *_token = tok;
    tok = NULL;
    goto cleanup;
nomem:
    rc = cu_err_set(CU_E_NOMEM, "out of memory");
cleanup:
    OPENSSL_cleanse(mac, sizeof mac);
    free(res);
    free(sr);
    free(msg);
    free(b64);
    free(sig);
    free(tok);
    return rc;
}
