/* custosd's audit pieces, without a running custosd: the bound on
 * refusals before the engine (refusals.c: a few records per address and
 * minute, a summary for the rest, a fixed memory whatever the number of
 * addresses; registration ids and reasons escaped and cut), and the
 * keyring's uses by operation (keyuse.c), TPM identity keys told apart.
 * The records of a running custosd are custosd_audit.sh. */
#include "srv_int.h"

#include <custos/audit.h>
#include <custos/keyring.h>
#include <custos/store.h>
#include <cu_test.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const time_t M = 1700000040; /* a minute that is over */

static void test_escape(void)
{
    static const struct {
        const char *in;
        size_t shown;
        const char *want;
    } T[] = {
        {"device-1", 128, "device-1"},
        {"a\"b", 128, "a\"b"},
        {"a\\b", 128, "a\\x5cb"},
        {"\x01\x1f\x7f", 128, "\\x01\\x1f\\x7f"},
        {"\xc3\xa9t\xc3\xa9", 128, "\\xc3\\xa9t\\xc3\\xa9"},
        {"abcdefgh", 4, "abcd...(8 bytes)"},
        {"", 128, ""},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        char out[600];
        cu_srv__escape(T[i].in, T[i].shown, out, sizeof out);
        if (strcmp(out, T[i].want) != 0)
            fprintf(stderr, "escape #%zu: got '%s', want '%s'\n", i, out, T[i].want);
        CU_ASSERT_STRING_EQUAL(out, T[i].want);
    }
    /* A small output buffer cuts, never overflows. */
    char small[12];
    cu_srv__escape("\x01\x01\x01\x01\x01\x01", 128, small, sizeof small);
    CU_ASSERT(strlen(small) < sizeof small);
}

static void test_bound_per_address(void)
{
    cu_srv__refusals_reset();
    /* Three records per address per minute, then counted only. */
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(cu_srv__refusal_note("10.0.0.1", 401002, M + i), i < 3);
    CU_ASSERT_TRUE(cu_srv__refusal_note("10.0.0.2", 404001, M + 5));
    /* A new minute, a new budget. */
    CU_ASSERT_TRUE(cu_srv__refusal_note("10.0.0.1", 401002, M + 60));
    /* The clock going back stays in the current minute. */
    CU_ASSERT_TRUE(cu_srv__refusal_note("10.0.0.1", 401002, M + 10));
    CU_ASSERT_TRUE(cu_srv__refusal_note("10.0.0.1", 401002, M + 61));
    CU_ASSERT_FALSE(cu_srv__refusal_note("10.0.0.1", 401002, M + 62));
    cu_srv__refusals_reset();
}

static void test_bound_per_minute(void)
{
    cu_srv__refusals_reset();
    /* At most 60 records a minute from all addresses together, and 256
     * addresses told apart: a thousand addresses change neither. */
    int recorded = 0;
    char a[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(a, sizeof a, "10.1.%d.%d", i / 256, i % 256);
        recorded += cu_srv__refusal_note(a, 400002, M);
    }
    CU_ASSERT_EQUAL(recorded, 60);
    cu_srv__refusals_reset();
}

/* Reads the records of a store from seq from (free with cu_audit_records_free). */
static size_t records(cu_store *s, uint64_t from, cu_audit_record **_r)
{
    size_t n = 0;
    *_r = NULL;
    if (cu_audit_read(s, from, 1000, _r, &n) != CU_OK)
        return 0;
    return n;
}

static size_t count_from(cu_store *s, uint64_t from)
{
    cu_audit_record *r = NULL;
    size_t n = records(s, from, &r);
    cu_audit_records_free(r, n);
    return n;
}

static void test_summaries(void)
{
    char *dir = cu_test_mkdtemp("refusals"), path[4096];
    cu_store *s = NULL;
    cu_audit_record *r = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    snprintf(path, sizeof path, "%s/custos.db", dir);
    CU_ASSERT_EQUAL_FATAL(cu_store_open_audit_only(path, true, &s), CU_OK);
    cu_srv__refusals_reset();
    /* Nothing refused, nothing written. */
    CU_ASSERT_EQUAL(cu_srv__refusals_flush(s, true), CU_OK);
    CU_ASSERT_EQUAL(count_from(s, 1), 0);
    /* 10.0.0.1: 7 refusals of two kinds, 3 recorded; 10.0.0.2: 2, both
     * recorded (no summary needed). */
    for (int i = 0; i < 5; i++)
        cu_srv__refusal_note("10.0.0.1", 401002, M + i);
    cu_srv__refusal_note("10.0.0.1", 429001, M + 5);
    cu_srv__refusal_note("10.0.0.1", 429001, M + 6);
    cu_srv__refusal_note("10.0.0.2", 404001, M + 7);
    cu_srv__refusal_note("10.0.0.2", 404001, M + 8);
    /* Nine kinds from one address: the ninth counts as "other". */
    for (int c = 1; c <= 9; c++)
        for (int k = 0; k < 2; k++)
            cu_srv__refusal_note("10.0.0.3", 400000 + c, M + 9);
    /* The minute is over (M is in the past): a due flush writes it. */
    CU_ASSERT_EQUAL(cu_srv__refusals_flush(s, false), CU_OK);
    size_t n = records(s, 1, &r);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(r[0].type, "registration.refused.summary");
    CU_ASSERT_STRING_EQUAL(r[0].actor, "remote:10.0.0.1");
    CU_ASSERT_STRING_EQUAL(r[0].payload,
                           "{\"remote\":\"10.0.0.1\",\"minute\":\"2023-11-14T22:14:00Z\",\"refused\":7,\"recorded\":3,"
                           "\"notRecorded\":4,\"errorCodes\":{\"401002\":5,\"429001\":2}}");
    CU_ASSERT_STRING_EQUAL(r[1].actor, "remote:10.0.0.3");
    CU_ASSERT_STRING_EQUAL(r[1].payload,
                           "{\"remote\":\"10.0.0.3\",\"minute\":\"2023-11-14T22:14:00Z\",\"refused\":18,\"recorded\":3,"
                           "\"notRecorded\":15,\"errorCodes\":{\"400001\":2,\"400002\":2,\"400003\":2,\"400004\":2,"
                           "\"400005\":2,\"400006\":2,\"400007\":2,\"other\":4}}");
    cu_audit_records_free(r, n);
    /* Written once. */
    CU_ASSERT_EQUAL(cu_srv__refusals_flush(s, true), CU_OK);
    CU_ASSERT_EQUAL(count_from(s, 3), 0);
    /* The current minute is not due; a final flush writes it. (A minute
     * boundary between the notes and the due flush would make it due:
     * then the flush writes it, and the final one nothing.) */
    for (int i = 0; i < 4; i++)
        cu_srv__refusal_note("10.0.0.9", 401002, 0);
    bool crossed = time(NULL) % 60 < 2;
    CU_ASSERT_EQUAL(cu_srv__refusals_flush(s, false), CU_OK);
    if (!crossed)
        CU_ASSERT_EQUAL(count_from(s, 3), 0);
    CU_ASSERT_EQUAL(cu_srv__refusals_flush(s, true), CU_OK);
    n = records(s, 3, &r);
    CU_ASSERT_EQUAL(n, 1);
    if (n == 1)
        CU_ASSERT_PTR_NOT_NULL(strstr(r[0].payload, "\"refused\":4,\"recorded\":3,\"notRecorded\":1"));
    cu_audit_records_free(r, n);
    cu_audit_report rep;
    CU_ASSERT_EQUAL(cu_audit_verify(s, NULL, 0, &rep), CU_OK);
    cu_store_close(s);
    cu_srv__refusals_reset();
    cu_test_rmtree(dir);
    free(dir);
}

/* Service-API authentication failures are bounded like device refusals
 * but apart from them: each kind has its budget per address, its "*"
 * beyond 256 addresses, and its own summary type. */
static void test_service_kind(void)
{
    enum { SVC = CU_SRV_REFUSED_SERVICE };
    char *dir = cu_test_mkdtemp("svcrefusals"), path[4096], a[32];
    cu_store *s = NULL;
    cu_audit_record *r = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    snprintf(path, sizeof path, "%s/custos.db", dir);
    CU_ASSERT_EQUAL_FATAL(cu_store_open_audit_only(path, true, &s), CU_OK);
    cu_srv__refusals_reset();
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(cu_srv__refusal_note_kind(SVC, "10.0.0.1", 401000, M + i), i < 3);
    /* The device budget of the same address is untouched. */
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(cu_srv__refusal_note("10.0.0.1", 401002, M + i), i < 3);
    /* Past 256 addresses each kind counts under its own "*". */
    for (int i = 0; i < 300; i++) {
        snprintf(a, sizeof a, "10.2.%d.%d", i / 256, i % 256);
        cu_srv__refusal_note_kind(i % 2 ? SVC : CU_SRV_REFUSED_DEVICE, a, 401000 + i % 2, M + 1);
    }
    CU_ASSERT_EQUAL(cu_srv__refusals_flush(s, true), CU_OK);
    size_t n = records(s, 1, &r), svc = 0, dev = 0, star_svc = 0, star_dev = 0;
    for (size_t i = 0; i < n; i++) {
        bool is_svc = strcmp(r[i].type, "service.refused.summary") == 0;
        CU_ASSERT(is_svc || strcmp(r[i].type, "registration.refused.summary") == 0);
        svc += is_svc, dev += !is_svc;
        if (strcmp(r[i].actor, "remote:*") == 0) {
            star_svc += is_svc, star_dev += !is_svc;
            /* The addresses beyond the table's 256 (10.0.0.1 took two slots). */
            CU_ASSERT_PTR_NOT_NULL(strstr(r[i].payload, is_svc ? "\"401001\"" : "\"401000\""));
        }
        if (strcmp(r[i].actor, "remote:10.0.0.1") == 0)
            CU_ASSERT_PTR_NOT_NULL(strstr(r[i].payload, is_svc ? "\"refused\":5,\"recorded\":3"
                                                               : "\"refused\":4,\"recorded\":3"));
    }
    CU_ASSERT_EQUAL(star_svc, 1);
    CU_ASSERT_EQUAL(star_dev, 1);
    CU_ASSERT(svc >= 2 && dev >= 2);
    cu_audit_records_free(r, n);
    cu_store_close(s);
    cu_srv__refusals_reset();
    cu_test_rmtree(dir);
    free(dir);
}

/* Every keyring operation is a use of the keyring key, by what it did. */
static void test_keyring_uses(void)
{
    char *dir = cu_test_mkdtemp("keyuse"), path[4096];
    cu_store *s = NULL;
    cu_keyring *kr = NULL;
    uint8_t key[32] = {1, 2, 3}, mac[32], *plain = NULL;
    size_t plen = 0;
    char *w = NULL, *tw = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    snprintf(path, sizeof path, "%s/custos.db", dir);
    CU_ASSERT_EQUAL_FATAL(cu_store_open_audit_only(path, true, &s), CU_OK);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(s), CU_OK); /* nothing pending from elsewhere */
    uint64_t from = 1;
    cu_audit_record *r = NULL;
    size_t n = records(s, 1, &r);
    if (n > 0)
        from = r[n - 1].seq + 1;
    cu_audit_records_free(r, n);
    CU_ASSERT_EQUAL_FATAL(cu_keyring_software_new(key, sizeof key, &kr), CU_OK);
    /* Before custosd enables counting, nothing is counted. */
    cu_srv__keyuse_watch_keyring(kr, "/no/such/keyring.key");
    CU_ASSERT_EQUAL(cu_keyring_mac(kr, key, 3, mac), CU_OK);
    CU_ASSERT_PTR_NULL(cu_srv__keyuse_get0_name(CU_SRV_KEY_KEYRING));
    cu_srv__keyuse_enable();
    cu_srv__keyuse_watch_keyring(kr, "/no/such/keyring.key");
    CU_ASSERT_STRING_EQUAL(cu_srv__keyuse_get0_name(CU_SRV_KEY_KEYRING), "file:/no/such/keyring.key");
    CU_ASSERT_EQUAL(cu_keyring_seal(kr, "d", key, 3, mac), CU_OK);                 /* mac */
    CU_ASSERT_EQUAL(cu_keyring_seal_check(kr, "d", key, 3, mac), CU_OK);           /* mac */
    CU_ASSERT_EQUAL(cu_keyring_wrap(kr, key, 16, "enrollment/x", &w), CU_OK);      /* mac (derive) + wrap */
    CU_ASSERT_EQUAL(cu_keyring_unwrap(kr, w, "enrollment/x", &plain, &plen), CU_OK); /* unwrap */
    cu_keyring_secret_free(plain, plen);
    CU_ASSERT_EQUAL(cu_keyring_wrap(kr, key, 32, "custos tpm challenge v1|s|r|e|1", &tw), CU_OK);
    CU_ASSERT_EQUAL(cu_keyring_unwrap(kr, tw, "custos tpm challenge v1|s|r|e|1", &plain, &plen), CU_OK);
    cu_keyring_secret_free(plain, plen);
    /* A failed unwrap used the key too. */
    CU_ASSERT_EQUAL(cu_keyring_unwrap(kr, w, "enrollment/y", &plain, &plen), CU_E_VERIFY);
    CU_ASSERT_EQUAL(cu_audit_key_use_flush(s), CU_OK);
    n = records(s, from, &r);
    CU_ASSERT_EQUAL(n, 1);
    if (n == 1) {
        CU_ASSERT_STRING_EQUAL(r[0].type, "key.use");
        json_error_t e;
        json_t *j = json_loads(r[0].payload, 0, &e);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "key")), "file:/no/such/keyring.key");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "role")), "keyring");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "count")), 8);
        json_t *u = json_object_get(j, "uses");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "mac")), 3);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "wrap")), 1);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "unwrap")), 2);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "tpm-identity-wrap")), 1);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(u, "tpm-identity-unwrap")), 1);
        json_decref(j);
    }
    cu_audit_records_free(r, n);
    free(w);
    free(tw);
    cu_keyring_free(kr);
    cu_store_close(s);
    cu_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"registration ids and reasons escaped and cut", test_escape},
        {"a few records per address and minute", test_bound_per_address},
        {"a few records per minute from any number of addresses", test_bound_per_minute},
        {"summaries of what was not recorded", test_summaries},
        {"service-API refusals bounded apart", test_service_kind},
        {"the keyring's uses by operation", test_keyring_uses},
        {NULL, NULL},
    };
    if (cu_test_add_suite("custosd audit", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
