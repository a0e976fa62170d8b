/* custos token check: a conformance report for a PKCS#11 module. Every
 * operation Custos needs is run for real on a token and cross-checked with
 * OpenSSL in software; the exit status is non-zero when a required one fails. */
#include "cli.h"
#include "token_util.h"

#include <custos/token.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { R_PASS, R_FAIL, R_UNSUPPORTED } result;

typedef struct row {
    char name[64];
    bool required;
    result res;
    char detail[320];
} row;

typedef struct report {
    row rows[48];
    size_t n;
} report;

static row *add(report *r, const char *name, bool required, result res, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static row *add(report *r, const char *name, bool required, result res, const char *fmt, ...)
{
    if (r->n >= sizeof r->rows / sizeof r->rows[0])
        return NULL;
    row *w = &r->rows[r->n++];
    snprintf(w->name, sizeof w->name, "%s", name);
    w->required = required;
    w->res = res;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->detail, sizeof w->detail, fmt, ap);
    va_end(ap);
    return w;
}

/* Records the outcome of a layer call: pass, or fail/unsupported with the
 * token's own message. */
static bool note(report *r, const char *name, bool required, cu_rc rc, const char *ok_detail)
{
    if (rc == CU_OK) {
        add(r, name, required, R_PASS, "%s", ok_detail ? ok_detail : "");
        return true;
    }
    result res = (rc == CU_E_UNSUPPORTED || rc == CU_E_MECHANISM) ? R_UNSUPPORTED : R_FAIL;
    if (required)
        res = R_FAIL;
    add(r, name, required, res, "%s: %s", cu_rc_str(rc), cu_err_last()->msg);
    return false;
}

static const uint8_t msg[] = "custos token check: the message every signature covers";

static void check_custody(report *r, const char *name, bool required, cu_object *k)
{
    cu_custody c;
    if (cu_object_custody(k, &c) != CU_OK) {
        note(r, name, required, cu_err_last()->rc, NULL);
        return;
    }
    bool ok = c.sensitive == 1 && c.extractable == 0 && c.always_sensitive == 1 && c.never_extractable == 1 &&
              c.local == 1;
    add(r, name, required, ok ? R_PASS : R_FAIL,
        "sensitive=%d extractable=%d always_sensitive=%d never_extractable=%d local=%d", c.sensitive, c.extractable,
        c.always_sensitive, c.never_extractable, c.local);
}

static cu_object *keygen(report *r, cu_token *t, cu_keygen_type type, bool required, cu_object **made, size_t *n_made)
{
    char name[64], label[32];
    cu_object *k = NULL;
    snprintf(name, sizeof name, "generate %s", cu_keygen_type_str(type));
    snprintf(label, sizeof label, "custos-check-%s", cu_keygen_type_str(type));
    if (!note(r, name, required, cu_token_keygen(t, type, label, NULL, 0, &k), "in the token"))
        return NULL;
    made[(*n_made)++] = k;
    snprintf(name, sizeof name, "custody of %s", cu_keygen_type_str(type));
    check_custody(r, name, required, k);
    return k;
}

/* Signs msg on the token and verifies the signature with OpenSSL in software. */
static void sign_check(report *r, const char *name, bool required, cu_object *k, cu_sig s)
{
    uint8_t sig[1024];
    size_t len = sizeof sig;
    if (k == NULL) {
        add(r, name, required, required ? R_FAIL : R_UNSUPPORTED, "no key to sign with");
        return;
    }
    cu_rc rc = cu_sign(k, &s, msg, sizeof msg, sig, &len);
    if (rc != CU_OK) {
        note(r, name, required, rc, NULL);
        return;
    }
    rc = cu_verify(k, &s, msg, sizeof msg, sig, len);
    if (rc != CU_OK) {
        add(r, name, required, R_FAIL, "signature made but OpenSSL does not verify it: %s", cu_err_last()->msg);
        return;
    }
    sig[len / 2] ^= 0x01;
    rc = cu_verify(k, &s, msg, sizeof msg, sig, len);
    add(r, name, required, rc == CU_E_VERIFY ? R_PASS : R_FAIL,
        rc == CU_E_VERIFY ? "%zu-byte signature verified by OpenSSL (and a flipped bit refused)"
                          : "a corrupted signature was accepted (%zu bytes)",
        len);
}

typedef struct thread_arg {
    cu_object *key;
    int ok;
} thread_arg;

enum { CHECK_THREADS = 4, CHECK_PER_THREAD = 50 };

static void *thread_sign(void *p)
{
    thread_arg *a = p;
    cu_sig s = {CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1};
    for (int i = 0; i < CHECK_PER_THREAD; i++) {
        uint8_t m[32], sig[132];
        size_t len = sizeof sig;
        RAND_bytes(m, sizeof m);
        if (cu_sign(a->key, &s, m, sizeof m, sig, &len) == CU_OK && cu_verify(a->key, &s, m, sizeof m, sig, len) == CU_OK)
            a->ok++;
    }
    return NULL;
}

static void check_hmac(report *r, cu_token *t, cu_object *generated, cu_object **made, size_t *n_made)
{
    uint8_t key[32], mac[32], want[32];
    unsigned int wlen = 0;
    size_t len = sizeof mac;
    cu_sig s = {CU_SIG_HMAC, CU_HASH_SHA256, 0, 0};
    cu_object *k = NULL;
    RAND_bytes(key, sizeof key);
    cu_rc rc = cu_token_import_hmac(t, key, sizeof key, "custos-check-hmac-known", NULL, 0, &k);
    if (rc == CU_OK) {
        made[(*n_made)++] = k;
        add(r, "import HMAC key", false, R_PASS, "C_CreateObject of a generic secret");
        rc = cu_sign(k, &s, msg, sizeof msg, mac, &len);
        HMAC(EVP_sha256(), key, sizeof key, msg, sizeof msg, want, &wlen);
        if (rc != CU_OK)
            note(r, "HMAC-SHA256", true, rc, NULL);
        else
            add(r, "HMAC-SHA256", true, len == 32 && memcmp(mac, want, 32) == 0 ? R_PASS : R_FAIL,
                len == 32 && memcmp(mac, want, 32) == 0 ? "equals OpenSSL's HMAC of the same key"
                                                        : "differs from OpenSSL's HMAC of the same key");
    } else {
        note(r, "import HMAC key", false, rc, NULL);
        if (generated == NULL) {
            add(r, "HMAC-SHA256", true, R_FAIL,
                "no HMAC key could be generated or imported through PKCS#11 on this token");
        } else {
            rc = cu_sign(generated, &s, msg, sizeof msg, mac, &len);
            add(r, "HMAC-SHA256", true, rc == CU_OK && len == 32 ? R_PASS : R_FAIL,
                rc == CU_OK ? "MAC made with a generated key (not comparable with OpenSSL: key unknown)"
                            : cu_err_last()->msg);
        }
    }
    OPENSSL_cleanse(key, sizeof key);
}

static void check_cert(report *r, cu_token *t, cu_object **made, size_t *n_made)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    unsigned char *der = NULL;
    uint8_t *back = NULL;
    size_t blen = 0;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"custos-check",
                               -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_sign(x, pk, EVP_sha256());
    int len = i2d_X509(x, &der);
    cu_object *c = NULL;
    cu_rc rc = len > 0 ? cu_token_import_cert(t, der, (size_t)len, "custos-check-cert", NULL, 0, &c) : CU_E_CRYPTO;
    if (note(r, "import certificate", true, rc, NULL)) {
        made[(*n_made)++] = c;
        rc = cu_object_value(c, &back, &blen);
        r->rows[r->n - 1].res = rc == CU_OK && blen == (size_t)len && memcmp(back, der, blen) == 0 ? R_PASS : R_FAIL;
        snprintf(r->rows[r->n - 1].detail, sizeof r->rows[0].detail, "%s",
                 r->rows[r->n - 1].res == R_PASS ? "stored and read back unchanged" : "read back differs");
    }
    free(back);
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static void destroy_made(cu_token *t, cu_object **made, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* The public half of a generated pair shares the private key's id. */
        size_t idlen = 0;
        const uint8_t *id = cu_object_id(made[i], &idlen);
        if (cu_object_class(made[i]) == CU_CLASS_PRIVATE_KEY && idlen > 0 && idlen <= 64) {
            char uri[32 + 3 * 64] = "pkcs11:type=public;id=";
            size_t o = strlen(uri);
            for (size_t k = 0; k < idlen; k++, o += 3)
                snprintf(uri + o, sizeof uri - o, "%%%02x", id[k]);
            cu_object **pubs = NULL;
            size_t np = 0;
            if (cu_token_find_all(t, uri, CU_CLASS_PUBLIC_KEY, &pubs, &np) == CU_OK)
                for (size_t k = 0; k < np; k++)
                    cu_object_destroy(pubs[k]);
            cu_objects_free(pubs, np);
        }
        cu_object_destroy(made[i]);
        cu_object_free(made[i]);
    }
}

static void print_report(const report *r, const char *module, const cu_token_desc *d, bool json)
{
    size_t pass = 0, fail = 0, unsup = 0;
    for (size_t i = 0; i < r->n; i++) {
        pass += r->rows[i].res == R_PASS;
        fail += r->rows[i].res == R_FAIL;
        unsup += r->rows[i].res == R_UNSUPPORTED;
    }
    static const char *names[] = {"pass", "FAIL", "unsupported"};
    if (json) {
        printf("{\"module\":");
        cu_cli_json_str(stdout, module);
        if (d) {
            printf(",\"token\":{");
            cu_tok_json_fields(d);
            printf("}");
        }
        printf(",\"checks\":[");
        for (size_t i = 0; i < r->n; i++) {
            printf("%s{\"name\":", i ? "," : "");
            cu_cli_json_str(stdout, r->rows[i].name);
            printf(",\"required\":%s,\"result\":\"%s\",\"detail\":", r->rows[i].required ? "true" : "false",
                   r->rows[i].res == R_PASS ? "pass" : r->rows[i].res == R_FAIL ? "fail" : "unsupported");
            cu_cli_json_str(stdout, r->rows[i].detail);
            printf("}");
        }
        printf("],\"passed\":%zu,\"failed\":%zu,\"unsupported\":%zu}\n", pass, fail, unsup);
        return;
    }
    printf("module: %s\n", module);
    if (d)
        printf("token:  '%s' (%s, %s, serial %s)\n", d->label, d->manufacturer, d->model, d->serial);
    printf("\n%-12s %-4s %-28s %s\n", "RESULT", "REQ", "CHECK", "DETAIL");
    for (size_t i = 0; i < r->n; i++)
        printf("%-12s %-4s %-28s %s\n", names[r->rows[i].res], r->rows[i].required ? "yes" : "no", r->rows[i].name,
               r->rows[i].detail);
    printf("\nchecks: %zu ok, %zu failed, %zu unsupported%s\n", pass, fail, unsup,
           fail ? " -- a required operation failed" : "");
}

int cu_cmd_token_check(int argc, char **argv)
{
    const char *module = NULL, *token_uri = NULL, *pin_source = NULL;
    bool json = false, help = false;
    cu_cli_opt opts[] = {
        {"--module", &module, NULL, NULL, NULL, 0},
        {"--token", &token_uri, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("token check", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos token check --module PATH [--token URI] [--pin-source FILE] [--json]\n\n"
               "The PIN of --token comes from --pin-source, CUSTOS_PIN, the URI's pin-value\n"
               "or pin-source, else a prompt on a terminal.\n\n"
               "Runs every operation Custos needs on a token of the module, for real, and\n"
               "cross-checks each result with OpenSSL in software: key generation and\n"
               "custody attributes, ECDSA, RSA PKCS#1 v1.5 and PSS signatures, HMAC-SHA256,\n"
               "certificate storage, 4 threads signing, a wrong PIN, a missing object.\n"
               "With --token it works on that token (its own test objects are destroyed\n"
               "afterwards); without, it initializes a scratch token in the first\n"
               "uninitialized slot (for SoftHSM2, point SOFTHSM2_CONF at a scratch config).\n"
               "Exit status 1 when a required operation fails.\n");
        return CU_EXIT_OK;
    }
    if (module == NULL)
        return cu_cli_usage("token check", "--module PATH is required");

    report r = {0};
    cu_module *m = NULL;
    cu_token *t = NULL;
    char *pin = NULL, uri[1024];
    cu_object *made[32];
    size_t n_made = 0;
    const cu_token_desc *desc = NULL;

    if (!note(&r, "load and initialize", true, cu_module_load(module, 0, &m), "through p11-kit"))
        goto report;
    cu_token_desc *slots = NULL;
    size_t n_slots = 0;
    if (!note(&r, "list slots", true, cu_module_slots(m, &slots, &n_slots), NULL))
        goto report;
    snprintf(r.rows[r.n - 1].detail, sizeof r.rows[0].detail, "%zu slot(s)", n_slots);

    if (token_uri == NULL) {
        uint8_t rnd[8];
        char so[17], label[33];
        size_t i;
        for (i = 0; i < n_slots && (!slots[i].present || slots[i].initialized); i++)
            ;
        if (i == n_slots) {
            free(slots);
            add(&r, "scratch token", true, R_FAIL, "no uninitialized slot: give --token URI");
            goto report;
        }
        RAND_bytes(rnd, sizeof rnd);
        snprintf(label, sizeof label, "custos-check-%02x%02x%02x", rnd[0], rnd[1], rnd[2]);
        snprintf(so, sizeof so, "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
                 rnd[6], rnd[7]);
        RAND_bytes(rnd, sizeof rnd);
        if ((pin = malloc(17)) == NULL)
            goto report;
        snprintf(pin, 17, "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
                 rnd[7]);
        cu_rc irc = cu_module_init_token(m, slots[i].slot_id, label, so, pin);
        OPENSSL_cleanse(so, sizeof so);
        free(slots);
        if (!note(&r, "initialize scratch token", true, irc, label))
            goto report;
        snprintf(uri, sizeof uri, "pkcs11:token=%s?module-path=%s", label, cu_module_path(m));
    } else {
        free(slots);
        snprintf(uri, sizeof uri, "%s", token_uri);
        /* --pin-source, CUSTOS_PIN, the URI's own PIN, else a prompt. */
        if (pin_source != NULL || getenv("CUSTOS_PIN") != NULL) {
            pin = cu_cli_read_pin(pin_source, "CUSTOS_PIN", "User PIN");
        } else if (cu_uri_pin(uri, &pin) != CU_OK) {
            note(&r, "PIN from the URI", true, cu_err_last()->rc, NULL);
            goto report;
        } else if (pin == NULL && isatty(STDIN_FILENO)) {
            pin = cu_cli_read_pin(NULL, "CUSTOS_PIN", "User PIN");
        }
    }

    /* Open without logging in, try a wrong PIN first (the module's own
     * answer, before this process holds a login), then the right one. */
    cu_token_opts o = {.module = module, .no_login = true, .pin = pin};
    if (!note(&r, "open token", true, cu_token_open(uri, &o, &t), NULL))
        goto report;
    desc = cu_token_get0_desc(t);
    cu_rc wrc = cu_token_login(t, "custos-wrong-pin-0");
    add(&r, "wrong PIN refused", true, wrc == CU_E_PIN_INCORRECT ? R_PASS : R_FAIL, "%s",
        wrc == CU_E_PIN_INCORRECT ? cu_err_last()->msg : wrc == CU_OK ? "a wrong PIN was accepted" : cu_err_last()->msg);
    if (pin == NULL) {
        add(&r, "login", true, R_FAIL, "no PIN: give --pin-source FILE, CUSTOS_PIN or the URI's pin-source");
        goto report;
    }
    if (!note(&r, "login", true, cu_token_login(t, pin), NULL))
        goto report;

    cu_object *ec256 = keygen(&r, t, CU_KEYGEN_EC_P256, true, made, &n_made);
    cu_object *ec384 = keygen(&r, t, CU_KEYGEN_EC_P384, false, made, &n_made);
    cu_object *rsa2048 = keygen(&r, t, CU_KEYGEN_RSA2048, true, made, &n_made);
    cu_object *rsa3072 = keygen(&r, t, CU_KEYGEN_RSA3072, false, made, &n_made);
    cu_object *hmac = keygen(&r, t, CU_KEYGEN_HMAC256, false, made, &n_made);

    sign_check(&r, "ECDSA P-256 SHA-256", true, ec256, (cu_sig){CU_SIG_ECDSA, CU_HASH_SHA256, 0, -1});
    sign_check(&r, "ECDSA P-384 SHA-384", false, ec384, (cu_sig){CU_SIG_ECDSA, CU_HASH_SHA384, 0, -1});
    sign_check(&r, "RSA-2048 PKCS#1 v1.5 SHA-256", true, rsa2048, (cu_sig){CU_SIG_RSA_PKCS1, CU_HASH_SHA256, 0, -1});
    sign_check(&r, "RSA-2048 PSS SHA-256", true, rsa2048,
               (cu_sig){CU_SIG_RSA_PSS, CU_HASH_SHA256, CU_HASH_SHA256, -1});
    sign_check(&r, "RSA-3072 PSS SHA-384", false, rsa3072,
               (cu_sig){CU_SIG_RSA_PSS, CU_HASH_SHA384, CU_HASH_SHA384, -1});
    check_hmac(&r, t, hmac, made, &n_made);
    check_cert(&r, t, made, &n_made);

    cu_object *none = NULL;
    cu_rc frc = cu_token_find(t, "pkcs11:object=custos-check-no-such-object", CU_CLASS_PRIVATE_KEY, &none);
    add(&r, "missing object reported", true, frc == CU_E_OBJECT_NOT_FOUND ? R_PASS : R_FAIL, "%s",
        frc == CU_E_OBJECT_NOT_FOUND ? "not found, as it should be" : "a missing object was found");
    cu_object_free(none);

    if (ec256 != NULL) {
        pthread_t th[CHECK_THREADS];
        thread_arg args[CHECK_THREADS];
        for (int i = 0; i < CHECK_THREADS; i++) {
            args[i] = (thread_arg){ec256, 0};
            pthread_create(&th[i], NULL, thread_sign, &args[i]);
        }
        int ok = 0;
        for (int i = 0; i < CHECK_THREADS; i++) {
            pthread_join(th[i], NULL);
            ok += args[i].ok;
        }
        add(&r, "threads", true, ok == CHECK_THREADS * CHECK_PER_THREAD ? R_PASS : R_FAIL,
            "%d of %d signatures from %d threads verified", ok, CHECK_THREADS * CHECK_PER_THREAD, CHECK_THREADS);
    }

report:
    if (t != NULL)
        destroy_made(t, made, n_made);
    print_report(&r, module, desc, json);
    cu_token_unref(t);
    cu_module_unref(m);
    cu_cli_pin_free(pin);
    for (size_t i = 0; i < r.n; i++)
        if (r.rows[i].res == R_FAIL)
            return CU_EXIT_FAIL;
    return CU_EXIT_OK;
}
