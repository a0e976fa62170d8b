/* The store: etags, seals, wrapped secrets, CA proof of possession, and
 * symmetric-key registrations end to end through the engine. */
#include "fixture.h"

#include <custos/sas.h>

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *KEY_B64 = "c3ltbWV0cmljLWtleS1mb3ItdGVzdHMtb25seS0zMmI=";

static cu_rc put_sym(fx *f, const char *id, bool enabled)
{
    char reason[512];
    cu_rc rc = fx_put_json(f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                           "{\"registrationId\":\"%s\",\"provisioningStatus\":\"%s\",\"attestation\":"
                           "{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                           id, enabled ? "enabled" : "disabled", KEY_B64);
    if (rc != CU_OK)
        fprintf(stderr, "put %s: %s\n", id, reason);
    return rc;
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(buf + i, needle, m) == 0)
            return true;
    return false;
}

static void test_etag_and_create(void)
{
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "etag") == 0);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-1", true), CU_OK);
    cu_enr *e = NULL, *e2 = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "DEV-1", &e), CU_OK);
    char etag[64];
    snprintf(etag, sizeof etag, "%s", cu_enr_get0_etag(e));
    CU_ASSERT_EQUAL(etag[0], '"');
    CU_ASSERT_EQUAL(strlen(etag), 38);
    CU_ASSERT_EQUAL(strlen(cu_enr_get0_created(e)), 28);
    CU_ASSERT_STRING_EQUAL(cu_enr_get0_symkey(e, CU_ENR_PRIMARY), KEY_B64);
    /* Update with the right etag. */
    CU_ASSERT_EQUAL(cu_enr_set_enabled(e, false), CU_OK);
    CU_ASSERT_EQUAL(cu_store_enr_put(f.store, e, etag, CU_STORE_REPLACE, reason, sizeof reason), CU_OK);
    CU_ASSERT_STRING_NOT_EQUAL(cu_enr_get0_etag(e), etag);
    /* Stale etag: refused, nothing written. */
    CU_ASSERT_EQUAL(cu_enr_set_enabled(e, true), CU_OK);
    CU_ASSERT_EQUAL(cu_store_enr_put(f.store, e, etag, 0, reason, sizeof reason), CU_E_STATE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "stale etag"));
    CU_ASSERT_EQUAL(cu_store_last_http_status(), 412);
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "dev-1", &e2), CU_OK);
    CU_ASSERT_FALSE(cu_enr_is_enabled(e2));
    cu_enr_free(e2);
    /* Create on an existing entry; replace a missing one; delete stale. */
    CU_ASSERT_EQUAL(cu_store_enr_put(f.store, e, NULL, CU_STORE_CREATE, reason, sizeof reason), CU_E_STATE);
    CU_ASSERT_EQUAL(cu_store_last_http_status(), 409);
    CU_ASSERT_EQUAL(cu_store_enr_delete(f.store, CU_ENR_INDIVIDUAL, "dev-1", etag, reason, sizeof reason), CU_E_STATE);
    CU_ASSERT_EQUAL(cu_store_enr_delete(f.store, CU_ENR_INDIVIDUAL, "nope", NULL, reason, sizeof reason), CU_E_OBJECT_NOT_FOUND);
    cu_enr_free(e);
    /* Paging. */
    for (int i = 0; i < 25; i++) {
        char id[32];
        snprintf(id, sizeof id, "page-%02d", i);
        CU_ASSERT_EQUAL(put_sym(&f, id, true), CU_OK);
    }
    char **ids = NULL;
    size_t n = 0, total = 0;
    char after[160] = "";
    do {
        CU_ASSERT_EQUAL_FATAL(cu_store_list(f.store, CU_KIND_ENROLLMENT, after[0] ? after : NULL, 10, &ids, &n), CU_OK);
        total += n;
        if (n)
            snprintf(after, sizeof after, "%s", ids[n - 1]);
        cu_store_ids_free(ids, n);
    } while (n == 10);
    CU_ASSERT_EQUAL(total, 26);
    uint64_t cnt = 0;
    CU_ASSERT_EQUAL(cu_store_count(f.store, CU_KIND_ENROLLMENT, &cnt), CU_OK);
    CU_ASSERT_EQUAL(cnt, 26);
    fx_close(&f);
}

static void test_seals_and_wrapping(void)
{
    fx f;
    char path[512], wal[520];
    CU_ASSERT_FATAL(fx_open(&f, "seal") == 0);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-1", false), CU_OK);
    snprintf(path, sizeof path, "%s/custos.db", f.dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    /* The key is not at rest in clear. */
    CU_ASSERT_FALSE(file_contains(path, KEY_B64));
    CU_ASSERT_FALSE(file_contains(wal, KEY_B64));
    if (fx_is_pg()) {
        char q[200];
        snprintf(q, sizeof q, "SELECT 1 FROM docs WHERE position('%s' in body) > 0", KEY_B64);
        CU_ASSERT_EQUAL(fx_sql(&f, q), 0);
        CU_ASSERT_EQUAL(fx_sql(&f, "SELECT 1 FROM docs WHERE kind=1"), 1);
    }
    /* Someone with write access to the database flips the status. */
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE docs SET body=replace(body,'\"disabled\"','\"enabled\"') WHERE kind=1"), 1);
    cu_enr *e = NULL;
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "dev-1", &e), CU_E_VERIFY);
    CU_ASSERT_PTR_NULL(e);
    /* The engine refuses to act on it (store error, no record). */
    char *tok = NULL;
    uint8_t *k = NULL;
    size_t kl = 0;
    CU_ASSERT_EQUAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL(cu_sas_sign(k, kl, "0ne00000001", "dev-1", (uint64_t)time(NULL) + 600, "registration", &tok), CU_OK);
    cu_prov_request req = {.registration_id = "dev-1", .authorization = tok};
    cu_prov_result res;
    CU_ASSERT_NOT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    cu_prov_result_clear(&res);
    CU_ASSERT_FALSE(fx_has_record(&f, "dev-1"));
    free(tok);
    cu_sas_key_free(k, kl);
    /* The operator repairs it by replacing or deleting the row. */
    CU_ASSERT_EQUAL(put_sym(&f, "dev-1", false), CU_OK);
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "dev-1", &e), CU_OK);
    cu_enr_free(e);
    e = NULL;
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE docs SET body=replace(body,'\"disabled\"','\"enabled\"') WHERE kind=1"), 1);
    char reason[512];
    CU_ASSERT_EQUAL(cu_store_enr_delete(f.store, CU_ENR_INDIVIDUAL, "dev-1", NULL, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "dev-1", &e), CU_E_OBJECT_NOT_FOUND);

    /* Opening the store under another service key is refused. */
    cu_keyring *other = NULL;
    cu_store *s2 = NULL;
    static const uint8_t k2[32] = "another-service-key-32-bytes!!!";
    CU_ASSERT_EQUAL(cu_keyring_software_new(k2, sizeof k2, &other), CU_OK);
    CU_ASSERT_EQUAL(fx_store_reopen(&f, other, &s2), CU_E_VERIFY);
    CU_ASSERT_PTR_NULL(s2);
    cu_keyring_free(other);
    fx_close(&f);
}

static cu_prov_outcome reg_sas(fx *f, const char *regid, const uint8_t *key, size_t kl, const char *scope,
                               const char *signed_id, long ttl, char *reason, size_t rlen)
{
    char *tok = NULL;
    cu_prov_outcome o = CU_PROV_UNDECIDED;
    if (cu_sas_sign(key, kl, scope, signed_id, (uint64_t)(time(NULL) + ttl), "registration", &tok) != CU_OK)
        return o;
    cu_prov_request req = {.registration_id = regid, .authorization = tok};
    cu_prov_result res;
    if (cu_prov_register(f->prov, &req, &res) == CU_OK) {
        o = res.outcome;
        snprintf(reason, rlen, "%s", res.explain.reason);
    } else {
        snprintf(reason, rlen, "error %.400s", cu_err_last()->msg);
    }
    cu_prov_result_clear(&res);
    free(tok);
    return o;
}

static void test_symmetric_registration(void)
{
    fx f;
    char reason[512];
    uint8_t *k = NULL, dk[32];
    size_t kl = 0;
    CU_ASSERT_FATAL(fx_open(&f, "sym") == 0);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-1", true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-1", k, kl, "0ne00000001", "dev-1", 600, reason, sizeof reason), CU_PROV_PROVISION);
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-1", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "assigned");
    CU_ASSERT_STRING_EQUAL(r.attestation, "symmetricKey");
    char *js = cu_reg_record_to_json(&r, true);
    CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"assignedHub\":\"hub1.example.net\""));
    free(js);
    cu_reg_record_clear(&r);

    /* A group: the device key is derived from the group key. */
    char greason[512];
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, greason, sizeof greason,
                                      "{\"enrollmentGroupId\":\"sym-group\",\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}", KEY_B64), CU_OK);
    CU_ASSERT_EQUAL(cu_sas_derive_key(k, kl, "grp-dev-7", dk), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "grp-dev-7", dk, 32, "0ne00000001", "grp-dev-7", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "grp-dev-7", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "sym-group");
    cu_reg_record_clear(&r);
    char **ids = NULL;
    size_t nids = 0;
    CU_ASSERT_EQUAL(cu_store_reg_list_by_group(f.store, "SYM-GROUP", NULL, 10, &ids, &nids), CU_OK);
    CU_ASSERT_EQUAL(nids, 1);
    if (nids == 1)
        CU_ASSERT_STRING_EQUAL(ids[0], "grp-dev-7");
    cu_store_ids_free(ids, nids);
    /* The group key itself cannot be used directly. */
    CU_ASSERT_EQUAL(reg_sas(&f, "grp-dev-8", k, kl, "0ne00000001", "grp-dev-8", 600, reason, sizeof reason), CU_PROV_REFUSE);

    /* Bad tokens: refused with a reason, nothing written. */
    struct {
        const char *regid, *scope, *signed_id, *why;
        const uint8_t *key;
        size_t kl;
        long ttl;
    } cases[] = {
        {"dev-2", "0ne00000001", "dev-2", "expired", NULL, 0, -3600},
        {"dev-2", "0ne99999999", "dev-2", "not for", NULL, 0, 600},
        {"dev-2", "0ne00000001", "dev-9", "not for", NULL, 0, 600},
        {"dev-2", "0ne00000001", "dev-2", "does not verify", dk, 32, 600},
    };
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-2", true), CU_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reason[0] = 0;
        cu_prov_outcome o = reg_sas(&f, cases[i].regid, cases[i].key ? cases[i].key : k,
                                    cases[i].key ? cases[i].kl : kl, cases[i].scope, cases[i].signed_id,
                                    cases[i].ttl, reason, sizeof reason);
        bool has = strstr(reason, cases[i].why) != NULL;
        if (o != CU_PROV_REFUSE || !has)
            fprintf(stderr, "sas case %zu: %d '%s'\n", i, o, reason);
        CU_ASSERT_EQUAL(o, CU_PROV_REFUSE);
        CU_ASSERT_TRUE(has);
        CU_ASSERT_FALSE(fx_has_record(&f, "dev-2"));
    }
    /* Missing fields. */
    cu_prov_request req = {.registration_id = "dev-2", .authorization = "SharedAccessSignature sr=x&se=1"};
    cu_prov_result res;
    CU_ASSERT_EQUAL(cu_prov_register(f.prov, &req, &res), CU_OK);
    CU_ASSERT_EQUAL(res.outcome, CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.explain.reason, "missing"));
    cu_prov_result_clear(&res);
    CU_ASSERT_FALSE(fx_has_record(&f, "dev-2"));

    /* Disabled individual enrollment: refused, nothing written. */
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-3", false), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-3", k, kl, "0ne00000001", "dev-3", 600, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "disabled"));
    CU_ASSERT_FALSE(fx_has_record(&f, "dev-3"));
    cu_sas_key_free(k, kl);
    fx_close(&f);
}

/* Secondary keys: a token signed with an individual enrollment's secondary
 * key, and one signed with the key derived from a group's secondary key,
 * provision as the primary would (the secondary key itself, not derived,
 * does not verify for a group's device). */
static void test_secondary_keys(void)
{
    fx f;
    char reason[512];
    static const char *SEC_B64 = "c2Vjb25kYXJ5LWtleS1mb3ItdGVzdHMtb25seS0zMmI=";
    uint8_t *k = NULL, *sk = NULL, dk[32];
    size_t kl = 0, skl = 0;
    cu_reg_record r;
    CU_ASSERT_FATAL(fx_open(&f, "symsec") == 0);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(SEC_B64, &sk, &skl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"dev-s\",\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                                      KEY_B64, SEC_B64), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-s", sk, skl, "0ne00000001", "dev-s", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-s", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "");
    cu_reg_record_clear(&r);

    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason,
                                      "{\"enrollmentGroupId\":\"sec-group\",\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                                      KEY_B64, SEC_B64), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_derive_key(sk, skl, "grp-s", dk), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "grp-s", dk, 32, "0ne00000001", "grp-s", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "grp-s", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "sec-group");
    cu_reg_record_clear(&r);
    /* The secondary key itself (not derived) does not verify for a group device. */
    CU_ASSERT_EQUAL(reg_sas(&f, "grp-t", sk, skl, "0ne00000001", "grp-t", 600, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_FALSE(fx_has_record(&f, "grp-t"));
    cu_sas_key_free(k, kl);
    cu_sas_key_free(sk, skl);
    fx_close(&f);
}

/* A disabled individual enrollment blocks its registration id whatever the
 * device presents: a token signed with the key derived from an enabled
 * group does not get past it. An enabled one whose key does not sign the
 * token leaves the decision to the groups. */
static void test_disabled_individual_blocks_group(void)
{
    fx f;
    tcert ca, leaf;
    char reason[512];
    uint8_t *k = NULL, dk[32];
    size_t kl = 0;
    CU_ASSERT_FATAL(fx_open(&f, "symblock") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason,
                                      "{\"enrollmentGroupId\":\"sym-group\",\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}", KEY_B64), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_derive_key(k, kl, "dev-x", dk), CU_OK);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-x", false), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-x", dk, 32, "0ne00000001", "dev-x", 600, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "individual enrollment 'dev-x' is disabled"));
    CU_ASSERT_FALSE(fx_has_record(&f, "dev-x"));
    /* The explanation names the individual enrollment as the deciding entry. */
    char *tok = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_sas_sign(dk, 32, "0ne00000001", "dev-x", (uint64_t)time(NULL) + 600, "registration",
                                      &tok), CU_OK);
    cu_prov_request req = {.registration_id = "dev-x", .authorization = tok};
    cu_prov_explain ex;
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.outcome, CU_PROV_REFUSE);
    CU_ASSERT_EQUAL(ex.decided, 0);
    CU_ASSERT_TRUE(ex.n > 0 && ex.cand[0].decided && strcmp(ex.cand[0].id, "dev-x") == 0);
    cu_prov_explain_clear(&ex);
    free(tok);

    /* Enabled, with a key that does not sign the token: the group decides. */
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-x", true), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-x", dk, 32, "0ne00000001", "dev-x", 600, reason, sizeof reason), CU_PROV_PROVISION);
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-x", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "sym-group");
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub1.example.net");
    cu_reg_record_clear(&r);

    /* Disabled again, the assigned device's record says so (hub kept);
     * enabled again while hub1 takes no devices: assigned, moved to hub2
     * per the reprovision policy (migrate by default). */
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-x", false), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-x", dk, 32, "0ne00000001", "dev-x", 600, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-x", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "disabled");
    CU_ASSERT_EQUAL(r.error_code, 401002);
    CU_ASSERT_STRING_EQUAL(r.error_message, "individual enrollment 'dev-x' is disabled");
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub1.example.net");
    cu_reg_record_clear(&r);
    cu_hub h1 = {"hub1.example.net", 1, false}, h2 = {"hub2.example.net", 1, true};
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h1, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-x", true), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-x", dk, 32, "0ne00000001", "dev-x", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-x", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "assigned");
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub2.example.net");
    CU_ASSERT_STRING_EQUAL(r.substatus, "deviceDataMigrated");
    CU_ASSERT_EQUAL(r.error_code, 0);
    CU_ASSERT_STRING_EQUAL(r.error_message, "");
    cu_reg_record_clear(&r);
    /* Never re-provision: disabled and enabled again, it stays on hub2
     * although only hub1 takes devices now. */
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason,
                                      "{\"enrollmentGroupId\":\"sym-group\",\"provisioningStatus\":\"disabled\","
                                      "\"reprovisionPolicy\":{\"updateHubAssignment\":false},\"attestation\":"
                                      "{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                                      KEY_B64), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-x", dk, 32, "0ne00000001", "dev-x", 600, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-x", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "disabled");
    CU_ASSERT_STRING_EQUAL(r.error_message, "enrollment group 'sym-group' is disabled");
    cu_reg_record_clear(&r);
    h1.apply = true;
    h2.apply = false;
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h1, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason,
                                      "{\"enrollmentGroupId\":\"sym-group\",\"reprovisionPolicy\":"
                                      "{\"updateHubAssignment\":false},\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}", KEY_B64), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-x", dk, 32, "0ne00000001", "dev-x", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-x", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "assigned");
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub2.example.net");
    CU_ASSERT_STRING_EQUAL(r.substatus, "deviceDataMigrated");
    cu_reg_record_clear(&r);

    /* Disabled with another attestation (X.509): blocks the group's key too. */
    CU_ASSERT_FATAL(tc_make(&ca, "Block CA", true, NULL, -100, 86400) == 0);
    CU_ASSERT_FATAL(tc_make(&leaf, "dev-y", false, &ca, -100, 86400) == 0);
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "dev-y", &leaf, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_derive_key(k, kl, "dev-y", dk), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-y", dk, 32, "0ne00000001", "dev-y", 600, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "individual enrollment 'dev-y' is disabled"));
    CU_ASSERT_FALSE(fx_has_record(&f, "dev-y"));
    tc_free(&ca);
    tc_free(&leaf);
    cu_sas_key_free(k, kl);
    fx_close(&f);
}

static cu_rc put_sym_group(fx *f, const char *id, char *reason, size_t rlen)
{
    return fx_put_json(f, CU_ENR_GROUP, reason, rlen,
                       "{\"enrollmentGroupId\":\"%s\",\"attestation\":{\"type\":\"symmetricKey\","
                       "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}", id, KEY_B64);
}

/* Every symmetric-key group is tried for a token no other entry verifies,
 * so the store refuses one past its limit (400, the limit named, nothing
 * written); replacing one, or other groups, is not limited. */
static void test_symkey_group_limit(void)
{
    fx f;
    tcert ca;
    char reason[512];
    unsigned long max = 0;
    cu_enr *e = NULL;
    CU_ASSERT_FATAL(fx_open(&f, "symlimit") == 0);
    CU_ASSERT_EQUAL(cu_store_symkey_group_limit(f.store, &max), CU_OK);
    CU_ASSERT_EQUAL(max, CU_STORE_DEFAULT_MAX_SYMKEY_GROUPS);
    CU_ASSERT_EQUAL(cu_store_set_symkey_group_limit(f.store, 0), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_store_set_symkey_group_limit(f.store, CU_STORE_MAX_SYMKEY_GROUPS_CEILING + 1), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL_FATAL(cu_store_set_symkey_group_limit(f.store, 2), CU_OK);
    CU_ASSERT_EQUAL(cu_store_symkey_group_limit(f.store, &max), CU_OK);
    CU_ASSERT_EQUAL(max, 2);
    CU_ASSERT_EQUAL(put_sym_group(&f, "sym-1", reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL(put_sym_group(&f, "sym-2", reason, sizeof reason), CU_OK);
    reason[0] = 0;
    CU_ASSERT_EQUAL(put_sym_group(&f, "sym-3", reason, sizeof reason), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_store_last_http_status(), 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "limit of 2"));
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_GROUP, "sym-3", &e), CU_E_OBJECT_NOT_FOUND);
    /* A replacement is not a new group; X.509 groups are not counted. */
    CU_ASSERT_EQUAL(put_sym_group(&f, "SYM-2", reason, sizeof reason), CU_OK);
    CU_ASSERT_FATAL(tc_make(&ca, "Limit CA", true, NULL, -100, 86400) == 0);
    CU_ASSERT_EQUAL(fx_group_x509(&f, "x509-1", &ca, true), CU_OK);
    /* Turning the X.509 group into a symmetric-key one would be one more. */
    CU_ASSERT_EQUAL(put_sym_group(&f, "x509-1", reason, sizeof reason), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_get(f.store, CU_ENR_GROUP, "x509-1", &e), CU_OK);
    CU_ASSERT_EQUAL(cu_enr_get_att_type(e), CU_ATT_X509);
    cu_enr_free(e);
    e = NULL;
    /* Room again after a delete, or with a higher limit. */
    CU_ASSERT_EQUAL(cu_store_enr_delete(f.store, CU_ENR_GROUP, "sym-1", NULL, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL(put_sym_group(&f, "sym-3", reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL(put_sym_group(&f, "sym-4", reason, sizeof reason), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL(cu_store_set_symkey_group_limit(f.store, 3), CU_OK);
    CU_ASSERT_EQUAL(put_sym_group(&f, "sym-4", reason, sizeof reason), CU_OK);
    /* Lowering it removes nothing: the groups there still provision. */
    CU_ASSERT_EQUAL(cu_store_set_symkey_group_limit(f.store, 1), CU_OK);
    char **ids = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(cu_store_symkey_groups(f.store, &ids, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 3);
    cu_store_ids_free(ids, n);
    uint8_t *k = NULL, dk[32];
    size_t kl = 0;
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_derive_key(k, kl, "lim-dev", dk), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "lim-dev", dk, 32, "0ne00000001", "lim-dev", 600, reason, sizeof reason),
                    CU_PROV_PROVISION);
    cu_sas_key_free(k, kl);
    tc_free(&ca);
    fx_close(&f);
}

static void test_reprovision(void)
{
    fx f;
    char reason[512];
    uint8_t *k = NULL;
    size_t kl = 0;
    CU_ASSERT_FATAL(fx_open(&f, "reprov") == 0);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-1", true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-1", k, kl, "0ne00000001", "dev-1", 600, reason, sizeof reason), CU_PROV_PROVISION);
    /* hub1 stops taking devices; hub2 appears. */
    cu_hub h1 = {"hub1.example.net", 1, false}, h2 = {"hub2.example.net", 5, true};
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h1, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-1", k, kl, "0ne00000001", "dev-1", 600, reason, sizeof reason), CU_PROV_PROVISION);
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-1", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub2.example.net");
    CU_ASSERT_STRING_EQUAL(r.substatus, "deviceDataMigrated");
    cu_reg_record_clear(&r);
    /* Back to the first hub: reprovisionedToInitialAssignment. */
    h1.apply = true;
    h2.apply = false;
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h1, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-1", k, kl, "0ne00000001", "dev-1", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-1", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub1.example.net");
    CU_ASSERT_STRING_EQUAL(r.substatus, "reprovisionedToInitialAssignment");
    cu_reg_record_clear(&r);
    /* Never re-provision: stays on hub1 although only hub2 takes devices. */
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                "{\"registrationId\":\"dev-1\",\"reprovisionPolicy\":{\"updateHubAssignment\":false},"
                                "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
                                KEY_B64), CU_OK);
    h1.apply = false;
    h2.apply = true;
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h1, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-1", k, kl, "0ne00000001", "dev-1", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-1", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub1.example.net");
    cu_reg_record_clear(&r);
    /* No hub at all: a failed record with 400208. */
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "dev-2", true), CU_OK);
    CU_ASSERT_EQUAL(cu_store_hub_delete(f.store, "hub2.example.net"), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-2", k, kl, "0ne00000001", "dev-2", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-2", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "failed");
    CU_ASSERT_EQUAL(r.error_code, 400208);
    cu_reg_record_clear(&r);
    cu_sas_key_free(k, kl);
    fx_close(&f);
}

/* An enrollment or group may only name linked hubs: refused when written
 * (400, the hub named, nothing written). A hub unlinked afterwards is
 * skipped at allocation, and a device left with no hub gets a failed
 * record with 400208, never the unlinked hub. */
static void test_unlinked_hubs(void)
{
    fx f;
    char reason[512];
    cu_enr *e = NULL;
    uint8_t *k = NULL;
    size_t kl = 0;
    cu_reg_record r;
    CU_ASSERT_FATAL(fx_open(&f, "hubs") == 0);
    const char *ind = "{\"registrationId\":\"dev-h\",%s,\"attestation\":{\"type\":\"symmetricKey\","
                      "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}";
    struct {
        cu_enr_kind kind;
        const char *hubs, *field;
    } bad[] = {
        {CU_ENR_INDIVIDUAL, "\"iotHubs\":[\"hub1.example.net\",\"nowhere.example.net\"]", "iotHubs"},
        {CU_ENR_INDIVIDUAL, "\"iotHubHostName\":\"nowhere.example.net\"", "iotHubHostName"},
        {CU_ENR_INDIVIDUAL, "\"allocationPolicy\":\"static\",\"iotHubs\":[\"nowhere.example.net\"]", "iotHubs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reason[0] = 0;
        CU_ASSERT_EQUAL(fx_put_json(&f, bad[i].kind, reason, sizeof reason, ind, bad[i].hubs, KEY_B64),
                        CU_E_INVALID_ARG);
        CU_ASSERT_EQUAL(cu_store_last_http_status(), 400);
        CU_ASSERT_PTR_NOT_NULL(strstr(reason, "'nowhere.example.net' is not linked"));
        CU_ASSERT_TRUE(strncmp(reason, bad[i].field, strlen(bad[i].field)) == 0);
        CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "dev-h", &e), CU_E_OBJECT_NOT_FOUND);
    }
    const char *grp = "{\"enrollmentGroupId\":\"grp-h\",\"iotHubs\":[\"%s\"],\"attestation\":"
                      "{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\"}}}";
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason, grp, "nowhere.example.net", KEY_B64),
                    CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "'nowhere.example.net' is not linked"));
    CU_ASSERT_EQUAL(cu_store_enr_get(f.store, CU_ENR_GROUP, "grp-h", &e), CU_E_OBJECT_NOT_FOUND);
    /* Linked hubs are accepted, in any case. */
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason, grp, "HUB1.example.net", KEY_B64), CU_OK);

    /* Replacing an entry with an unlinked hub leaves it as it was. */
    cu_hub h2 = {"hub2.example.net", 1, true};
    CU_ASSERT_EQUAL_FATAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason, ind,
                                      "\"iotHubs\":[\"hub2.example.net\"]", KEY_B64), CU_OK);
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason, ind,
                                "\"iotHubs\":[\"nowhere.example.net\"]", KEY_B64), CU_E_INVALID_ARG);
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_get(f.store, CU_ENR_INDIVIDUAL, "dev-h", &e), CU_OK);
    CU_ASSERT_STRING_EQUAL(cu_enr_get0_hub(e, 0), "hub2.example.net");
    cu_enr_free(e);

    /* hub2 is unlinked later: the device is not sent there. */
    CU_ASSERT_EQUAL_FATAL(cu_store_hub_delete(f.store, "hub2.example.net"), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_sas_key_decode(KEY_B64, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL(reg_sas(&f, "dev-h", k, kl, "0ne00000001", "dev-h", 600, reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "dev-h", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "failed");
    CU_ASSERT_EQUAL(r.error_code, 400208);
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error_message, "hub2.example.net"));
    cu_reg_record_clear(&r);
    cu_sas_key_free(k, kl);
    fx_close(&f);
}

static void test_ca_proof_of_possession(void)
{
    fx f;
    tcert ca, impostor, dev;
    char reason[512], *code = NULL;
    CU_ASSERT_FATAL(fx_open(&f, "ca") == 0);
    CU_ASSERT_FATAL(tc_make(&ca, "Factory CA", true, NULL, -100, 86400 * 30) == 0);
    CU_ASSERT_FATAL(tc_make(&impostor, "Factory CA", true, NULL, -100, 86400 * 30) == 0);
    CU_ASSERT_FATAL(tc_make(&dev, "ca-dev-1", false, &ca, -100, 86400 * 30) == 0);
    char *pem = tc_pem(&ca);
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_add(f.store, "factory", pem, false, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL(cu_store_ca_add(f.store, "factory", pem, false, reason, sizeof reason), CU_E_STATE);
    /* A group may not reference an unverified CA. */
    const char *grp = "{\"enrollmentGroupId\":\"by-ref\",\"attestation\":{\"type\":\"x509\",\"x509\":"
                      "{\"caReferences\":{\"primary\":\"factory\"}}}}";
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason, "%s", grp), CU_E_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "not verified"));
    /* Verify with a proof signed by another key: refused. */
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_gen_code(f.store, "factory", NULL, &code, reason, sizeof reason), CU_OK);
    tcert proof;
    CU_ASSERT_FATAL(tc_make(&proof, code, false, &impostor, -100, 86400) == 0);
    char *ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", NULL, ppem, reason, sizeof reason), CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "not signed by"));
    free(ppem);
    tc_free(&proof);
    /* A proof with the wrong CN: refused. */
    CU_ASSERT_FATAL(tc_make(&proof, "not-the-code", false, &ca, -100, 86400) == 0);
    ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", NULL, ppem, reason, sizeof reason), CU_E_VERIFY);
    free(ppem);
    tc_free(&proof);
    /* The owner's proof, but expired, or not yet valid: refused. */
    CU_ASSERT_FATAL(tc_make(&proof, code, false, &ca, -2 * 86400, -86400) == 0);
    ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", NULL, ppem, reason, sizeof reason), CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "has expired"));
    free(ppem);
    tc_free(&proof);
    CU_ASSERT_FATAL(tc_make(&proof, code, false, &ca, 86400, 2 * 86400) == 0);
    ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", NULL, ppem, reason, sizeof reason), CU_E_VERIFY);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "not yet valid"));
    free(ppem);
    tc_free(&proof);
    bool verified = true;
    X509 *x = NULL;
    CU_ASSERT_EQUAL(cu_store_ca_get_cert(f.store, "factory", &x, &verified), CU_OK);
    CU_ASSERT_FALSE(verified);
    X509_free(x);
    x = NULL;
    /* The owner's valid proof, with a stale If-Match: refused (412); with
     * the CA's etag: verified. */
    char *cajs = NULL, etag[64] = "";
    CU_ASSERT_EQUAL_FATAL(cu_store_ca_get_json(f.store, "factory", &cajs), CU_OK);
    json_error_t jerr;
    json_t *caj = json_loads(cajs, 0, &jerr);
    const char *et = json_string_value(json_object_get(caj, "etag"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(et);
    snprintf(etag, sizeof etag, "%s", et);
    json_decref(caj);
    free(cajs);
    CU_ASSERT_FATAL(tc_make(&proof, code, false, &ca, -100, 86400) == 0);
    ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", "\"00000000-0000-0000-0000-000000000000\"", ppem, reason,
                                       sizeof reason), CU_E_STATE);
    CU_ASSERT_EQUAL(cu_store_last_http_status(), 412);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "stale etag"));
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", etag, ppem, reason, sizeof reason), CU_OK);
    free(ppem);
    tc_free(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_get_cert(f.store, "factory", &x, &verified), CU_OK);
    CU_ASSERT_TRUE(verified);
    X509_free(x);
    /* The code was one-time: a fresh proof of it is refused. */
    CU_ASSERT_FATAL(tc_make(&proof, code, false, &ca, -100, 86400) == 0);
    ppem = tc_pem(&proof);
    CU_ASSERT_EQUAL(cu_store_ca_verify(f.store, "factory", NULL, ppem, reason, sizeof reason), CU_E_STATE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "no verification code"));
    free(ppem);
    tc_free(&proof);
    free(code);
    CU_ASSERT_EQUAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason, "%s", grp), CU_OK);
    cu_x509_chain *ch = tc_chain(&dev, NULL);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "ca-dev-1", ch, reason, sizeof reason), CU_PROV_PROVISION);
    cu_x509_chain_free(ch);
    /* A referenced CA cannot be deleted. */
    CU_ASSERT_EQUAL(cu_store_ca_delete(f.store, "factory", NULL, reason, sizeof reason), CU_E_STATE);
    free(pem);
    tc_free(&ca);
    tc_free(&impostor);
    tc_free(&dev);
    fx_close(&f);
}

/* A SQLite store of schema 2 (documents WITHOUT ROWID) opens migrated to
 * 3 (a rowid table and an index): every document still reads under its
 * seal, its index keys still find it, and writes go on. */
static void test_schema_3(void)
{
    fx f;
    cu_store *s = NULL;
    cu_enr *e = NULL;
    char *op = NULL, **ids = NULL;
    size_t n = 0;
    if (fx_is_pg())
        return; /* PostgreSQL's own versions: test_pg */
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, "schema3"), 0);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "mig-1", true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(put_sym(&f, "mig-2", false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_store_op_put(f.store, "mig-1", "{\"operationId\":\"5.mig\"}"), CU_OK);
    cu_prov_free(f.prov);
    f.prov = NULL;
    cu_store_close(f.store);
    f.store = NULL;
    /* Back to schema 2, as a store written before 2026-11-28 has it. */
    CU_ASSERT_EQUAL_FATAL(fx_sql(&f, "BEGIN;"
                                     "CREATE TABLE docs_v2(kind INTEGER NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
                                     "  seal BLOB NOT NULL, PRIMARY KEY(kind, id)) WITHOUT ROWID;"
                                     "INSERT INTO docs_v2 SELECT kind, id, body, seal FROM docs;"
                                     "DROP TABLE docs; ALTER TABLE docs_v2 RENAME TO docs;"
                                     "PRAGMA user_version=2; COMMIT;") >= 0,
                          true);
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE docs SET kind=kind WHERE rowid > 0"), -1); /* no rowid yet */

    CU_ASSERT_EQUAL_FATAL(fx_store_reopen(&f, f.kr, &s), CU_OK);
    CU_ASSERT(fx_sql(&f, "UPDATE docs SET kind=kind WHERE rowid > 0") >= 3);
    CU_ASSERT_EQUAL(cu_store_enr_get(s, CU_ENR_INDIVIDUAL, "MIG-1", &e), CU_OK);
    CU_ASSERT_TRUE(e != NULL && cu_enr_is_enabled(e));
    cu_enr_free(e);
    e = NULL;
    CU_ASSERT_EQUAL(cu_store_enr_get(s, CU_ENR_INDIVIDUAL, "mig-2", &e), CU_OK);
    CU_ASSERT_TRUE(e != NULL && !cu_enr_is_enabled(e));
    cu_enr_free(e);
    CU_ASSERT_EQUAL(cu_store_op_get(s, "mig-1", &op), CU_OK);
    CU_ASSERT_TRUE(op != NULL && strcmp(op, "{\"operationId\":\"5.mig\"}") == 0);
    free(op);
    CU_ASSERT_EQUAL(cu_store_list(s, CU_KIND_ENROLLMENT, NULL, 10, &ids, &n), CU_OK);
    CU_ASSERT_EQUAL(n, 2);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    /* A replace is in place, a new document is added. */
    CU_ASSERT_EQUAL(cu_store_op_put(s, "mig-1", "{\"operationId\":\"5.mig2\"}"), CU_OK);
    CU_ASSERT_EQUAL(cu_store_op_put(s, "mig-3", "{}"), CU_OK);
    CU_ASSERT_EQUAL(cu_store_op_get(s, "mig-1", &op), CU_OK);
    CU_ASSERT_TRUE(op != NULL && strcmp(op, "{\"operationId\":\"5.mig2\"}") == 0);
    free(op);
    CU_ASSERT_EQUAL(fx_sql(&f, "UPDATE docs SET kind=kind WHERE kind=7"), 2);
    cu_store_close(s);
    fx_close(&f);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"etags, create/replace, paging", test_etag_and_create},
        {"seals and wrapped secrets", test_seals_and_wrapping},
        {"symmetric-key registrations and bad tokens", test_symmetric_registration},
        {"secondary keys, individual and group", test_secondary_keys},
        {"a disabled individual blocks a group-derived key", test_disabled_individual_blocks_group},
        {"reprovisioning and substatus", test_reprovision},
        {"symmetric-key group limit", test_symkey_group_limit},
        {"only linked hubs, when written and when allocating", test_unlinked_hubs},
        {"CA proof of possession", test_ca_proof_of_possession},
        {"schema 3: documents in a rowid table", test_schema_3},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_store", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
