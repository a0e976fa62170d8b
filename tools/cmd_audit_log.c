/* custos audit verify | export | sign: the hash-chained audit log of a
 * state directory (provisioning/include/custos/audit.h, docs/audit.md). */
#include "cli.h"

#include <custos/audit.h>
#include <custos/keyring.h>
#include <custos/server.h>
#include <custos/store.h>

#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int cu_cmd_audit_verify(int argc, char **argv);
int cu_cmd_audit_export(int argc, char **argv);
int cu_cmd_audit_sign(int argc, char **argv);

#define DEFAULT_STATE "./var"
#define MAX_KEYS 8

/* Opens the audit log of an existing state directory: never creates one,
 * and needs no service keyring (the log is checked with the audit key's
 * public part alone), so an auditor's copy of custos.db is enough. spec, pw:
 * a custosd config's store (it comes before $CUSTOS_STORE, as in custosd). */
static int open_log_in(const char *state, const char *spec, const char *pw, bool writable, cu_store **_s)
{
    char path[4096];
    struct stat sb;
    state = state ? state : DEFAULT_STATE;
    if (spec == NULL || *spec == 0) {
        spec = getenv("CUSTOS_STORE");
        pw = pw ? pw : getenv("CUSTOS_STORE_PASSWORD_FILE");
    }
    if (spec != NULL && *spec != 0) {
        /* The store named as custos/state.h says (PostgreSQL shared by nodes). */
        if (cu_store_open_audit_only_spec(spec, pw && *pw ? pw : NULL, writable, _s) != CU_OK)
            return cu_cli_fail("cannot open the audit log of $CUSTOS_STORE: %s", cu_err_last()->msg);
        return CU_EXIT_OK;
    }
    snprintf(path, sizeof path, "%s/custos.db", state);
    if (stat(path, &sb) != 0)
        return cu_cli_fail("no store in %s (%s)", state, strerror(errno));
    if (cu_store_open_audit_only(path, writable, _s) != CU_OK)
        return cu_cli_fail("cannot open the audit log in %s: %s", state, cu_err_last()->msg);
    return CU_EXIT_OK;
}

static int open_log(const char *state, bool writable, cu_store **_s)
{
    return open_log_in(state, NULL, NULL, writable, _s);
}

static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "no detail";
}

/* A public key from PEM: a public key, a certificate, or a private key
 * (its public half). */
static EVP_PKEY *load_pub_file(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = NULL;
    if (f == NULL) {
        cu_cli_fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    if ((k = PEM_read_PUBKEY(f, NULL, NULL, NULL)) == NULL) {
        rewind(f);
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        if (x != NULL)
            k = X509_get_pubkey(x);
        X509_free(x);
    }
    if (k == NULL) {
        rewind(f);
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    }
    fclose(f);
    if (k == NULL)
        cu_cli_fail("%s: no PEM public key, certificate or private key (%s)", path, ossl_reason());
    ERR_clear_error();
    return k;
}

/* A key through OSSL_STORE: a pkcs11: URI (through the custos provider,
 * loaded here from provider_path, NULL: the default place), or file:/
 * paths. want_private: the signing key. */
static EVP_PKEY *load_uri_from(const char *uri, bool want_private, const char *provider_path)
{
    /* pkcs11: URIs are the custos provider's; load it like every other command. */
    if (strncmp(uri, "pkcs11:", 7) == 0 && cu_keyring_provider_load(provider_path) != CU_OK) {
        cu_cli_fail("%s", cu_err_last()->msg);
        return NULL;
    }
    OSSL_STORE_CTX *sc = OSSL_STORE_open_ex(uri, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    EVP_PKEY *k = NULL;
    if (sc == NULL) {
        cu_cli_fail("cannot open %s: %s (is the custos provider configured?)", uri, ossl_reason());
        ERR_clear_error();
        return NULL;
    }
    while (k == NULL && !OSSL_STORE_eof(sc)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);
        if (info == NULL)
            continue;
        int t = OSSL_STORE_INFO_get_type(info);
        if (t == OSSL_STORE_INFO_PKEY)
            k = OSSL_STORE_INFO_get1_PKEY(info);
        else if (!want_private && t == OSSL_STORE_INFO_PUBKEY)
            k = OSSL_STORE_INFO_get1_PUBKEY(info);
        else if (!want_private && t == OSSL_STORE_INFO_CERT)
            k = X509_get_pubkey(OSSL_STORE_INFO_get0_CERT(info));
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(sc);
    if (k == NULL)
        cu_cli_fail("%s: no %s key there", uri, want_private ? "private" : "public");
    ERR_clear_error();
    return k;
}

static EVP_PKEY *load_uri(const char *uri, bool want_private)
{
    return load_uri_from(uri, want_private, NULL);
}

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* The verification report, text or one JSON object. key_from: where the
 * key came from when none was given (the state's audit.pub, the config). */
static void print_report(const cu_audit_report *r, size_t nkeys, const char *key_from, bool json)
{
    char lh[65], sh[65];
    hex(r->last_hash, 32, lh);
    hex(r->last_signed_hash, 32, sh);
    if (json) {
        printf("{\"ok\":%s,\"records\":%llu,\"lastSeq\":%llu,\"heads\":%llu,\"headsVerified\":%llu,"
               "\"signaturesChecked\":%s,",
               r->fault == CU_AUDIT_OK ? "true" : "false", (unsigned long long)r->records,
               (unsigned long long)r->last_seq, (unsigned long long)r->heads,
               (unsigned long long)r->heads_verified, nkeys > 0 ? "true" : "false");
        if (key_from != NULL) {
            printf("\"keyFrom\":");
            cu_cli_json_str(stdout, key_from);
            putchar(',');
        }
        printf("\"lastSignedSeq\":%llu,\"lastSignedAt\":", (unsigned long long)r->last_signed_seq);
        if (r->last_signed_at[0]) {
            cu_cli_json_str(stdout, r->last_signed_at);
            printf(",\"lastSignedHash\":\"%s\"", sh);
        }
        else
            fputs("null", stdout);
        if (r->last_seq > 0)
            printf(",\"lastHash\":\"%s\"", lh);
        if (r->fault != CU_AUDIT_OK) {
            printf(",\"fault\":");
            cu_cli_json_str(stdout, cu_audit_fault_str(r->fault));
            printf(",\"faultSeq\":%llu,\"what\":", (unsigned long long)r->fault_seq);
            cu_cli_json_str(stdout, r->what);
        }
        printf("}\n");
        return;
    }
    if (key_from != NULL)
        printf("audit key: %s\n", key_from);
    if (r->fault != CU_AUDIT_OK) {
        printf("audit log does NOT verify: first bad record: %llu (%s)\n  %s\n", (unsigned long long)r->fault_seq,
               cu_audit_fault_str(r->fault), r->what);
        return;
    }
    printf("audit log verifies: %llu records", (unsigned long long)r->records);
    if (r->records > 0)
        printf(" (seq 1..%llu)", (unsigned long long)r->last_seq);
    printf(", %llu signed heads", (unsigned long long)r->heads);
    if (nkeys > 0)
        printf(", %llu signatures verified\n", (unsigned long long)r->heads_verified);
    else if (r->heads > 0)
        printf("; signatures NOT checked (--no-signatures)\n");
    else
        printf("\n");
    if (r->last_signed_seq > 0)
        printf("last signed head: record %llu at %s; %llu records after it not yet signed\n"
               "keep it to check the next time: --head %llu:%s\n",
               (unsigned long long)r->last_signed_seq, r->last_signed_at,
               (unsigned long long)(r->last_seq - r->last_signed_seq), (unsigned long long)r->last_signed_seq, sh);
    else if (r->records > 0)
        printf("no signed head yet: deleting records from the tail would not be detected\n");
}

/* The audit key when none was given: the config's audit-key (a pkcs11: URI,
 * or the key file whose public half is taken), else the STATE/audit.pub that
 * custosd writes. *_key NULL and CU_EXIT_OK: neither exists. */
static int default_key(const char *state, const cu_srv_config *cfg, EVP_PKEY **_key, char *from, size_t fromlen)
{
    struct stat sb;
    *_key = NULL;
    if (cfg != NULL && cfg->audit_key != NULL) {
        bool uri = strncmp(cfg->audit_key, "pkcs11:", 7) == 0;
        if ((*_key = uri ? load_uri_from(cfg->audit_key, false, cfg->provider_path) : load_pub_file(cfg->audit_key)) ==
            NULL)
            return CU_EXIT_FAIL;
        snprintf(from, fromlen, "%s (the config's audit-key)", cfg->audit_key);
        return CU_EXIT_OK;
    }
    snprintf(from, fromlen, "%s/audit.pub", state ? state : DEFAULT_STATE);
    if (stat(from, &sb) != 0)
        return CU_EXIT_OK;
    if ((*_key = load_pub_file(from)) == NULL)
        return CU_EXIT_FAIL;
    /* The state's own copy: whoever can rewrite the log there may have
     * replaced it too; an auditor gives a copy kept elsewhere (--pubkey). */
    snprintf(from + strlen(from), fromlen - strlen(from), " (the state's; --pubkey for a copy kept elsewhere)");
    return CU_EXIT_OK;
}

int cu_cmd_audit_verify(int argc, char **argv)
{
    const char *state = NULL, *pubs[MAX_KEYS], *uris[MAX_KEYS], *kept = NULL, *config = NULL;
    size_t npub = 0, nuri = 0, nkeys = 0;
    bool json = false, help = false, no_sigs = false, have_cfg = false;
    EVP_PKEY *keys[2 * MAX_KEYS];
    cu_store *st = NULL;
    cu_srv_config cfg;
    cu_audit_report rep;
    char key_from[4200] = "";
    cu_cli_opt opts[] = {
        {"--state", &state, NULL, NULL, NULL, 0},   {"--pubkey", NULL, NULL, pubs, &npub, MAX_KEYS},
        {"--key-uri", NULL, NULL, uris, &nuri, MAX_KEYS}, {"--json", NULL, &json, NULL, NULL, 0},
        {"--head", &kept, NULL, NULL, NULL, 0},     {"--config", &config, NULL, NULL, NULL, 0},
        {"--no-signatures", NULL, &no_sigs, NULL, NULL, 0}, {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    unsigned long long kept_seq = 0;
    uint8_t kept_hash[32];
    int rc = cu_cli_parse("audit verify", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos audit verify [--state DIR] [--config FILE] [--pubkey FILE]... [--key-uri URI]...\n"
               "                           [--no-signatures] [--head SEQ:HASH] [--json]\n\n"
               "Checks the whole audit log of the state directory: every record's hash, every\n"
               "link to its predecessor, no gaps, and every signed head against the chain and\n"
               "its signature with the audit key's public part (--pubkey: PEM public key or\n"
               "certificate; --key-uri: a pkcs11: URI through the custos provider; several for\n"
               "a rotated key). Without them: the audit-key of custosd's --config FILE, else\n"
               "STATE/audit.pub (custosd writes it); when the log has signed heads and no key\n"
               "is found it fails, unless --no-signatures (the chain alone; the output says so).\n"
               "Names the first record that does not verify and what is wrong with it.\n"
               "--head: a head kept from an earlier verify (it prints one) must still be in\n"
               "the log, which catches a tail deleted with its heads. Needs no service keyring:\n"
               "a copy of custos.db verifies. Exit status 0 only when the log verifies.\n");
        return CU_EXIT_OK;
    }
    if (no_sigs && (npub > 0 || nuri > 0))
        return cu_cli_usage("audit verify", "--no-signatures excludes --pubkey and --key-uri");
    if (kept != NULL) {
        char *end = NULL;
        const char *colon = strchr(kept, ':');
        kept_seq = strtoull(kept, &end, 10);
        bool good = colon != NULL && end == colon && kept_seq > 0 && strlen(colon + 1) == 64;
        for (int i = 0; good && i < 32; i++) {
            unsigned v;
            good = sscanf(colon + 1 + 2 * i, "%2x", &v) == 1 && isxdigit((unsigned char)colon[1 + 2 * i]) &&
                   isxdigit((unsigned char)colon[2 + 2 * i]);
            kept_hash[i] = (uint8_t)v;
        }
        if (!good)
            return cu_cli_usage("audit verify", "--head %s: expected SEQ:HASH (64 hex digits)", kept);
    }
    if (config != NULL) {
        cu_srv_config_init(&cfg);
        have_cfg = true;
        if (cu_srv_config_load(&cfg, config) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto cleanup;
        }
        if (state == NULL)
            state = cfg.state_dir;
    }
    for (size_t i = 0; i < npub; i++) {
        if ((keys[nkeys] = load_pub_file(pubs[i])) == NULL) {
            rc = CU_EXIT_FAIL;
            goto cleanup;
        }
        nkeys++;
    }
    for (size_t i = 0; i < nuri; i++) {
        if ((keys[nkeys] = load_uri(uris[i], false)) == NULL) {
            rc = CU_EXIT_FAIL;
            goto cleanup;
        }
        nkeys++;
    }
    if ((rc = open_log_in(state, have_cfg ? cfg.store : NULL, have_cfg ? cfg.store_password_file : NULL, false,
                          &st)) != CU_EXIT_OK)
        goto cleanup;
    if (nkeys == 0 && !no_sigs) {
        if ((rc = default_key(state, have_cfg ? &cfg : NULL, &keys[0], key_from, sizeof key_from)) != CU_EXIT_OK)
            goto cleanup;
        if (keys[0] != NULL) {
            nkeys = 1;
        } else {
            /* Unchecked signatures would let a forged or moved head pass:
             * only the caller who says so gets the chain alone. */
            cu_audit_head *h = NULL;
            size_t n = 0;
            key_from[0] = 0;
            if (cu_audit_heads_read(st, 1, 1, &h, &n) != CU_OK) {
                rc = cu_cli_fail("cannot read the audit log: %s", cu_err_last()->msg);
                goto cleanup;
            }
            cu_audit_heads_free(h, n);
            if (n > 0) {
                rc = cu_cli_fail("the audit log has signed heads but no audit key was found (no --pubkey, "
                                 "--key-uri or --config, no %s/audit.pub): give one, or --no-signatures to "
                                 "check the chain without the heads' signatures",
                                 state ? state : DEFAULT_STATE);
                goto cleanup;
            }
        }
    }
    cu_rc vr = cu_audit_verify(st, keys, nkeys, &rep);
    if (vr == CU_OK && kept != NULL)
        vr = cu_audit_check_kept_head(st, kept_seq, kept_hash, &rep);
    if (vr != CU_OK && vr != CU_E_VERIFY) {
        rc = cu_cli_fail("cannot read the audit log: %s", cu_err_last()->msg);
        goto cleanup;
    }
    print_report(&rep, nkeys, key_from[0] ? key_from : NULL, json);
    rc = vr == CU_OK ? CU_EXIT_OK : CU_EXIT_FAIL;
cleanup:
    for (size_t i = 0; i < nkeys; i++)
        EVP_PKEY_free(keys[i]);
    cu_store_close(st);
    if (have_cfg)
        cu_srv_config_clear(&cfg);
    return rc;
}

static cu_rc print_line(void *ctx, const char *json)
{
    (void)ctx;
    if (puts(json) == EOF)
        return cu_err_set(CU_E_IO, "cannot write the export");
    return CU_OK;
}

/* 2026-11-27, 2026-11-27T22:00:00Z, 2026-11-27T22:00:00.5Z */
static int parse_time(const char *s, time_t *out)
{
    struct tm tm;
    int n = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3 || n != 10)
        return -1;
    const char *p = s + n;
    if (*p == 'T') {
        if (sscanf(p, "T%2d:%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 3 || n != 9)
            return -1;
        p += n;
        if (*p == '.')
            for (p++; isdigit((unsigned char)*p); p++)
                ;
        if (strcmp(p, "Z") != 0)
            return -1;
    } else if (*p != 0) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return 0;
}

/* Signed heads with seq >= from and time >= since, one JSON line each. */
static cu_rc export_heads(cu_store *st, uint64_t from, time_t since)
{
    for (;;) {
        cu_audit_head *h = NULL;
        size_t n = 0;
        cu_rc rc = cu_audit_heads_read(st, from > 0 ? from : 1, 1000, &h, &n);
        if (rc != CU_OK)
            return rc;
        for (size_t i = 0; i < n; i++) {
            char hh[65], *sig = malloc(4 * ((h[i].sig_len + 2) / 3) + 1);
            time_t t = 0;
            if (sig == NULL) {
                cu_audit_heads_free(h, n);
                return cu_err_set(CU_E_NOMEM, "out of memory");
            }
            if (since != 0 && parse_time(h[i].at, &t) == 0 && t < since) {
                free(sig);
                continue;
            }
            EVP_EncodeBlock((unsigned char *)sig, h[i].sig, (int)h[i].sig_len);
            hex(h[i].hash, 32, hh);
            /* at and keyId come from the database: escaped like any text. */
            printf("{\"signedHead\":{\"seq\":%llu,\"at\":", (unsigned long long)h[i].seq);
            cu_cli_json_str(stdout, h[i].at);
            printf(",\"hash\":\"%s\",\"keyId\":", hh);
            cu_cli_json_str(stdout, h[i].key_id);
            printf(",\"signature\":\"%s\"}}\n", sig);
            free(sig);
        }
        if (n > 0)
            from = h[n - 1].seq + 1;
        cu_audit_heads_free(h, n);
        if (n < 1000)
            return CU_OK;
    }
}

int cu_cmd_audit_export(int argc, char **argv)
{
    const char *state = NULL, *since = NULL, *since_seq = NULL;
    bool help = false, heads = false;
    cu_store *st = NULL;
    time_t t = 0;
    unsigned long long seq = 0;
    cu_cli_opt opts[] = {
        {"--state", &state, NULL, NULL, NULL, 0},         {"--since", &since, NULL, NULL, NULL, 0},
        {"--since-seq", &since_seq, NULL, NULL, NULL, 0}, {"--heads", NULL, &heads, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},           {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("audit export", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos audit export [--state DIR] [--since TIME | --since-seq N] [--heads]\n\n"
               "Writes the audit log as JSON lines, one record a line, in chain order:\n"
               "{\"seq\",\"at\",\"type\",\"actor\",\"payload\",\"prev\",\"hash\"}. TIME is UTC:\n"
               "2026-11-27, 2026-11-27T22:00:00Z (fractions allowed). N: from record N on.\n"
               "--heads: the signed heads instead, {\"signedHead\":{\"seq\",\"at\",\"hash\",\"keyId\",\n"
               "\"signature\"}} (base64), to keep outside the database.\n");
        return CU_EXIT_OK;
    }
    if (since != NULL && since_seq != NULL)
        return cu_cli_usage("audit export", "--since and --since-seq exclude each other");
    if (since != NULL && parse_time(since, &t) != 0)
        return cu_cli_usage("audit export", "--since %s: not a UTC time (2026-11-27 or 2026-11-27T22:00:00Z)",
                            since);
    if (since_seq != NULL) {
        char *end = NULL;
        errno = 0;
        seq = strtoull(since_seq, &end, 10);
        if (errno != 0 || end == since_seq || *end != 0 || since_seq[0] == '-')
            return cu_cli_usage("audit export", "--since-seq %s: not a record number", since_seq);
    }
    if ((rc = open_log(state, false, &st)) != CU_EXIT_OK)
        return rc;
    if (heads ? export_heads(st, seq, t) != CU_OK : cu_audit_export(st, seq, t, print_line, NULL) != CU_OK)
        rc = cu_cli_fail("export: %s", cu_err_last()->msg);
    if (fflush(stdout) != 0)
        rc = cu_cli_fail("cannot write the export: %s", strerror(errno));
    cu_store_close(st);
    return rc;
}

int cu_cmd_audit_sign(int argc, char **argv)
{
    const char *state = NULL, *key_file = NULL, *key_uri = NULL;
    bool help = false, json = false;
    cu_store *st = NULL;
    EVP_PKEY *key = NULL;
    uint64_t seq = 0;
    cu_cli_opt opts[] = {
        {"--state", &state, NULL, NULL, NULL, 0},     {"--key", &key_file, NULL, NULL, NULL, 0},
        {"--key-uri", &key_uri, NULL, NULL, NULL, 0}, {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},       {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("audit sign", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos audit sign [--state DIR] (--key-uri URI | --key FILE) [--json]\n\n"
               "Signs the audit log's current head (seq, hash, time) with the audit key now:\n"
               "--key-uri a pkcs11: URI of the key in the service's token (through the custos\n"
               "provider); --key a PEM private key file (development and tests). custosd signs\n"
               "on its own every N records or T seconds.\n");
        return CU_EXIT_OK;
    }
    if ((key_file == NULL) == (key_uri == NULL))
        return cu_cli_usage("audit sign", "give one of --key-uri URI or --key FILE");
    if (key_file != NULL) {
        FILE *f = fopen(key_file, "r");
        if (f == NULL)
            return cu_cli_fail("cannot read %s: %s", key_file, strerror(errno));
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (key == NULL) {
            rc = cu_cli_fail("%s: not a PEM private key (%s)", key_file, ossl_reason());
            ERR_clear_error();
            return rc;
        }
    } else if ((key = load_uri(key_uri, true)) == NULL) {
        return CU_EXIT_FAIL;
    }
    if ((rc = open_log(state, true, &st)) != CU_EXIT_OK)
        goto cleanup;
    if (cu_audit_sign_head(st, key, &seq) != CU_OK) {
        rc = cu_cli_fail("cannot sign the audit head: %s", cu_err_last()->msg);
        goto cleanup;
    }
    char id[65] = "";
    (void)cu_audit_key_id(key, id);
    if (json)
        printf("{\"signedSeq\":%llu,\"keyId\":\"%s\"}\n", (unsigned long long)seq, id);
    else if (seq == 0)
        printf("the audit log is empty: nothing to sign\n");
    else
        printf("audit head at record %llu signed (key %.16s...)\n", (unsigned long long)seq, id);
cleanup:
    EVP_PKEY_free(key);
    cu_store_close(st);
    return rc;
}
