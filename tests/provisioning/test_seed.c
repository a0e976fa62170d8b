/* The seed document's example, and bad X.509 inputs.
 *
 * Five devices: root -> A -> devices 1-3, root -> B -> devices 4-5.
 * 1. One enabled group on the root: all five provision.
 * 2. A disabled group on B: 4 and 5 are refused, 1-3 still provision.
 * 3. A disabled individual enrollment for device 3: it is refused, 1 and 2
 *    still provision.
 * A refused device that was assigned keeps its record, marked disabled. */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY 86400L

static fx_seed sd;

static int setup(void) { return fx_seed_make(&sd); }

static int teardown(void)
{
    fx_seed_free(&sd);
    return 0;
}

static void expect(fx *f, const bool want[5], const char *stage)
{
    for (int i = 0; i < 5; i++) {
        char reason[512];
        cu_prov_outcome o = fx_register_x509(f, fx_seed_ids[i], sd.chain[i], reason, sizeof reason);
        if ((o == CU_PROV_PROVISION) != want[i])
            fprintf(stderr, "%s: %s: got %d (%s)\n", stage, fx_seed_ids[i], o, reason);
        CU_ASSERT_EQUAL(o, want[i] ? CU_PROV_PROVISION : CU_PROV_REFUSE);
    }
}

/* regid's record: status, hub and the entry errorMessage names; the etag
 * into etag when not NULL. */
static void expect_record(fx *f, const char *regid, const char *status, const char *hub, const char *entry,
                          char *etag)
{
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f->store, regid, &r), CU_OK);
    if (strcmp(r.status, status) != 0)
        fprintf(stderr, "%s: status %s, not %s (%s)\n", regid, r.status, status, r.error_message);
    CU_ASSERT_STRING_EQUAL(r.status, status);
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, hub);
    CU_ASSERT_STRING_EQUAL(r.device_id, regid);
    if (entry != NULL) {
        CU_ASSERT_EQUAL(r.error_code, 401002);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.error_message, entry));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.error_message, "is disabled"));
    } else {
        CU_ASSERT_EQUAL(r.error_code, 0);
        CU_ASSERT_STRING_EQUAL(r.error_message, "");
        CU_ASSERT_STRING_EQUAL(r.substatus, "initialAssignment");
    }
    if (etag != NULL)
        snprintf(etag, 48, "%s", r.etag);
    cu_reg_record_clear(&r);
}

static void test_seed_example(void)
{
    fx f;
    CU_ASSERT_FATAL(fx_open(&f, "seed") == 0);

    /* Nothing enrolled: everyone is refused. */
    const bool none[5] = {false, false, false, false, false};
    expect(&f, none, "stage 0");
    for (int i = 0; i < 5; i++)
        CU_ASSERT_FALSE(fx_has_record(&f, fx_seed_ids[i]));

    /* 1. One enabled group on the root. */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "root-group", &sd.root, true), CU_OK);
    const bool all[5] = {true, true, true, true, true};
    expect(&f, all, "stage 1");
    cu_reg_record r;
    CU_ASSERT_EQUAL(cu_store_reg_get(f.store, "device-4", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.status, "assigned");
    CU_ASSERT_STRING_EQUAL(r.assigned_hub, "hub1.example.net");
    CU_ASSERT_STRING_EQUAL(r.device_id, "device-4");
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "root-group");
    CU_ASSERT_STRING_EQUAL(r.substatus, "initialAssignment");
    CU_ASSERT_EQUAL(strlen(r.created), 28); /* 2022-08-31T22:02:50.5163352Z */
    CU_ASSERT_EQUAL(r.etag[0], '"');
    cu_reg_record_clear(&r);

    /* 2. B is compromised: a disabled group on B. */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-b", &sd.ca_b, false), CU_OK);
    const bool no_b[5] = {true, true, true, false, false};
    char etag4[48], etag4b[48];
    expect_record(&f, "device-4", "assigned", "hub1.example.net", NULL, etag4);
    expect(&f, no_b, "stage 2");
    /* 4 and 5 were assigned: their records now say B blocks them, and
     * where they were (the hub, the device id, the group that assigned). */
    expect_record(&f, "device-4", "disabled", "hub1.example.net", "enrollment group 'group-b'", etag4b);
    CU_ASSERT_STRING_NOT_EQUAL(etag4, etag4b);
    expect_record(&f, "device-5", "disabled", "hub1.example.net", "enrollment group 'group-b'", NULL);
    CU_ASSERT_EQUAL(cu_store_reg_get(f.store, "device-4", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "root-group");
    CU_ASSERT_STRING_EQUAL(r.substatus, "initialAssignment");
    cu_reg_record_clear(&r);
    for (int i = 0; i < 3; i++)
        expect_record(&f, fx_seed_ids[i], "assigned", "hub1.example.net", NULL, NULL);

    /* 3. Device 3 is compromised: a disabled individual enrollment. */
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-3", &sd.dev[2], false), CU_OK);
    const bool no_3[5] = {true, true, false, false, false};
    expect(&f, no_3, "stage 3");
    expect_record(&f, "device-3", "disabled", "hub1.example.net", "individual enrollment 'device-3'", NULL);
    /* Refused again, the record is already right: not rewritten. */
    expect_record(&f, "device-4", "disabled", "hub1.example.net", "enrollment group 'group-b'", etag4);
    CU_ASSERT_STRING_EQUAL(etag4, etag4b);

    /* The explanation names each candidate in precedence order. */
    cu_prov_request req = {.registration_id = "device-4", .chain = sd.chain[3]};
    cu_prov_explain ex;
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.outcome, CU_PROV_REFUSE);
    CU_ASSERT_EQUAL_FATAL(ex.n, 3);
    CU_ASSERT_STRING_EQUAL(ex.cand[0].kind, "individual");
    CU_ASSERT_FALSE(ex.cand[0].exists);
    CU_ASSERT_STRING_EQUAL(ex.cand[1].id, "group-b");
    CU_ASSERT_TRUE(ex.cand[1].decided);
    CU_ASSERT_FALSE(ex.cand[1].enabled);
    CU_ASSERT_STRING_EQUAL(ex.cand[2].id, "root-group");
    CU_ASSERT_FALSE(ex.cand[2].decided);
    CU_ASSERT_EQUAL(ex.decided, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(ex.reason, "disabled"));
    char *text = cu_prov_explain_to_text(&ex);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "<- decided"));
    free(text);
    cu_prov_explain_clear(&ex);

    req.registration_id = "device-3";
    req.chain = sd.chain[2];
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.decided, 0);
    CU_ASSERT_TRUE(ex.cand[0].matched);
    CU_ASSERT_EQUAL(ex.outcome, CU_PROV_REFUSE);
    cu_prov_explain_clear(&ex);

    /* Re-enable B: 4 and 5 come back (the group on B now decides, enabled). */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-b", &sd.ca_b, true), CU_OK);
    const bool b_back[5] = {true, true, false, true, true};
    expect(&f, b_back, "stage 4");
    expect_record(&f, "device-4", "assigned", "hub1.example.net", NULL, NULL);
    expect_record(&f, "device-5", "assigned", "hub1.example.net", NULL, NULL);
    CU_ASSERT_EQUAL(cu_store_reg_get(f.store, "device-4", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "group-b");
    cu_reg_record_clear(&r);
    expect_record(&f, "device-3", "disabled", "hub1.example.net", "individual enrollment 'device-3'", NULL);
    /* And device 3's individual enrollment enabled again. */
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-3", &sd.dev[2], true), CU_OK);
    const bool all_back[5] = {true, true, true, true, true};
    expect(&f, all_back, "stage 5");
    expect_record(&f, "device-3", "assigned", "hub1.example.net", NULL, NULL);
    fx_close(&f);
}

/* An individual enrollment must match the leaf itself, not only its CN: a
 * different certificate with the same CN does not get the individual's
 * decision. */
static void test_individual_needs_same_cert(void)
{
    fx f;
    tcert other;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "seedcert") == 0);
    CU_ASSERT_FATAL(tc_make(&other, "device-1", false, &sd.ca_a, -DAY, 365 * DAY) == 0);
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-1", &other, true), CU_OK);
    /* device-1's real certificate is not the enrolled one; no group: refused. */
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_FALSE(fx_has_record(&f, "device-1"));
    /* The enrolled one (self-standing) provisions, even without a group. */
    cu_x509_chain *ch = tc_chain(&other, &sd.ca_a, NULL);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", ch, reason, sizeof reason), CU_PROV_PROVISION);
    cu_x509_chain_free(ch);
    tc_free(&other);
    fx_close(&f);
}

/* An individual enrollment with another attestation does not match an
 * X.509 device: the groups decide, as if it were not there. */
static void test_individual_other_attestation(void)
{
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "seedatt") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"device-1\",\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"}}}"),
                          CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_FALSE(fx_has_record(&f, "device-1"));
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "root", &sd.root, true), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_PROVISION);
    fx_close(&f);
}

/* A disabled individual enrollment refuses its registration id whatever the
 * device presents: one of a group's X.509 devices is blocked by it, with any
 * attestation and whether or not its certificate is the device's. */
static void test_disabled_individual_blocks_chain(void)
{
    fx f;
    tcert other;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "seedblock") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "root-group", &sd.root, true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"device-1\",\"provisioningStatus\":\"disabled\","
                                      "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                                      "{\"primaryKey\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"}}}"),
                          CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "individual enrollment 'device-1' is disabled"));
    CU_ASSERT_FALSE(fx_has_record(&f, "device-1"));
    /* It decides; the groups are listed, not consulted. */
    cu_prov_request req = {.registration_id = "device-1", .chain = sd.chain[0]};
    cu_prov_explain ex;
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.decided, 0);
    CU_ASSERT_EQUAL_FATAL(ex.n, 3);
    CU_ASSERT_TRUE(ex.cand[0].decided);
    CU_ASSERT_STRING_EQUAL(ex.cand[2].id, "root-group");
    CU_ASSERT_FALSE(ex.cand[2].decided);
    cu_prov_explain_clear(&ex);
    /* An X.509 one for another certificate of the same CN blocks too. */
    CU_ASSERT_FATAL(tc_make(&other, "device-2", false, &sd.ca_a, -DAY, 365 * DAY) == 0);
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-2", &other, false), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-2", sd.chain[1], reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "individual enrollment 'device-2' is disabled"));
    CU_ASSERT_FALSE(fx_has_record(&f, "device-2"));
    /* The rest of the group still provisions. */
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-3", sd.chain[2], reason, sizeof reason), CU_PROV_PROVISION);
    tc_free(&other);
    fx_close(&f);
}

/* "The first entry found decides", not "any disabled entry refuses": an
 * enabled entry lower in the precedence wins over a disabled one above it
 * (a disabled root group under an enabled group on A; an enabled individual
 * above a disabled group on B). */
static void test_first_entry_decides(void)
{
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "seedfirst") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "root-group", &sd.root, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-a", &sd.ca_a, true), CU_OK);
    const bool only_a[5] = {true, true, true, false, false};
    expect(&f, only_a, "disabled root, enabled A");
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "device-2", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "group-a");
    cu_reg_record_clear(&r);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-5", sd.chain[4], reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "'root-group' is disabled"));

    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-b", &sd.ca_b, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_individual_x509(&f, "device-4", &sd.dev[3], true), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-4", sd.chain[3], reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "device-4", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "");
    cu_reg_record_clear(&r);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-5", sd.chain[4], reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "'group-b' is disabled"));
    fx_close(&f);
}

/* Three levels: root -> I1 -> I2 -> device. The group of the lowest
 * intermediate decides before I1's and the root's, whichever way their
 * statuses point; without it, I1's decides before the root's. */
static void test_three_levels(void)
{
    fx f;
    tcert i1, i2, dev;
    char reason[512];
    cu_prov_explain ex;
    CU_ASSERT_FATAL(fx_open(&f, "seed3") == 0);
    CU_ASSERT_FATAL(tc_make(&i1, "Factory I1", true, &sd.root, -DAY, 900 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&i2, "Line I2", true, &i1, -DAY, 800 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&dev, "device-l3", false, &i2, -DAY, 365 * DAY) == 0);
    cu_x509_chain *ch = tc_chain(&dev, &i2, &i1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    cu_prov_request req = {.registration_id = "device-l3", .chain = ch};

    /* I2 enabled, I1 and the root disabled: I2's group provisions. */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-root", &sd.root, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-i1", &i1, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-i2", &i2, true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.outcome, CU_PROV_PROVISION);
    CU_ASSERT_EQUAL_FATAL(ex.n, 4);
    CU_ASSERT_EQUAL(ex.decided, 1);
    CU_ASSERT_STRING_EQUAL(ex.cand[1].id, "g-i2");
    CU_ASSERT_STRING_EQUAL(ex.cand[2].id, "g-i1");
    CU_ASSERT_STRING_EQUAL(ex.cand[3].id, "g-root");
    CU_ASSERT_EQUAL(ex.cand[3].depth, 3);
    cu_prov_explain_clear(&ex);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-l3", ch, reason, sizeof reason), CU_PROV_PROVISION);

    /* I2 disabled, I1 and the root enabled: I2's group refuses. */
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-root", &sd.root, true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-i1", &i1, true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-i2", &i2, false), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-l3", ch, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "'g-i2' is disabled"));

    /* No group on I2: I1's decides before the root's, either way. */
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_delete(f.store, CU_ENR_GROUP, "g-i2", NULL, reason, sizeof reason), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-i1", &i1, false), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-l3", ch, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "'g-i1' is disabled"));
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-root", &sd.root, false), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "g-i1", &i1, true), CU_OK);
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.outcome, CU_PROV_PROVISION);
    CU_ASSERT_EQUAL(ex.decided, 2);
    CU_ASSERT_TRUE(ex.n == 4 && !ex.cand[1].exists && strcmp(ex.cand[2].id, "g-i1") == 0);
    cu_prov_explain_clear(&ex);

    cu_x509_chain_free(ch);
    tc_free(&dev);
    tc_free(&i2);
    tc_free(&i1);
    fx_close(&f);
}

/* Secondary certificates: an individual enrollment whose secondary client
 * certificate is the device's leaf, and a group whose secondary signing
 * certificate is in the device's chain, each decide as the primary would. */
static void test_secondary_certificates(void)
{
    fx f;
    tcert other;
    char reason[512];
    cu_prov_explain ex;
    CU_ASSERT_FATAL(fx_open(&f, "seedsec") == 0);
    CU_ASSERT_FATAL(tc_make(&other, "device-1", false, &sd.ca_a, -DAY, 365 * DAY) == 0);
    char *o = tc_pem_json(&other), *d1 = tc_pem_json(&sd.dev[0]), *a = tc_pem_json(&sd.ca_a),
         *b = tc_pem_json(&sd.ca_b);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"device-1\",\"attestation\":{\"type\":\"x509\","
                                      "\"x509\":{\"clientCertificates\":{\"primary\":{\"certificate\":\"%s\"},"
                                      "\"secondary\":{\"certificate\":\"%s\"}}}}}", o, d1), CU_OK);
    cu_prov_request req = {.registration_id = "device-1", .chain = sd.chain[0]};
    CU_ASSERT_EQUAL_FATAL(cu_prov_explain_request(f.prov, &req, &ex), CU_OK);
    CU_ASSERT_EQUAL(ex.outcome, CU_PROV_PROVISION);
    CU_ASSERT_EQUAL(ex.decided, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(ex.cand[0].note, "secondary"));
    cu_prov_explain_clear(&ex);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_PROVISION);

    /* A group on B (primary) and A (secondary): A's devices provision
     * through it. */
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason,
                                      "{\"enrollmentGroupId\":\"two-cas\",\"attestation\":{\"type\":\"x509\","
                                      "\"x509\":{\"signingCertificates\":{\"primary\":{\"certificate\":\"%s\"},"
                                      "\"secondary\":{\"certificate\":\"%s\"}}}}}", b, a), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-2", sd.chain[1], reason, sizeof reason), CU_PROV_PROVISION);
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "device-2", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "two-cas");
    cu_reg_record_clear(&r);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-4", sd.chain[3], reason, sizeof reason), CU_PROV_PROVISION);
    free(o);
    free(d1);
    free(a);
    free(b);
    tc_free(&other);
    fx_close(&f);
}

/* A group on an intermediate works without the root being known. */
static void test_group_on_intermediate(void)
{
    fx f;
    char reason[512];
    CU_ASSERT_FATAL(fx_open(&f, "seedint") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-a", &sd.ca_a, true), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_PROVISION);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-4", sd.chain[3], reason, sizeof reason), CU_PROV_REFUSE);
    fx_close(&f);
}

/* Bad X.509 inputs: each refused, with its reason, and nothing written. */
static void test_bad_x509(void)
{
    fx f;
    tcert expired, future, other_root, other_ca, other_dev, not_ca, under_not_ca, wrong_cn;
    tcert no_certsign, under_no_certsign, server_only, len0, below_len0, under_len0, old_ca, under_old_ca;
    CU_ASSERT_FATAL(fx_open(&f, "seedbad") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "root-group", &sd.root, true), CU_OK);
    CU_ASSERT_FATAL(tc_make(&expired, "dev-expired", false, &sd.ca_a, -10 * DAY, -DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&future, "dev-future", false, &sd.ca_a, DAY, 10 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&other_root, "Other Root", true, NULL, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&other_ca, "Other CA", true, &other_root, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&other_dev, "dev-other", false, &other_ca, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&not_ca, "Not A CA", false, &sd.root, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&under_not_ca, "dev-notca", false, &not_ca, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&wrong_cn, "dev-cn", false, &sd.ca_a, -DAY, 100 * DAY) == 0);
    /* An issuer with CA:TRUE but no keyCertSign in its key usage. */
    CU_ASSERT_FATAL(tc_make(&no_certsign, "No CertSign CA", true, &sd.root, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_set_ext(&no_certsign, &sd.root, NID_key_usage, "critical,digitalSignature,cRLSign") == 0);
    CU_ASSERT_FATAL(tc_make(&under_no_certsign, "dev-nocertsign", false, &no_certsign, -DAY, 100 * DAY) == 0);
    /* A leaf for TLS servers only. */
    CU_ASSERT_FATAL(tc_make(&server_only, "dev-server", false, &sd.ca_a, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_set_ext(&server_only, &sd.ca_a, NID_ext_key_usage, "serverAuth") == 0);
    /* root -> pathlen:0 CA -> CA -> device: one CA too many below it. */
    CU_ASSERT_FATAL(tc_make(&len0, "Pathlen0 CA", true, &sd.root, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_set_ext(&len0, &sd.root, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0);
    CU_ASSERT_FATAL(tc_make(&below_len0, "Below Pathlen0 CA", true, &len0, -DAY, 100 * DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&under_len0, "dev-pathlen", false, &below_len0, -DAY, 100 * DAY) == 0);
    /* An intermediate that has expired, with a device still valid. */
    CU_ASSERT_FATAL(tc_make(&old_ca, "Expired CA", true, &sd.root, -10 * DAY, -DAY) == 0);
    CU_ASSERT_FATAL(tc_make(&under_old_ca, "dev-oldca", false, &old_ca, -DAY, 100 * DAY) == 0);

    struct {
        const char *regid;
        const tcert *leaf, *inter, *inter2;
        const char *why; /* what the reason must contain (OpenSSL's text for chain errors) */
    } cases[] = {
        {"dev-expired", &expired, &sd.ca_a, NULL, "expired"},
        {"dev-future", &future, &sd.ca_a, NULL, "not yet valid"},
        {"dev-other", &other_dev, &other_ca, NULL, "unknown root"},
        {"dev-notca", &under_not_ca, &not_ca, NULL, "invalid CA certificate (depth 1"},
        {"another-id", &wrong_cn, &sd.ca_a, NULL, "is not the registration id"},
        /* OpenSSL 3 reports an issuer without keyCertSign as not a CA. */
        {"dev-nocertsign", &under_no_certsign, &no_certsign, NULL,
         "invalid CA certificate (depth 1, CN=No CertSign CA"},
        {"dev-server", &server_only, &sd.ca_a, NULL, "unsuitable certificate purpose (depth 0"},
        {"dev-pathlen", &under_len0, &below_len0, &len0, "path length constraint exceeded (depth 2, CN=Pathlen0 CA"},
        {"dev-oldca", &under_old_ca, &old_ca, NULL, "certificate has expired (depth 1, CN=Expired CA"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char reason[512] = "";
        cu_x509_chain *ch = tc_chain(cases[i].leaf, cases[i].inter, cases[i].inter2, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
        cu_prov_outcome o = fx_register_x509(&f, cases[i].regid, ch, reason, sizeof reason);
        bool has = strstr(reason, cases[i].why) != NULL;
        if (getenv("CU_TEST_VERBOSE") || o != CU_PROV_REFUSE || !has)
            fprintf(stderr, "case %s: outcome %d, reason '%s'\n", cases[i].regid, o, reason);
        CU_ASSERT_EQUAL(o, CU_PROV_REFUSE);
        CU_ASSERT_TRUE(has);
        CU_ASSERT_FALSE(fx_has_record(&f, cases[i].regid));
        cu_x509_chain_free(ch);
    }
    /* A group on a device (non-CA) certificate is refused at creation. */
    CU_ASSERT_EQUAL(fx_group_x509(&f, "leaf-group", &wrong_cn, true), CU_E_INVALID_ARG);

    /* The expired case through an individual enrollment says "expired" too. */
    CU_ASSERT_EQUAL(fx_individual_x509(&f, "dev-expired", &expired, true), CU_OK);
    char reason[512];
    cu_x509_chain *ch = tc_chain(&expired, NULL);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "dev-expired", ch, reason, sizeof reason), CU_PROV_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(reason, "expired"));
    CU_ASSERT_FALSE(fx_has_record(&f, "dev-expired"));
    cu_x509_chain_free(ch);

    tcert *all[] = {&expired, &future, &other_root, &other_ca, &other_dev, &not_ca, &under_not_ca, &wrong_cn,
                    &no_certsign, &under_no_certsign, &server_only, &len0, &below_len0, &under_len0, &old_ca,
                    &under_old_ca};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tc_free(all[i]);
    fx_close(&f);
}

/* A CA certificate re-issued with the same subject and key (a renewal: new
 * serial, new validity) stands for the same group without any look-up by
 * subject key identifier: the anchor is found by subject, OpenSSL puts the
 * enrolled certificate in the verified path, and the group is found by its
 * fingerprint — both ways round. */
static void test_reissued_ca_certificate(void)
{
    fx f;
    char reason[512];
    tcert b2 = {X509_dup(sd.ca_b.cert), sd.ca_b.key};
    CU_ASSERT_PTR_NOT_NULL_FATAL(b2.cert);
    ASN1_INTEGER_set(X509_get_serialNumber(b2.cert), 4242);
    X509_gmtime_adj(X509_getm_notAfter(b2.cert), 2 * 365 * DAY);
    CU_ASSERT_FATAL(X509_sign(b2.cert, sd.root.key, EVP_sha256()) > 0);
    CU_ASSERT_NOT_EQUAL(X509_cmp(b2.cert, sd.ca_b.cert), 0);

    /* The group holds the renewed B; devices 4 and 5 still send the old one. */
    CU_ASSERT_FATAL(fx_open(&f, "seedrenew") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-b-renewed", &b2, true), CU_OK);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-4", sd.chain[3], reason, sizeof reason), CU_PROV_PROVISION);
    cu_reg_record r;
    CU_ASSERT_EQUAL_FATAL(cu_store_reg_get(f.store, "device-4", &r), CU_OK);
    CU_ASSERT_STRING_EQUAL(r.enrollment_group_id, "group-b-renewed");
    cu_reg_record_clear(&r);
    /* A's devices are not B's. */
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-1", sd.chain[0], reason, sizeof reason), CU_PROV_REFUSE);
    fx_close(&f);

    /* The group holds the old B; a device sends the renewed one. */
    CU_ASSERT_FATAL(fx_open(&f, "seedrenew2") == 0);
    CU_ASSERT_EQUAL_FATAL(fx_group_x509(&f, "group-b", &sd.ca_b, true), CU_OK);
    cu_x509_chain *ch = tc_chain(&sd.dev[4], &b2, NULL);
    CU_ASSERT_EQUAL(fx_register_x509(&f, "device-5", ch, reason, sizeof reason), CU_PROV_PROVISION);
    cu_x509_chain_free(ch);
    fx_close(&f);
    X509_free(b2.cert);
}

/* PEM bundles as a device sends them: leaf first. */
static void test_chain_pem(void)
{
    char *a = tc_pem(&sd.dev[0]), *b = tc_pem(&sd.ca_a), bundle[8192];
    snprintf(bundle, sizeof bundle, "%s%s", a, b);
    cu_x509_chain *ch = NULL;
    CU_ASSERT_EQUAL(cu_x509_chain_from_pem(bundle, strlen(bundle), &ch), CU_OK);
    CU_ASSERT_EQUAL(X509_cmp(cu_x509_chain_get0_leaf(ch), sd.dev[0].cert), 0);
    CU_ASSERT_EQUAL(sk_X509_num(cu_x509_chain_get0_extra(ch)), 1);
    cu_x509_chain_free(ch);
    CU_ASSERT_NOT_EQUAL(cu_x509_chain_from_pem("garbage", 7, &ch), CU_OK);
    const char *key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    CU_ASSERT_NOT_EQUAL(cu_x509_chain_from_pem(key, strlen(key), &ch), CU_OK);
    free(a);
    free(b);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"seed five-device example", test_seed_example},
        {"individual must match the leaf itself", test_individual_needs_same_cert},
        {"individual enrollment of another attestation", test_individual_other_attestation},
        {"a disabled individual blocks a group's device", test_disabled_individual_blocks_chain},
        {"the first entry found decides, not any disabled one", test_first_entry_decides},
        {"three levels: the lowest intermediate's group first", test_three_levels},
        {"secondary client and signing certificates", test_secondary_certificates},
        {"group on an intermediate", test_group_on_intermediate},
        {"bad X.509 inputs refused, nothing written", test_bad_x509},
        {"PEM chain input", test_chain_pem},
        {"a re-issued CA certificate (same key) is the same group", test_reissued_ca_certificate},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_seed", setup, teardown, cases) != 0)
        return 2;
    return cu_test_run();
}
