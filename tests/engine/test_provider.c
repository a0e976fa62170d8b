/* The provider in one library context with keys of two token kinds at once:
 * a SoftHSM2 token and a tpm2-pkcs11 token on swtpm (custos_fixture).
 * Signatures through custos are verified by the default provider; HMAC
 * through CUSTOS-HMAC equals OpenSSL's HMAC with the same (imported) key;
 * EVP_PKEY_generate with a pkcs11-uri makes keys on the tokens; a fork()ed
 * child signs; bad input fails with our error text; a token whose TPM went
 * away and a module finalized under us fail cleanly. */
#include "cu_test.h"

#include <custos/fixture.h>
#include <custos/token.h>
#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PIN "12345678"
#define SO_PIN "87654321"

static char *dir;
static cu_fixture *hsm, *tpm, *soft;
static OSSL_LIB_CTX *lib;
static OSSL_PROVIDER *prov_custos, *prov_default;
static char pin_file[600], bad_pin_file[600];
static uint8_t sas_key[32];
static const char msg[] = "custos provider test message";

/* The fixture's token URI with path attributes added and the PIN source. */
static char *key_uri(cu_fixture *f, const char *attrs, const char *pinfile)
{
    const char *t = cu_fixture_get0_uri(f);
    const char *q = strchr(t, '?');
    size_t n = strlen(t) + strlen(attrs) + strlen(pinfile) + 32;
    char *u = malloc(n);
    snprintf(u, n, "%.*s;%s%s%s&pin-source=%s", (int)(q ? q - t : (long)strlen(t)), t, attrs, q ? "" : "?",
             q ? q : "", pinfile);
    return u;
}

static int keygen(cu_fixture *f, cu_keygen_type type, const char *label, uint8_t id)
{
    cu_token *t = NULL;
    cu_object *o = NULL;
    int ok = cu_fixture_token_open(f, PIN, &t) == CU_OK && cu_token_keygen(t, type, label, &id, 1, &o) == CU_OK;
    if (!ok)
        fprintf(stderr, "keygen %s: %s\n", label, cu_err_last()->msg);
    cu_object_free(o);
    cu_token_unref(t);
    return ok;
}

static int suite_init(void)
{
    char path[600];
    if ((dir = cu_test_mkdtemp("engine")) == NULL)
        return -1;
    snprintf(pin_file, sizeof pin_file, "%s/pin", dir);
    snprintf(bad_pin_file, sizeof bad_pin_file, "%s/badpin", dir);
    FILE *p = fopen(pin_file, "w"), *b = fopen(bad_pin_file, "w");
    if (p == NULL || b == NULL)
        return -1;
    fputs(PIN "\n", p);
    fputs("00000000\n", b);
    fclose(p);
    fclose(b);

    snprintf(path, sizeof path, "%s/hsm", dir);
    if (cu_fixture_create(CU_FIXTURE_SOFTHSM2, path, "c-hsm", SO_PIN, PIN, NULL, &hsm) != CU_OK) {
        fprintf(stderr, "softhsm2 fixture: %s\n", cu_err_last()->msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/tpm", dir);
    if (cu_fixture_create(CU_FIXTURE_TPM2, path, "c-tpm", SO_PIN, PIN, NULL, &tpm) != CU_OK) {
        fprintf(stderr, "tpm2 fixture: %s\n", cu_err_last()->msg);
        return -1;
    }
    /* custos-soft: a module that itself stays usable in a child forked
     * while other threads are inside it (test_fork_busy). */
    snprintf(path, sizeof path, "%s/soft", dir);
    if (cu_fixture_create(CU_FIXTURE_SOFT, path, "c-soft", SO_PIN, PIN, NULL, &soft) != CU_OK) {
        fprintf(stderr, "soft fixture: %s\n", cu_err_last()->msg);
        return -1;
    }
    for (size_t i = 0; i < sizeof sas_key; i++)
        sas_key[i] = (uint8_t)(0x3c + 7 * i);
    cu_token *t = NULL;
    cu_object *o = NULL;
    uint8_t id = 3;
    if (cu_fixture_token_open(soft, PIN, &t) != CU_OK
        || cu_token_import_hmac(t, sas_key, sizeof sas_key, "sas", &id, 1, &o) != CU_OK) {
        fprintf(stderr, "soft hmac import: %s\n", cu_err_last()->msg);
        return -1;
    }
    cu_object_free(o);
    cu_token_unref(t);
    o = NULL;
    t = NULL;
    if (!keygen(hsm, CU_KEYGEN_EC_P256, "ec", 1) || !keygen(hsm, CU_KEYGEN_RSA2048, "rsa", 2)
        || !keygen(hsm, CU_KEYGEN_EC_P256, "twin", 4) || !keygen(hsm, CU_KEYGEN_EC_P256, "twin", 5)
        || !keygen(tpm, CU_KEYGEN_EC_P256, "ec", 0x11) || !keygen(tpm, CU_KEYGEN_RSA2048, "rsa", 0x12))
        return -1;
    if (cu_fixture_token_open(hsm, PIN, &t) != CU_OK
        || cu_token_import_hmac(t, sas_key, sizeof sas_key, "sas", &id, 1, &o) != CU_OK) {
        fprintf(stderr, "hmac import: %s\n", cu_err_last()->msg);
        return -1;
    }
    cu_object_free(o);
    cu_token_unref(t);
    /* Our own use of the modules ends here: tpm2-pkcs11 reads its store at
     * C_Initialize (the key tpm2_ptool imports next would stay unseen) and
     * keeps what it loaded in the TPM's 3 object slots until C_Finalize. */
    cu_p11_shutdown();
    if (cu_fixture_tpm2_import_hmac(tpm, sas_key, sizeof sas_key, "sas", "sas", PIN) != CU_OK) {
        fprintf(stderr, "tpm2 hmac import: %s\n", cu_err_last()->msg);
        return -1;
    }

    /* tpm2_ptool ran under a private tpm2-abrmd that was stopped after it:
     * whatever it left loaded would hold the TPM's 3 object slots. */
    cu_test_sh("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d sh -c "
               "'tpm2_flushcontext -t; tpm2_flushcontext -l; tpm2_flushcontext -s' >&2",
               cu_fixture_tpm_port(tpm));
    return getenv("CUSTOS_OSSL_MODULES") != NULL ? 0 : -1;
}

/* Each case has its own library context with custos and default loaded.
 * Unloading the last custos instance finalizes tpm2-pkcs11, which flushes
 * what it loaded: a swtpm without resource manager holds only 3 objects, and
 * tpm2-pkcs11 keeps every key it used loaded until C_Finalize. */
static int case_init(void)
{
    if ((lib = OSSL_LIB_CTX_new()) == NULL
        || !OSSL_PROVIDER_set_default_search_path(lib, getenv("CUSTOS_OSSL_MODULES"))
        || (prov_custos = OSSL_PROVIDER_load(lib, "custos")) == NULL
        || (prov_default = OSSL_PROVIDER_load(lib, "default")) == NULL) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    return 0;
}

static void case_cleanup(void)
{
    OSSL_PROVIDER_unload(prov_custos);
    OSSL_PROVIDER_unload(prov_default);
    OSSL_LIB_CTX_free(lib);
    prov_custos = prov_default = NULL;
    lib = NULL;
}

static int suite_cleanup(void)
{
    cu_fixture_destroy(tpm);
    cu_fixture_free(tpm);
    cu_fixture_free(soft);
    cu_fixture_destroy(hsm);
    cu_fixture_free(hsm);
    cu_test_rmtree(dir);
    free(dir);
    return 0;
}

/* ---- helpers ---- */

static EVP_PKEY *load(const char *uri, int expect)
{
    EVP_PKEY *pk = NULL;
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, lib, NULL, NULL, NULL, NULL, NULL, NULL);
    if (s == NULL)
        return NULL;
    OSSL_STORE_expect(s, expect);
    while (pk == NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *i = OSSL_STORE_load(s);
        if (i == NULL)
            break;
        if (OSSL_STORE_INFO_get_type(i) == expect)
            pk = expect == OSSL_STORE_INFO_PKEY ? OSSL_STORE_INFO_get1_PKEY(i) : OSSL_STORE_INFO_get1_PUBKEY(i);
        OSSL_STORE_INFO_free(i);
    }
    OSSL_STORE_close(s);
    return pk;
}

static EVP_PKEY *load_key(cu_fixture *f, const char *attrs)
{
    char *u = key_uri(f, attrs, pin_file);
    EVP_PKEY *pk = load(u, OSSL_STORE_INFO_PKEY);
    if (pk == NULL)
        ERR_print_errors_fp(stderr);
    free(u);
    return pk;
}

/* The public half as a default-provider key of the default context. */
static EVP_PKEY *software_twin(EVP_PKEY *pk)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pk, &der);
    const unsigned char *p = der;
    EVP_PKEY *pub = n > 0 ? d2i_PUBKEY(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    return pub;
}

/* Signs msg through custos (pss: RSA-PSS, salt = digest) and verifies it
 * with the default provider. */
static int sign_verify(EVP_PKEY *pk, const char *md, int pss)
{
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    int ok = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    EVP_PKEY *pub = software_twin(pk);
    if (m == NULL || v == NULL || pub == NULL || EVP_DigestSignInit_ex(m, &pc, md, lib, NULL, pk, NULL) != 1)
        goto out;
    if (pss && (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) <= 0))
        goto out;
    if (EVP_DigestSign(m, sig, &siglen, (const unsigned char *)msg, sizeof msg) != 1)
        goto out;
    if (EVP_DigestVerifyInit_ex(v, &pc, md, NULL, NULL, pub, NULL) != 1)
        goto out;
    if (pss && (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0
                || EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_AUTO) <= 0))
        goto out;
    ok = EVP_DigestVerify(v, sig, siglen, (const unsigned char *)msg, sizeof msg) == 1;
out:
    if (!ok)
        ERR_print_errors_fp(stderr);
    EVP_PKEY_free(pub);
    EVP_MD_CTX_free(m);
    EVP_MD_CTX_free(v);
    return ok;
}

/* The text of the error queue (cleared), for matching messages. */
static char errtext[4096];
static const char *errors(void)
{
    BIO *b = BIO_new(BIO_s_mem());
    ERR_print_errors(b);
    int n = BIO_read(b, errtext, sizeof errtext - 1);
    errtext[n > 0 ? n : 0] = '\0';
    BIO_free(b);
    return errtext;
}

static int mac(cu_fixture *f, const char *attrs, const unsigned char *in, size_t len, unsigned char out[32])
{
    char *u = key_uri(f, attrs, pin_file);
    EVP_MAC *m = EVP_MAC_fetch(lib, "CUSTOS-HMAC", "provider=custos");
    EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM p[] = { OSSL_PARAM_utf8_string("key-uri", u, 0), OSSL_PARAM_END };
    size_t outl = 0;
    int ok = c != NULL && EVP_MAC_init(c, NULL, 0, p) && EVP_MAC_update(c, in, len / 2)
             && EVP_MAC_update(c, in + len / 2, len - len / 2) && EVP_MAC_final(c, out, &outl, 32) && outl == 32;
    /* Again on the same context: same key, same result. */
    unsigned char again[32];
    ok = ok && EVP_MAC_init(c, NULL, 0, NULL) && EVP_MAC_update(c, in, len)
         && EVP_MAC_final(c, again, &outl, sizeof again) && memcmp(again, out, 32) == 0;
    if (!ok)
        ERR_print_errors_fp(stderr);
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
    free(u);
    return ok;
}

/* ---- cases ---- */

static void test_two_tokens(void)
{
    EVP_PKEY *ec_h = load_key(hsm, "object=ec"), *rsa_h = load_key(hsm, "object=rsa");
    EVP_PKEY *ec_t = load_key(tpm, "object=ec"), *rsa_t = load_key(tpm, "object=rsa");
    CU_ASSERT_FATAL(ec_h != NULL && rsa_h != NULL && ec_t != NULL && rsa_t != NULL);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT(sign_verify(ec_h, "SHA256", 0));
        CU_ASSERT(sign_verify(ec_t, "SHA256", 0));
        CU_ASSERT(sign_verify(rsa_h, "SHA256", 0));
        CU_ASSERT(sign_verify(rsa_t, "SHA384", 0));
        CU_ASSERT(sign_verify(rsa_h, "SHA256", 1));
        CU_ASSERT(sign_verify(rsa_t, "SHA256", 1));
    }
    CU_ASSERT(sign_verify(ec_h, "SHA384", 0));
    CU_ASSERT(sign_verify(ec_t, "SHA512", 0));
    EVP_PKEY_free(ec_h);
    EVP_PKEY_free(rsa_h);
    EVP_PKEY_free(ec_t);
    EVP_PKEY_free(rsa_t);
}

static void test_match_and_certificate(void)
{
    EVP_PKEY *ec = load_key(hsm, "object=ec"), *other = load_key(tpm, "object=ec");
    CU_ASSERT_FATAL(ec != NULL && other != NULL);
    EVP_PKEY *twin = software_twin(ec);
    CU_ASSERT(EVP_PKEY_eq(ec, twin) == 1);
    CU_ASSERT(EVP_PKEY_eq(twin, ec) == 1);
    CU_ASSERT(EVP_PKEY_eq(other, twin) != 1);
    /* A self-signed certificate made with the token key. */
    X509 *x = X509_new_ex(lib, NULL);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"c-hsm", -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, bc, -1);
    X509_EXTENSION_free(bc);
    CU_ASSERT(X509_set_pubkey(x, ec) == 1);
    CU_ASSERT(X509_sign(x, ec, EVP_sha256()) > 0);
    CU_ASSERT(X509_verify(x, twin) == 1);
    CU_ASSERT(X509_check_private_key(x, ec) == 1);
    CU_ASSERT(X509_check_private_key(x, other) != 1);
    ERR_clear_error();

    /* The certificate as a trust anchor in the token, found by subject
     * through X509_STORE_load_store (as the provisioning engine does). */
    unsigned char *der = NULL;
    int dl = i2d_X509(x, &der);
    cu_token *t = NULL;
    cu_object *o = NULL;
    uint8_t id = 0x21;
    CU_ASSERT_FATAL(dl > 0 && cu_fixture_token_open(hsm, PIN, &t) == CU_OK);
    CU_ASSERT(cu_token_import_cert(t, der, (size_t)dl, "anchor", &id, 1, &o) == CU_OK);
    cu_object_free(o);
    cu_token_unref(t);
    OPENSSL_free(der);
    EVP_PKEY *lk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *leaf = X509_new();
    X509_NAME *ln = X509_NAME_new();
    X509_NAME_add_entry_by_txt(ln, "CN", MBSTRING_ASC, (const unsigned char *)"leaf", -1, -1, 0);
    X509_set_version(leaf, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(leaf), 8);
    X509_gmtime_adj(X509_getm_notBefore(leaf), 0);
    X509_gmtime_adj(X509_getm_notAfter(leaf), 3600);
    X509_set_subject_name(leaf, ln);
    X509_set_issuer_name(leaf, n);
    X509_set_pubkey(leaf, lk);
    CU_ASSERT(X509_sign(leaf, ec, EVP_sha256()) > 0);
    char *store_uri = key_uri(hsm, "type=cert", pin_file);
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *vc = X509_STORE_CTX_new_ex(lib, NULL);
    CU_ASSERT(X509_STORE_load_store_ex(st, store_uri, lib, NULL) == 1);
    CU_ASSERT(X509_STORE_CTX_init(vc, st, leaf, NULL) == 1);
    int vr = X509_verify_cert(vc);
    if (vr != 1)
        fprintf(stderr, "verify: %s\n", X509_verify_cert_error_string(X509_STORE_CTX_get_error(vc)));
    CU_ASSERT(vr == 1);
    ERR_clear_error();
    X509_STORE_CTX_free(vc);
    X509_STORE_free(st);
    free(store_uri);
    X509_NAME_free(ln);
    X509_free(leaf);
    EVP_PKEY_free(lk);
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(twin);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(other);
}

static void test_hmac(void)
{
    unsigned char want[32], got[32], big_want[32];
    unsigned int wl = 0;
    size_t big_len = 200000;
    unsigned char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i * 31);
    HMAC(EVP_sha256(), sas_key, sizeof sas_key, (const unsigned char *)msg, sizeof msg, want, &wl);
    HMAC(EVP_sha256(), sas_key, sizeof sas_key, big, big_len, big_want, &wl);
    CU_ASSERT(mac(hsm, "object=sas", (const unsigned char *)msg, sizeof msg, got) && memcmp(got, want, 32) == 0);
    CU_ASSERT(mac(tpm, "object=sas", (const unsigned char *)msg, sizeof msg, got) && memcmp(got, want, 32) == 0);
    /* Longer than the provider's buffer: streamed through C_SignUpdate. */
    CU_ASSERT(mac(hsm, "object=sas", big, big_len, got) && memcmp(got, big_want, 32) == 0);
    free(big);
}

static void test_keygen(void)
{
    struct {
        cu_fixture **f;
        const char *alg, *attrs;
        int bits;
    } cases[] = {
        { &hsm, "EC", "object=gen-ec;id=%77", 0 },
        { &tpm, "EC", "object=gen-ec;id=%78", 0 },
        { &hsm, "RSA", "object=gen-rsa;id=%79", 2048 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *u = key_uri(*cases[i].f, cases[i].attrs, pin_file);
        EVP_PKEY *pk = NULL;
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(lib, cases[i].alg, "provider=custos");
        size_t bits = (size_t)cases[i].bits;
        OSSL_PARAM p[3], *q = p;
        *q++ = OSSL_PARAM_construct_utf8_string("pkcs11-uri", u, 0);
        if (bits)
            *q++ = OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS, &bits);
        else
            *q++ = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0);
        *q = OSSL_PARAM_construct_end();
        CU_ASSERT(c != NULL && EVP_PKEY_keygen_init(c) == 1 && EVP_PKEY_CTX_set_params(c, p) == 1
                  && EVP_PKEY_generate(c, &pk) == 1);
        if (pk == NULL)
            ERR_print_errors_fp(stderr);
        CU_ASSERT(pk != NULL && sign_verify(pk, "SHA256", 0));
        /* It is on the token: the store finds it by its label. */
        EVP_PKEY *again = load(u, OSSL_STORE_INFO_PKEY);
        CU_ASSERT(again != NULL && pk != NULL && EVP_PKEY_eq(again, pk) == 1);
        EVP_PKEY_free(again);
        EVP_PKEY_free(pk);
        EVP_PKEY_CTX_free(c);
        free(u);
    }
}

static void test_fork(void)
{
    EVP_PKEY *ec = load_key(hsm, "object=ec");
    CU_ASSERT_FATAL(ec != NULL);
    CU_ASSERT(sign_verify(ec, "SHA256", 0));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(sign_verify(ec, "SHA256", 0) && sign_verify(ec, "SHA384", 0) ? 0 : 1);
    int st = -1;
    CU_ASSERT(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT(sign_verify(ec, "SHA256", 0)); /* the parent still signs */
    EVP_PKEY_free(ec);

    /* tpm2-pkcs11 cannot start afresh in a child (its default quirk
     * fork-unsafe): the child's signature is refused, saying why, and the
     * parent's key still signs. */
    EVP_PKEY *tk = load_key(tpm, "object=ec");
    CU_ASSERT_FATAL(tk != NULL);
    CU_ASSERT(sign_verify(tk, "SHA256", 0));
    fflush(NULL);
    if ((pid = fork()) == 0) {
        unsigned char sig[256];
        size_t siglen = sizeof sig;
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        int signed_ = m != NULL && EVP_DigestSignInit_ex(m, NULL, "SHA256", lib, NULL, tk, NULL) == 1
                      && EVP_DigestSign(m, sig, &siglen, (const unsigned char *)msg, sizeof msg) == 1;
        const char *why = NULL;
        unsigned long e;
        while ((e = ERR_get_error_all(NULL, NULL, NULL, &why, NULL)) != 0)
            if (why != NULL && strstr(why, "cannot be used in a fork()ed child") != NULL)
                break;
        _exit(signed_ ? 2 : e == 0 ? 3 : 0);
    }
    st = -1;
    CU_ASSERT(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st));
    if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
        fprintf(stderr, "tpm2 child: %s\n", WEXITSTATUS(st) == 2 ? "signed" : "failed without naming fork()");
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT(sign_verify(tk, "SHA256", 0));
    EVP_PKEY_free(tk);
}

/* fork() while other threads use the provider (its caches' locks, the token
 * layer's, the module's own mutexes): every child must be able to use it at
 * once, none may hang on a lock a thread of the parent held at the fork
 * (alarm: a stuck child dies of it). How often a fork meets a held lock is
 * chance; the token layer's own tests hold each of its locks on purpose and
 * keep a thread inside the module (tests/p11). On custos-soft, which takes
 * its own lock around fork, and on SoftHSM2, which does not (the token
 * layer's module gate waits for the threads inside it). */
static atomic_bool busy_stop;

static void *busy_mac(void *arg)
{
    cu_fixture *f = arg;
    unsigned char out[32];
    while (!atomic_load(&busy_stop))
        if (!mac(f, "object=sas", (const unsigned char *)msg, sizeof msg, out))
            return (void *)1;
    return NULL;
}

static void fork_busy(cu_fixture *f)
{
    enum { THREADS = 2, FORKS = 100 };
    pthread_t th[THREADS];
    unsigned char out[32];
    int good = 0;
    atomic_store(&busy_stop, false);
    CU_ASSERT_FATAL(mac(f, "object=sas", (const unsigned char *)msg, sizeof msg, out));
    for (int i = 0; i < THREADS; i++)
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, busy_mac, f) == 0);
    for (int i = 0; i < FORKS; i++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(10);
            _exit(mac(f, "object=sas", (const unsigned char *)msg, sizeof msg, out) ? 0 : 1);
        }
        int st = -1;
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            good++;
        else if (WIFSIGNALED(st))
            fprintf(stderr, "fork %d: the child died of signal %d (SIGALRM: stuck on a lock)\n", i, WTERMSIG(st));
    }
    atomic_store(&busy_stop, true);
    void *ret;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], &ret);
        CU_ASSERT_PTR_NULL(ret);
    }
    CU_ASSERT_EQUAL(good, FORKS);
}

static void test_fork_busy(void)
{
#ifdef __SANITIZE_ADDRESS__
    /* GCC 12's AddressSanitizer takes no lock of its allocator around fork:
     * a child forked while another thread allocates hangs inside it. */
    return;
#endif
    fork_busy(soft);
    fork_busy(hsm);
}

/* Software keys in a context where custos is met before default: generated,
 * built from data, signing, verifying and deriving as usual. */
static void test_software_keys(void)
{
    EVP_PKEY *a = EVP_PKEY_Q_keygen(lib, NULL, "EC", "P-256"), *b = EVP_PKEY_Q_keygen(lib, NULL, "EC", "P-256");
    CU_ASSERT_FATAL(a != NULL && b != NULL);
    CU_ASSERT(sign_verify(a, "SHA256", 0));
    /* The same key pair through EVP_PKEY_fromdata. */
    OSSL_PARAM *data = NULL;
    EVP_PKEY *c = NULL;
    EVP_PKEY_CTX *fc = EVP_PKEY_CTX_new_from_name(lib, "EC", NULL);
    CU_ASSERT(EVP_PKEY_todata(a, EVP_PKEY_KEYPAIR, &data) == 1);
    CU_ASSERT(fc != NULL && EVP_PKEY_fromdata_init(fc) == 1 && EVP_PKEY_fromdata(fc, &c, EVP_PKEY_KEYPAIR, data) == 1);
    CU_ASSERT(c != NULL && sign_verify(c, "SHA384", 0) && EVP_PKEY_eq(a, c) == 1);
    /* ECDH both ways gives one secret. */
    unsigned char s1[64], s2[64];
    size_t l1 = sizeof s1, l2 = sizeof s2;
    EVP_PKEY_CTX *d1 = EVP_PKEY_CTX_new_from_pkey(lib, a, NULL), *d2 = EVP_PKEY_CTX_new_from_pkey(lib, b, NULL);
    CU_ASSERT(EVP_PKEY_derive_init(d1) == 1 && EVP_PKEY_derive_set_peer(d1, b) == 1 && EVP_PKEY_derive(d1, s1, &l1) == 1);
    CU_ASSERT(EVP_PKEY_derive_init(d2) == 1 && EVP_PKEY_derive_set_peer(d2, a) == 1 && EVP_PKEY_derive(d2, s2, &l2) == 1);
    CU_ASSERT(l1 == 32 && l1 == l2 && memcmp(s1, s2, l1) == 0);
    /* RSA encryption with a software key (the default provider's). */
    EVP_PKEY *r = EVP_PKEY_Q_keygen(lib, NULL, "RSA", (size_t)2048);
    unsigned char ct[256], pt[256];
    size_t cl = sizeof ct, pl = sizeof pt;
    EVP_PKEY_CTX *e = EVP_PKEY_CTX_new_from_pkey(lib, r, NULL), *dd = EVP_PKEY_CTX_new_from_pkey(lib, r, NULL);
    CU_ASSERT(e != NULL && EVP_PKEY_encrypt_init(e) == 1 && EVP_PKEY_encrypt(e, ct, &cl, (const unsigned char *)msg, 16) == 1);
    CU_ASSERT(dd != NULL && EVP_PKEY_decrypt_init(dd) == 1 && EVP_PKEY_decrypt(dd, pt, &pl, ct, cl) == 1 && pl == 16
              && memcmp(pt, msg, 16) == 0);
    ERR_print_errors_fp(stderr);
    EVP_PKEY_CTX_free(e);
    EVP_PKEY_CTX_free(dd);
    EVP_PKEY_free(r);
    EVP_PKEY_CTX_free(d1);
    EVP_PKEY_CTX_free(d2);
    EVP_PKEY_CTX_free(fc);
    OSSL_PARAM_free(data);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    EVP_PKEY_free(c);
}

/* Loading the URI fails and the error queue says why. */
static int load_fails_with(cu_fixture *f, const char *attrs, const char *pinfile, int expect, const char *text)
{
    char *u = f != NULL ? key_uri(f, attrs, pinfile) : strdup(attrs);
    ERR_clear_error();
    EVP_PKEY *pk = load(u, expect);
    const char *e = errors();
    int ok = pk == NULL && strstr(e, text) != NULL;
    if (!ok)
        fprintf(stderr, "%s: wanted \"%s\" in:\n%s\n", u, text, e);
    EVP_PKEY_free(pk);
    free(u);
    return ok;
}

static void test_bad_input(void)
{
    CU_ASSERT(load_fails_with(NULL, "pkcs11:token=%zz;object=ec", pin_file, OSSL_STORE_INFO_PKEY, "malformed pkcs11 URI"));
    CU_ASSERT(load_fails_with(hsm, "object=ec;flavour=mint", pin_file, OSSL_STORE_INFO_PKEY, "malformed pkcs11 URI"));
    CU_ASSERT(load_fails_with(hsm, "object=nothing", pin_file, OSSL_STORE_INFO_PKEY, "no object matches the URI"));
    CU_ASSERT(load_fails_with(hsm, "object=twin", pin_file, OSSL_STORE_INFO_PKEY, "matches 2 private keys"));
    CU_ASSERT(load_fails_with(tpm, "object=ec", bad_pin_file, OSSL_STORE_INFO_PKEY, "PIN incorrect"));
    CU_ASSERT(load_fails_with(hsm, "object=ec;type=public", pin_file, OSSL_STORE_INFO_PKEY, "a private key is needed"));

    /* A key type the mechanism does not take. */
    EVP_PKEY *ec = load_key(hsm, "object=ec");
    CU_ASSERT_FATAL(ec != NULL);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(lib, ec, NULL);
    CU_ASSERT(EVP_PKEY_sign_init(pc) == 1);
    CU_ASSERT(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) <= 0);
    ERR_clear_error();
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(ec);
    /* A digest of the wrong length for the digest named. */
    EVP_PKEY *rsa = load_key(hsm, "object=rsa");
    CU_ASSERT_FATAL(rsa != NULL);
    pc = EVP_PKEY_CTX_new_from_pkey(lib, rsa, NULL);
    unsigned char sig[512], junk[20] = { 0 };
    size_t siglen = sizeof sig;
    CU_ASSERT(EVP_PKEY_sign_init(pc) == 1 && EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1);
    CU_ASSERT(EVP_PKEY_sign(pc, sig, &siglen, junk, 7) <= 0 && strstr(errors(), "is not a SHA2-256 digest") != NULL);
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(rsa);

    /* MAC: no key URI, a raw key, an EC key. */
    EVP_MAC *m = EVP_MAC_fetch(lib, "CUSTOS-HMAC", "provider=custos");
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(m);
    ERR_clear_error();
    CU_ASSERT(EVP_MAC_init(c, NULL, 0, NULL) == 0 && strstr(errors(), "key-uri") != NULL);
    CU_ASSERT(EVP_MAC_init(c, sas_key, sizeof sas_key, NULL) == 0 && strstr(errors(), "raw keys") != NULL);
    char *u = key_uri(hsm, "object=ec", pin_file);
    OSSL_PARAM p[] = { OSSL_PARAM_utf8_string("key-uri", u, 0), OSSL_PARAM_END };
    CU_ASSERT(EVP_MAC_init(c, NULL, 0, p) == 0 && strstr(errors(), "secret-key") != NULL);
    free(u);
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(m);
}

/* The TPM goes away under a loaded key: signing fails, nothing crashes. */
static void test_tpm_removed(void)
{
    EVP_PKEY *ec = load_key(tpm, "object=ec");
    CU_ASSERT_FATAL(ec != NULL);
    CU_ASSERT(sign_verify(ec, "SHA256", 0));
    CU_ASSERT(cu_fixture_stop(tpm) == CU_OK);
    ERR_clear_error();
    unsigned char sig[128];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    CU_ASSERT(EVP_DigestSignInit_ex(m, NULL, "SHA256", lib, NULL, ec, NULL) == 1);
    CU_ASSERT(EVP_DigestSign(m, sig, &siglen, (const unsigned char *)msg, sizeof msg) != 1);
    CU_ASSERT(strstr(errors(), "signing on the token") != NULL);
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(ec);
}

/* SoftHSM2 finalized under the provider (as if its token were pulled). */
static void test_module_finalized(void)
{
    EVP_PKEY *ec = load_key(hsm, "object=ec");
    CU_ASSERT_FATAL(ec != NULL);
    CU_ASSERT(sign_verify(ec, "SHA256", 0));
    void *h = dlopen(cu_fixture_get0_module(hsm), RTLD_NOW | RTLD_NOLOAD);
    CK_C_GetFunctionList gfl = h ? (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList") : NULL;
    CK_FUNCTION_LIST *fl = NULL;
    CU_ASSERT_FATAL(gfl != NULL && gfl(&fl) == CKR_OK);
    CU_ASSERT(fl->C_Finalize(NULL) == CKR_OK);
    ERR_clear_error();
    unsigned char sig[128];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    CU_ASSERT(EVP_DigestSignInit_ex(m, NULL, "SHA256", lib, NULL, ec, NULL) == 1);
    CU_ASSERT(EVP_DigestSign(m, sig, &siglen, (const unsigned char *)msg, sizeof msg) != 1);
    const char *e = errors();
    CU_ASSERT(strstr(e, "CKR_CRYPTOKI_NOT_INITIALIZED") != NULL || strstr(e, "signing on the token") != NULL);
    /* A new load fails cleanly too. */
    CU_ASSERT(load_fails_with(hsm, "object=rsa", pin_file, OSSL_STORE_INFO_PKEY, "custos"));
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(ec);
    dlclose(h);
}

#define IN_OWN_CONTEXT(fn)                 \
    static void fn##_case(void)            \
    {                                      \
        CU_ASSERT_FATAL(case_init() == 0); \
        fn();                              \
        case_cleanup();                    \
    }
IN_OWN_CONTEXT(test_two_tokens)
IN_OWN_CONTEXT(test_match_and_certificate)
IN_OWN_CONTEXT(test_hmac)
IN_OWN_CONTEXT(test_keygen)
IN_OWN_CONTEXT(test_fork)
IN_OWN_CONTEXT(test_fork_busy)
IN_OWN_CONTEXT(test_software_keys)
IN_OWN_CONTEXT(test_bad_input)
IN_OWN_CONTEXT(test_tpm_removed)
IN_OWN_CONTEXT(test_module_finalized)

static const cu_test_case cases[] = {
    { "two token kinds in one library context", test_two_tokens_case },
    { "match with the software twin, certificate signing", test_match_and_certificate_case },
    { "CUSTOS-HMAC equals HMAC-SHA256 on both tokens", test_hmac_case },
    { "EVP_PKEY_generate with pkcs11-uri", test_keygen_case },
    { "fork()ed child signs (tpm2-pkcs11: refused)", test_fork_case },
    { "fork() while threads use the provider", test_fork_busy_case },
    { "software keys with custos met first", test_software_keys_case },
    { "bad input: clear errors", test_bad_input_case },
    { "TPM removed under a loaded key", test_tpm_removed_case },
    { "module finalized under a loaded key", test_module_finalized_case },
    { NULL, NULL },
};

int main(void)
{
    if (cu_test_add_suite("engine", suite_init, suite_cleanup, cases) != 0)
        return 1;
    return cu_test_run();
}
