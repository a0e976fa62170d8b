/* Unit tests of custosd's parsers and policies, table-driven: config
 * settings, service SAS tokens, api-version, per-device rate windows. */
#include "srv_int.h"

#include <cu_test.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *dir;
static cu_srv_state *st;

static int suite_init(void)
{
    cu_srv_config cfg;
    char state[4200];
    dir = cu_test_mkdtemp("srv-unit");
    snprintf(state, sizeof state, "%s/var", dir);
    cu_srv_config_init(&cfg);
    cu_srv_config_set(&cfg, "state", state);
    cu_srv_config_set(&cfg, "host-name", "dps.example.net");
    int rc = cu_srv_state_open(&cfg, true, &st) == CU_OK ? 0 : 1;
    cu_srv_config_clear(&cfg);
    return rc;
}

static int suite_cleanup(void)
{
    cu_srv_state_free(st);
    cu_test_rmtree(dir);
    free(dir);
    return 0;
}

static void test_config(void)
{
    static const struct {
        const char *k, *v;
        cu_rc want;
    } T[] = {
        {"listen", "127.0.0.1:8443", CU_OK},  {"listen", "[::1]:443", CU_OK},
        {"listen", "localhost", CU_E_INVALID_ARG}, {"listen", "1.2.3.4:70000", CU_E_INVALID_ARG},
        {"listen", ":443", CU_E_INVALID_ARG},  {"workers", "4", CU_OK},
        {"workers", "-1", CU_E_INVALID_ARG},   {"workers", "4x", CU_E_INVALID_ARG},
        {"workers", "65", CU_E_INVALID_ARG},   {"max-body", "512", CU_E_INVALID_ARG},
        {"retry-after", "0", CU_E_INVALID_ARG}, {"retry-after", "300", CU_OK},
        {"log-format", "json", CU_OK},         {"log-format", "xml", CU_E_INVALID_ARG},
        {"log-level", "debug", CU_OK},         {"register-reply", "final", CU_OK},
        {"register-reply", "later", CU_E_INVALID_ARG}, {"device-error-detail", "yes", CU_OK},
        {"device-error-detail", "maybe", CU_E_INVALID_ARG}, {"state", "", CU_E_INVALID_ARG},
        {"no-such-key", "1", CU_E_INVALID_ARG}, {"server-key", "pkcs11:token=x", CU_OK},
        {"tls-tickets", "0", CU_OK},           {"tls-tickets", "5", CU_E_INVALID_ARG},
        {"store", "postgresql://custos@db/custos", CU_OK}, {"store-password-file", "", CU_E_INVALID_ARG},
        {"store-password-file", "/etc/custos/db-password", CU_OK},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        cu_srv_config cfg;
        cu_srv_config_init(&cfg);
        cu_rc rc = cu_srv_config_set(&cfg, T[i].k, T[i].v);
        if (rc != T[i].want)
            fprintf(stderr, "config %s = %s: rc %d, wanted %d\n", T[i].k, T[i].v, rc, T[i].want);
        CU_ASSERT_EQUAL(rc, T[i].want);
        cu_srv_config_clear(&cfg);
    }
    /* Repeatable keys append, up to their limit. */
    cu_srv_config cfg;
    cu_srv_config_init(&cfg);
    for (int i = 0; i < CU_SRV_MAX_LISTEN; i++)
        CU_ASSERT_EQUAL(cu_srv_config_set(&cfg, "listen", "127.0.0.1:1"), CU_OK);
    CU_ASSERT_EQUAL(cu_srv_config_set(&cfg, "listen", "127.0.0.1:1"), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cfg.n_listen, CU_SRV_MAX_LISTEN);
    cu_srv_config_clear(&cfg);
}

/* A store custosd cannot use is refused at start, and a password in its
 * URI never reaches the message. */
static void test_store_spec(void)
{
    static const struct {
        const char *spec;
        cu_rc want;
        const char *says;
    } T[] = {
        {"mysql://u:Sekrit@db/custos", CU_E_UNSUPPORTED, "postgresql://"},
        {"postgresql://u:Sekrit@127.0.0.1:1/custos", CU_E_IO, "127.0.0.1:1/custos"},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        cu_srv_config cfg;
        cu_srv_state *s = NULL;
        char state[4200];
        snprintf(state, sizeof state, "%s/var", dir);
        cu_srv_config_init(&cfg);
        CU_ASSERT_EQUAL(cu_srv_config_set(&cfg, "state", state), CU_OK);
        CU_ASSERT_EQUAL(cu_srv_config_set(&cfg, "store", T[i].spec), CU_OK);
        CU_ASSERT_EQUAL(cu_srv_state_open(&cfg, false, &s), T[i].want);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT_PTR_NULL(strstr(cu_err_last()->msg, "Sekrit"));
        CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, T[i].says));
        cu_srv_state_free(s);
        cu_srv_config_clear(&cfg);
    }
}

static void test_config_file(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/c.conf", dir);
    FILE *f = fopen(path, "w");
    fputs("# comment\n\n  listen = 127.0.0.1:1  \nhub = a.example,3\nworkers=2\n", f);
    fclose(f);
    cu_srv_config cfg;
    cu_srv_config_init(&cfg);
    CU_ASSERT_EQUAL(cu_srv_config_load(&cfg, path), CU_OK);
    CU_ASSERT_EQUAL(cfg.n_listen, 1);
    CU_ASSERT_STRING_EQUAL(cfg.listen[0], "127.0.0.1:1");
    CU_ASSERT_EQUAL(cfg.workers, 2);
    CU_ASSERT_EQUAL(cfg.n_hubs, 1);
    cu_srv_config_clear(&cfg);
    f = fopen(path, "w");
    fputs("listen = 127.0.0.1:1\nthis line has no equals sign\n", f);
    fclose(f);
    cu_srv_config_init(&cfg);
    CU_ASSERT_EQUAL(cu_srv_config_load(&cfg, path), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(cu_err_last()->msg, ":2:"));
    cu_srv_config_clear(&cfg);
}

/* A service SAS the way the SDKs make it. */
static char *token(const char *sr_sent, const char *sr_signed, long long se, const char *skn, bool corrupt)
{
    size_t kl = 0;
    const uint8_t *key = cu_srv_state_policy_key(st, &kl);
    char msg[600], b64[64], sig[200], *out = malloc(1200);
    uint8_t mac[32];
    unsigned ml = 0;
    snprintf(msg, sizeof msg, "%s\n%lld", sr_signed, se);
    HMAC(EVP_sha256(), key, (int)kl, (const unsigned char *)msg, strlen(msg), mac, &ml);
    if (corrupt)
        mac[0] ^= 1;
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    size_t o = 0;
    for (const char *p = b64; *p; p++)
        o += (size_t)snprintf(sig + o, sizeof sig - o, strchr("+/=", *p) ? "%%%02X" : "%c", *p);
    snprintf(out, 1200, "SharedAccessSignature sr=%s&sig=%s&se=%lld&skn=%s", sr_sent, sig, se, skn);
    return out;
}

static void test_service_sas(void)
{
    long long now = (long long)time(NULL), later = now + 3600, past = now - 3600;
    static const char *const hosts[] = {"dps.example.net", "localhost", "127.0.0.1"};
    for (size_t i = 0; i < 3; i++) {
        char *t = token(hosts[i], hosts[i], later, CU_SRV_POLICY, false);
        char why[200];
        CU_ASSERT_EQUAL(cu_srv__service_sas_check(st, t, 300, why, sizeof why), CU_OK);
        free(t);
    }
    static const struct {
        const char *sent, *signed_;
        bool future, corrupt;
        const char *skn;
        cu_rc want;
        const char *why;
    } T[] = {
        {"dps.example.net/enrollments", "dps.example.net/enrollments", true, false, CU_SRV_POLICY, CU_OK, NULL},
        {"dps.example.net%2fenrollments", "dps.example.net%2fenrollments", true, false, CU_SRV_POLICY, CU_OK, NULL},
        {"dps.example.net%2fenrollments", "dps.example.net/enrollments", true, false, CU_SRV_POLICY, CU_OK, NULL},
        {"DPS.Example.NET:443", "DPS.Example.NET:443", true, false, CU_SRV_POLICY, CU_OK, NULL},
        {"other.example.net", "other.example.net", true, false, CU_SRV_POLICY, CU_E_VERIFY, "another service"},
        {"localhost", "localhost", false, false, CU_SRV_POLICY, CU_E_VERIFY, "expired"},
        {"localhost", "localhost", true, true, CU_SRV_POLICY, CU_E_VERIFY, "does not verify"},
        {"localhost", "localhost", true, false, "registration", CU_E_VERIFY, "policy"},
        {"localhost", "127.0.0.1", true, false, CU_SRV_POLICY, CU_E_VERIFY, "does not verify"},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        char *t = token(T[i].sent, T[i].signed_, T[i].future ? later : past, T[i].skn, T[i].corrupt);
        char why[200] = "";
        cu_rc rc = cu_srv__service_sas_check(st, t, 300, why, sizeof why);
        if (rc != T[i].want)
            fprintf(stderr, "service SAS #%zu (%s): rc %d (%s)\n", i, T[i].sent, rc, why);
        CU_ASSERT_EQUAL(rc, T[i].want);
        if (T[i].why != NULL)
            CU_ASSERT_PTR_NOT_NULL(strstr(why, T[i].why));
        free(t);
    }
    /* Expired a minute ago: within a skew of 300 s (the default), not of
     * 30 s or none (sas-skew, the same for every SAS). */
    char *t = token("localhost", "localhost", now - 60, CU_SRV_POLICY, false);
    char why[200] = "";
    CU_ASSERT_EQUAL(cu_srv__service_sas_check(st, t, 300, why, sizeof why), CU_OK);
    CU_ASSERT_EQUAL(cu_srv__service_sas_check(st, t, 30, why, sizeof why), CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "expired"));
    CU_ASSERT_EQUAL(cu_srv__service_sas_check(st, t, 0, why, sizeof why), CU_E_VERIFY);
    free(t);
    static const char *const bad[] = {
        NULL, "", "Bearer abc", "SharedAccessSignature ", "SharedAccessSignature sr=localhost",
        "SharedAccessSignature sr=localhost&sr=localhost&sig=a&se=1&skn=provisioningserviceowner",
        "SharedAccessSignature sr=localhost&sig=%zz&se=1&skn=provisioningserviceowner",
        "SharedAccessSignature sr=localhost&sig=a&se=1x&skn=provisioningserviceowner",
        "SharedAccessSignature sr=localhost&sig=a&se=1&skn=provisioningserviceowner&extra=1",
        "SharedAccessSignature sr=local%00host&sig=a&se=1&skn=provisioningserviceowner",
        "SharedAccessSignature novalue&sig=a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[200] = "";
        CU_ASSERT_EQUAL(cu_srv__service_sas_check(st, bad[i], 300, why, sizeof why), CU_E_VERIFY);
        CU_ASSERT_NOT_EQUAL(why[0], 0);
    }
}

static void test_api_version(void)
{
    static const struct {
        const char *v;
        bool ok;
    } T[] = {{"2019-03-31", true}, {"2021-06-01", true}, {"2021-10-01", true}, {"2018-04-01", true},
             {"2025-07-01-preview", true}, {NULL, false}, {"", false}, {"2016-01-01", false},
             {"2021-6-1", false}, {"2021-06-01x", false}, {"latest", false}};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        CU_ASSERT_EQUAL(cu_srv__api_version_ok(T[i].v), T[i].ok);
}

static void test_limits(void)
{
    cu_srv__limits *l = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_srv__limits_new(0, 3, &l), CU_OK);
    for (int i = 0; i < 10; i++) /* looking counts nothing */
        CU_ASSERT_EQUAL(cu_srv__limits_device_wait(l, "dev-a"), 0);
    CU_ASSERT_EQUAL(cu_srv__limits_device(l, "dev-a"), 0);
    CU_ASSERT_EQUAL(cu_srv__limits_device(l, "DEV-A"), 0); /* ids are case-insensitive */
    CU_ASSERT_EQUAL(cu_srv__limits_device_wait(l, "dev-a"), 0);
    CU_ASSERT_EQUAL(cu_srv__limits_device_in(l, NULL, "dev-a"), 0);
    unsigned wait = cu_srv__limits_device_wait(l, "dev-a");
    CU_ASSERT(wait >= 1 && wait <= 10);
    wait = cu_srv__limits_device(l, "dev-a");
    CU_ASSERT(wait >= 1 && wait <= 10);
    CU_ASSERT_EQUAL(cu_srv__limits_device_wait(l, "dev-b"), 0);
    CU_ASSERT_EQUAL(cu_srv__limits_device(l, "dev-b"), 0);
    CU_ASSERT_TRUE(cu_srv__limits_global(l)); /* no global limit */
    cu_srv__limits_free(l);
    CU_ASSERT_EQUAL_FATAL(cu_srv__limits_new(2, 0, &l), CU_OK);
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += cu_srv__limits_global(l);
    CU_ASSERT(allowed >= 2 && allowed <= 3);
    CU_ASSERT_EQUAL(cu_srv__limits_device(l, "x"), 0); /* no device limit */
    cu_srv__limits_free(l);
}

/* What a device polls: one per registration id, the latest attempt, with
 * its final answer as rendered; one written by a node of before
 * 2026-11-28 (a sealed setting, no answer kept) still found. */
static void test_operations(void)
{
    cu_store *s = NULL;
    cu_srv__op op, got;
    CU_ASSERT_EQUAL_FATAL(cu_srv_state_store_open(st, &s), CU_OK);
    memset(&op, 0, sizeof op);
    memset(&got, 0, sizeof got);
    snprintf(op.registration_id, sizeof op.registration_id, "Dev-Op-1");
    snprintf(op.attestation, sizeof op.attestation, "symmetricKey");
    memset(op.auth, 'a', 64);
    snprintf(op.etag, sizeof op.etag, "\"e1\"");
    cu_srv__op_new_id(op.registration_id, op.op_id);
    CU_ASSERT_EQUAL(cu_srv__op_get(s, "dev-op-1", &got), CU_E_OBJECT_NOT_FOUND);
    CU_ASSERT_EQUAL(cu_srv__op_put(s, &op), CU_E_INVALID_ARG); /* no answer */
    op.reply = "{\"status\":\"assigned\",\"x\":\"a\\nb\"}";
    CU_ASSERT_EQUAL_FATAL(cu_srv__op_put(s, &op), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_srv__op_get(s, "dev-op-1", &got), CU_OK); /* ids are case-insensitive */
    CU_ASSERT_STRING_EQUAL(got.op_id, op.op_id);
    CU_ASSERT_STRING_EQUAL(got.registration_id, "Dev-Op-1");
    CU_ASSERT_STRING_EQUAL(got.auth, op.auth);
    CU_ASSERT_STRING_EQUAL(got.etag, "\"e1\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(got.reply);
    CU_ASSERT_STRING_EQUAL(got.reply, op.reply); /* as rendered, escapes and all */
    CU_ASSERT_PTR_NULL(got.tpm_auth);
    cu_srv__op_clear(&got);

    /* A new attempt replaces the old one; an answer on two lines would
     * break the stored form and is refused. */
    char first[96];
    memcpy(first, op.op_id, sizeof first);
    cu_srv__op_new_id(op.registration_id, op.op_id);
    CU_ASSERT_STRING_NOT_EQUAL(first, op.op_id);
    op.reply = "{\"status\":\"assigned\",\n\"x\":1}";
    CU_ASSERT_EQUAL(cu_srv__op_put(s, &op), CU_E_INVALID_ARG);
    op.reply = "{\"status\":\"failed\"}";
    CU_ASSERT_EQUAL_FATAL(cu_srv__op_put(s, &op), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_srv__op_get(s, "DEV-OP-1", &got), CU_OK);
    CU_ASSERT_STRING_EQUAL(got.op_id, op.op_id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got.reply);
    CU_ASSERT_STRING_EQUAL(got.reply, "{\"status\":\"failed\"}");
    cu_srv__op_clear(&got);

    /* The older form: a sealed setting "op:<lower-case id>". */
    CU_ASSERT_EQUAL_FATAL(cu_store_setting_put(s, "op:dev-op-old", "{\"operationId\":\"5.0.x\","
                                                                     "\"registrationId\":\"dev-op-old\","
                                                                     "\"attestation\":\"x509\","
                                                                     "\"tpmAuthenticationKey\":\"YmxvYg==\"}"),
                          CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_srv__op_get(s, "Dev-Op-Old", &got), CU_OK);
    CU_ASSERT_STRING_EQUAL(got.op_id, "5.0.x");
    CU_ASSERT_STRING_EQUAL(got.attestation, "x509");
    CU_ASSERT_PTR_NULL(got.reply); /* answered from the record */
    CU_ASSERT_PTR_NOT_NULL_FATAL(got.tpm_auth);
    CU_ASSERT_STRING_EQUAL(got.tpm_auth, "YmxvYg==");
    cu_srv__op_clear(&got);
    CU_ASSERT_EQUAL(cu_srv__op_get(s, "dev-op-none", &got), CU_E_OBJECT_NOT_FOUND);
    cu_store_close(s);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"config settings", test_config},
        {"config file", test_config_file},
        {"store specs refused without echoing a password", test_store_spec},
        {"service SAS", test_service_sas},
        {"api-version", test_api_version},
        {"rate limits", test_limits},
        {"operations", test_operations},
        {NULL, NULL},
    };
    if (cu_test_add_suite("custosd units", suite_init, suite_cleanup, cases) != 0)
        return 2;
    return cu_test_run();
}
