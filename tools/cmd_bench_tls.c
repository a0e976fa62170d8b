/* custos bench tls: the server's CPU per full TLS 1.3 handshake with its key
 * in a file (a software key in memory) versus in a token through the OpenSSL
 * provider custos (and another provider, if given), side by side in one run.
 *
 * Client and server run in one thread over a BIO pair; only the server's
 * calls (SSL_new, the handshake steps, SSL_free) are timed, with the
 * thread's CPU clock, so the client's work and the machine's other load do
 * not count. The contestants take turns of 0.1 s. Beside them, the cost of
 * one signature alone is measured the same way (the token layer's C_SignInit
 * + C_Sign, the provider's EVP_DigestSign, OpenSSL with the key in memory),
 * which tells how much of a handshake's difference is the token's own
 * signature. */
#include "bench_prov.h"
#include "cli.h"
#include "token_util.h"

#include <custos/token.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cu_bench_tls(int argc, char **argv);

/* file: a software key, libssl's default library context; file-custos: the
 * same key in the provider's library context (custos and default loaded), as
 * an application that loads custos has it; file+layer-sign: a file
 * handshake plus one signature through the token layer right after it, both
 * counted (what a token signature costs among handshakes, without the
 * provider); provider, other-provider: the token key through custos, through
 * another provider. */
enum { C_FILE, C_FILE_CUSTOS, C_FILE_LAYER, C_PROV, C_OTHER, C__N };
static const char *c_names[C__N] = {"file", "file-custos", "file+layer-sign", "provider", "other-provider"};
enum { S_SOFT, S_PROV, S_LAYER, S__N };
static const char *s_names[S__N] = {"sign-software", "sign-provider", "sign-token-layer"};

X509 *cu_bench_self_signed(EVP_PKEY *key, OSSL_LIB_CTX *lib)
{
    X509 *x = X509_new_ex(lib, NULL);
    X509_NAME *n = X509_NAME_new();
    int ok = x != NULL && n != NULL &&
             X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"bench", -1, -1, 0) &&
             X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -60) && X509_gmtime_adj(X509_getm_notAfter(x), 3600) &&
             X509_set_subject_name(x, n) && X509_set_issuer_name(x, n) && X509_set_pubkey(x, key) &&
             X509_sign(x, key, EVP_sha256()) > 0;
    X509_NAME_free(n);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static SSL_CTX *server_ctx(OSSL_LIB_CTX *lib, EVP_PKEY *key, char *err, size_t errlen)
{
    X509 *cert = cu_bench_self_signed(key, lib);
    SSL_CTX *c = SSL_CTX_new_ex(lib, NULL, TLS_server_method());
    if (cert == NULL || c == NULL || !SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) ||
        SSL_CTX_use_certificate(c, cert) != 1 || SSL_CTX_use_PrivateKey(c, key) != 1) {
        unsigned long e = ERR_peek_last_error();
        snprintf(err, errlen, "cannot set up the TLS server: %s", e ? ERR_reason_error_string(e) : "?");
        ERR_clear_error();
        SSL_CTX_free(c);
        c = NULL;
    } else {
        /* Full handshakes only. */
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    }
    X509_free(cert);
    return c;
}

/* One full handshake; adds the server's CPU time to *_cpu. 0 on failure. */
static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, double *_cpu)
{
    BIO *cb = NULL, *sb = NULL;
    double t0 = cu_bench_clock(CLOCK_THREAD_CPUTIME_ID);
    SSL *s = SSL_new(sctx);
    *_cpu += cu_bench_clock(CLOCK_THREAD_CPUTIME_ID) - t0;
    SSL *c = SSL_new(cctx);
    int ok = 0;
    if (s == NULL || c == NULL || !BIO_new_bio_pair(&cb, 0, &sb, 0))
        goto out;
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    bool cdone = false, sdone = false;
    for (int i = 0; i < 20 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = true;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                goto out;
        }
        if (!sdone) {
            t0 = cu_bench_clock(CLOCK_THREAD_CPUTIME_ID);
            int r = SSL_do_handshake(s);
            *_cpu += cu_bench_clock(CLOCK_THREAD_CPUTIME_ID) - t0;
            if (r == 1)
                sdone = true;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                goto out;
        }
    }
    ok = cdone && sdone;
out:
    t0 = cu_bench_clock(CLOCK_THREAD_CPUTIME_ID);
    SSL_free(s);
    *_cpu += cu_bench_clock(CLOCK_THREAD_CPUTIME_ID) - t0;
    SSL_free(c);
    if (!ok)
        ERR_clear_error();
    return ok;
}

typedef struct sign_ctx {
    EVP_PKEY *soft, *prov;
    OSSL_LIB_CTX *lib;
    cu_object *key;
    cu_sig sig;
} sign_ctx;

/* One signature of a 32-byte handshake hash, as the server's CertificateVerify
 * makes it; adds its CPU time. */
static int sign_once(sign_ctx *x, int which, double *_cpu)
{
    static const uint8_t tbs[32] = "custos bench tls: transcript...";
    uint8_t sig[1024], md[32];
    size_t len = sizeof sig;
    int ok;
    double t0 = cu_bench_clock(CLOCK_THREAD_CPUTIME_ID);
    if (which == S_LAYER) {
        unsigned int mdlen = 0;
        ok = EVP_Digest(tbs, sizeof tbs, md, &mdlen, EVP_sha256(), NULL) &&
             cu_sign_digest(x->key, &x->sig, md, mdlen, sig, &len) == CU_OK;
    } else {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        ok = m != NULL &&
             EVP_DigestSignInit_ex(m, NULL, "SHA256", which == S_PROV ? x->lib : NULL, NULL,
                                   which == S_PROV ? x->prov : x->soft, NULL) == 1 &&
             EVP_DigestSign(m, sig, &len, tbs, sizeof tbs) == 1;
        EVP_MD_CTX_free(m);
    }
    *_cpu += cu_bench_clock(CLOCK_THREAD_CPUTIME_ID) - t0;
    return ok;
}

int cu_bench_tls_keys(cu_token *tok, const char *uri, cu_object **_key, char **_key_uri, EVP_PKEY **_file)
{
    if (cu_token_find(tok, uri, CU_CLASS_PRIVATE_KEY, _key) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    cu_key_type kt = cu_object_key_type(*_key);
    unsigned bits = cu_object_bits(*_key);
    if (kt != CU_KEY_EC && kt != CU_KEY_RSA)
        return cu_cli_fail("the URI names no EC or RSA private key");
    if ((*_key_uri = cu_object_uri(*_key)) == NULL)
        return cu_cli_fail("cannot make the key's URI");
    *_file = kt == CU_KEY_EC ? EVP_EC_gen(bits == 384 ? "P-384" : "P-256") : EVP_RSA_gen(bits ? bits : 2048);
    if (*_file == NULL)
        return cu_cli_fail("cannot generate a software key of the same type");
    return CU_EXIT_OK;
}

int cu_bench_tls(int argc, char **argv)
{
    const char *uri = NULL, *dir = NULL, *pin_source = NULL, *secs = "3", *prov_path = NULL, *other = NULL;
    bool json = false, help = false;
    cu_cli_opt opts[] = {
        {"--uri", &uri, NULL, NULL, NULL, 0},
        {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--seconds", &secs, NULL, NULL, NULL, 0},
        {"--provider-path", &prov_path, NULL, NULL, NULL, 0},
        {"--other-provider", &other, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("bench tls", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos bench tls --uri URI [--dir TOKEN_DIR] [--pin-source FILE] [--seconds S]\n"
               "                        [--provider-path DIR] [--other-provider MODULE.so] [--json]\n\n"
               "Server CPU per full TLS 1.3 handshake (no resumption, in-process client over a\n"
               "BIO pair, only the server's calls timed) with the server key in a file (a\n"
               "software key of the same type) and with the key the URI names through the\n"
               "provider custos (custos.so from --provider-path, $CUSTOS_OSSL_MODULES, or\n"
               "../lib/ossl-modules beside this program); --other-provider adds another\n"
               "provider. Also the CPU of one signature alone: software, through the\n"
               "provider, and through the token layer (C_SignInit + C_Sign). Contestants\n"
               "take turns of 0.1 s, S seconds each.\n");
        return CU_EXIT_OK;
    }
    double seconds = strtod(secs, NULL);
    if (seconds <= 0 || seconds > 600)
        return cu_cli_usage("bench tls", "--seconds 0..600");
    if (uri == NULL)
        return cu_cli_usage("bench tls", "--uri URI is required");

    cu_tok_target t;
    if ((rc = cu_tok_target_open(dir, uri, pin_source, true, &t)) != CU_EXIT_OK)
        return rc;
    cu_object *key = NULL;
    char *key_uri = NULL;
    OSSL_LIB_CTX *lib[C__N] = {NULL};
    EVP_PKEY *pk[C__N] = {NULL};
    SSL_CTX *sctx[C__N] = {NULL}, *cctx = NULL;
    sign_ctx sx = {0};
    char err[700], dirbuf[4200], module[4300];
    if ((rc = cu_bench_tls_keys(t.tok, uri, &key, &key_uri, &pk[C_FILE])) != CU_EXIT_OK)
        goto out;
    cu_key_type kt = cu_object_key_type(key);
    unsigned bits = cu_object_bits(key);
    const char *pdir = prov_path ? prov_path : cu_bench_provider_dir(dirbuf, sizeof dirbuf);
    snprintf(module, sizeof module, "%s/custos.so", pdir ? pdir : ".");
    const char *mods[C__N] = {[C_PROV] = module, [C_OTHER] = other};
    for (int i = C_PROV; i < C__N; i++) {
        if (mods[i] == NULL)
            continue;
        if ((lib[i] = cu_bench_provider_lib(mods[i], err, sizeof err)) == NULL ||
            (pk[i] = cu_bench_provider_key(lib[i], key_uri, t.pin, err, sizeof err)) == NULL) {
            rc = cu_cli_fail("%s: %s", mods[i], err);
            goto out;
        }
    }
    lib[C_FILE_CUSTOS] = lib[C_PROV];
    pk[C_FILE_CUSTOS] = pk[C_FILE];
    pk[C_FILE_LAYER] = pk[C_FILE];
    for (int i = 0; i < C__N; i++) {
        if (pk[i] != NULL && (sctx[i] = server_ctx(lib[i], pk[i], err, sizeof err)) == NULL) {
            rc = cu_cli_fail("%s: %s", c_names[i], err);
            goto out;
        }
    }
    if ((cctx = SSL_CTX_new(TLS_client_method())) == NULL || !SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION)) {
        rc = cu_cli_fail("cannot set up the TLS client");
        goto out;
    }
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    sx = (sign_ctx){pk[C_FILE], pk[C_PROV], lib[C_PROV], key,
                    kt == CU_KEY_EC ? (cu_sig){CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1}
                                    : (cu_sig){CU_SIG_RSA_PSS, CU_HASH_SHA256, CU_HASH_SHA256, -1}};
    /* TLS 1.3 signs RSA with PSS: the provider's signature in the sign
     * contestants uses its default (PKCS#1 v1.5) for RSA, the layer PSS. */

    /* Warm up every contestant once (session copies, caches). */
    double scratch = 0;
    for (int i = 0; i < C__N; i++)
        if (sctx[i] != NULL && !handshake(sctx[i], cctx, &scratch)) {
            rc = cu_cli_fail("%s: the TLS handshake failed", c_names[i]);
            goto out;
        }
    for (int i = 0; i < S__N; i++)
        if (!sign_once(&sx, i, &scratch)) {
            rc = cu_cli_fail("%s failed", s_names[i]);
            goto out;
        }

    unsigned long hs[C__N] = {0}, sg[S__N] = {0};
    double cpu[C__N] = {0}, wall[C__N] = {0}, scpu[S__N] = {0};
    int turns = (int)(seconds * 10 + 0.5);
    if (turns < 1)
        turns = 1;
    double turn = seconds / turns;
    for (int r = 0; r < turns; r++) {
        for (int i = 0; i < C__N; i++) {
            if (sctx[i] == NULL)
                continue;
            double w0 = cu_bench_clock(CLOCK_MONOTONIC), end = w0 + turn;
            do {
                if (!handshake(sctx[i], cctx, &cpu[i]) || (i == C_FILE_LAYER && !sign_once(&sx, S_LAYER, &cpu[i]))) {
                    rc = cu_cli_fail("%s: a TLS handshake failed", c_names[i]);
                    goto out;
                }
                hs[i]++;
            } while (cu_bench_clock(CLOCK_MONOTONIC) < end);
            wall[i] += cu_bench_clock(CLOCK_MONOTONIC) - w0;
        }
        for (int i = 0; i < S__N; i++) {
            double end = cu_bench_clock(CLOCK_MONOTONIC) + turn / 2;
            do {
                if (!sign_once(&sx, i, &scpu[i])) {
                    rc = cu_cli_fail("%s failed", s_names[i]);
                    goto out;
                }
                sg[i]++;
            } while (cu_bench_clock(CLOCK_MONOTONIC) < end);
        }
    }
    double us[C__N], sus[S__N];
    for (int i = 0; i < C__N; i++)
        us[i] = hs[i] ? cpu[i] / (double)hs[i] * 1e6 : 0;
    for (int i = 0; i < S__N; i++)
        sus[i] = sg[i] ? scpu[i] / (double)sg[i] * 1e6 : 0;
    const cu_token_desc *d = cu_token_get0_desc(t.tok);
    if (json) {
        printf("{\"token\":");
        cu_cli_json_str(stdout, d->label);
        printf(",\"manufacturer\":");
        cu_cli_json_str(stdout, d->manufacturer);
        printf(",\"key\":\"%s-%u\",\"seconds\":%.1f", cu_key_type_str(kt), bits, seconds);
        for (int i = 0; i < C__N; i++)
            if (hs[i])
                printf(",\"%s\":{\"handshakes_per_s\":%.1f,\"server_cpu_us\":%.2f}", c_names[i],
                       (double)hs[i] / wall[i], us[i]);
        for (int i = 0; i < S__N; i++)
            printf(",\"%s_cpu_us\":%.2f", s_names[i], sus[i]);
        printf("}\n");
    } else {
        printf("token '%s' (%s), key %s-%u, TLS 1.3 full handshakes, %.1f s each, in turns of %.2f s\n", d->label,
               d->manufacturer, cu_key_type_str(kt), bits, seconds, turn);
        for (int i = 0; i < C__N; i++)
            if (hs[i])
                printf("  server key %-15s %8.0f handshakes/s   server CPU %7.1f us/handshake   ÷ file %.3f\n",
                       c_names[i], (double)hs[i] / wall[i], us[i], us[i] / us[C_FILE]);
        printf("  one signature: software %.1f us, provider %.1f us, token layer (C_SignInit + C_Sign) %.1f us CPU\n",
               sus[S_SOFT], sus[S_PROV], sus[S_LAYER]);
        printf("  file handshake with the token's signature instead of the software one: ÷ file %.3f\n",
               (us[C_FILE] - sus[S_SOFT] + sus[S_LAYER]) / us[C_FILE]);
    }
out:
    lib[C_FILE_CUSTOS] = NULL; /* borrowed */
    pk[C_FILE_CUSTOS] = NULL;
    pk[C_FILE_LAYER] = NULL;
    for (int i = 0; i < C__N; i++) {
        SSL_CTX_free(sctx[i]);
        EVP_PKEY_free(pk[i]);
        cu_bench_provider_lib_free(lib[i]);
    }
    SSL_CTX_free(cctx);
    free(key_uri);
    cu_object_free(key);
    cu_tok_target_free(&t);
    return rc;
}
