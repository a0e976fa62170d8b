/* Enrollment JSON: the public REST shapes in, strict refusals, output
 * without key material. */
#include "fixture.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *KEY_A = "ZGV2aWNlLWtleS1hLWRldmljZS1rZXktYS1kZXZpY2Uta2V5LWE=";

static void test_individual_symkey(void)
{
    char js[1024], reason[512] = "";
    snprintf(js, sizeof js,
             "{\"registrationId\":\"dev-1\",\"deviceId\":\"device one\",\"attestation\":{\"type\":\"symmetricKey\","
             "\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":null}},\"capabilities\":{\"iotEdge\":false},"
             "\"provisioningStatus\":\"disabled\",\"reprovisionPolicy\":{\"updateHubAssignment\":true,"
             "\"migrateDeviceData\":false},\"allocationPolicy\":\"hashed\",\"iotHubs\":[\"hub1.example.net\"],"
             "\"initialTwin\":{\"tags\":{\"a\":1},\"properties\":{\"desired\":{\"b\":2}}},\"etag\":null,"
             "\"registrationState\":{\"status\":\"assigned\"}}", KEY_A);
    cu_enr *e = NULL;
    CU_ASSERT_EQUAL_FATAL(cu_enr_parse(CU_ENR_INDIVIDUAL, js, strlen(js), &e, reason, sizeof reason), CU_OK);
    CU_ASSERT_STRING_EQUAL(cu_enr_get0_id(e), "dev-1");
    CU_ASSERT_STRING_EQUAL(cu_enr_get0_device_id(e), "device one");
    CU_ASSERT_EQUAL(cu_enr_get_att_type(e), CU_ATT_SYMMETRIC_KEY);
    CU_ASSERT_FALSE(cu_enr_is_enabled(e));
    CU_ASSERT_FALSE(cu_enr_reprovision_migrate(e));
    CU_ASSERT_STRING_EQUAL(cu_enr_get0_symkey(e, CU_ENR_PRIMARY), KEY_A);
    /* A missing secondary key is generated (64 bytes), as the service does. */
    CU_ASSERT_EQUAL(strlen(cu_enr_get0_symkey(e, CU_ENR_SECONDARY)), 88);
    char *out = cu_enr_to_json(e, 0);
    CU_ASSERT_PTR_NULL(strstr(out, KEY_A));
    CU_ASSERT_PTR_NULL(strstr(out, "registrationState"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"symmetricKey\""));
    free(out);
    out = cu_enr_to_json(e, CU_ENR_JSON_SHOW_KEYS | CU_ENR_JSON_COMPACT);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, KEY_A));
    free(out);
    cu_enr_free(e);
}

static void test_group_cert_forms(void)
{
    tcert ca;
    CU_ASSERT_FATAL(tc_make(&ca, "Group CA", true, NULL, -100, 86400) == 0);
    char *pem = tc_pem(&ca);
    unsigned char *der = NULL;
    int dlen = i2d_X509(ca.cert, &der);
    char b64der[4096], b64pem[8192], js[16384], reason[512];
    EVP_EncodeBlock((unsigned char *)b64der, der, dlen);
    EVP_EncodeBlock((unsigned char *)b64pem, (unsigned char *)pem, (int)strlen(pem));
    json_t *pemstr = json_string(pem);
    char *pemjs = json_dumps(pemstr, JSON_ENCODE_ANY);
    const char *forms[] = {pemjs, NULL, NULL};
    char q1[4200], q2[8300];
    snprintf(q1, sizeof q1, "\"%s\"", b64der);
    snprintf(q2, sizeof q2, "\"%s\"", b64pem);
    forms[1] = q1;
    forms[2] = q2;
    for (int i = 0; i < 3; i++) {
        snprintf(js, sizeof js, "{\"enrollmentGroupId\":\"g1\",\"attestation\":{\"type\":\"x509\",\"x509\":"
                 "{\"signingCertificates\":{\"primary\":{\"certificate\":%s}}}}}", forms[i]);
        cu_enr *e = NULL;
        CU_ASSERT_EQUAL(cu_enr_parse(CU_ENR_GROUP, js, strlen(js), &e, reason, sizeof reason), CU_OK);
        if (e) {
            CU_ASSERT_STRING_EQUAL(cu_enr_get0_cert(e, CU_ENR_PRIMARY), pem);
            char *out = cu_enr_to_json(e, 0);
            CU_ASSERT_PTR_NOT_NULL(strstr(out, "sha256Thumbprint"));
            free(out);
        }
        cu_enr_free(e);
    }
    free(pemjs);
    json_decref(pemstr);
    OPENSSL_free(der);
    free(pem);
    tc_free(&ca);
}

static void test_malformed(void)
{
    struct {
        cu_enr_kind kind;
        const char *json, *why;
    } cases[] = {
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",", "line 1 column"},
        {CU_ENR_INDIVIDUAL, "[1,2]", "JSON object"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"registrationId\":\"b\",\"attestation\":{\"type\":\"symmetricKey\"}}", "duplicate"},
        {CU_ENR_INDIVIDUAL, "{\"attestation\":{\"type\":\"symmetricKey\"}}", "registrationId: required"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\"}", "attestation: required"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a b\",\"attestation\":{\"type\":\"symmetricKey\"}}", "not a valid id"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"magic\"}}", "attestation.type"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"colour\":1}", "colour: unknown field"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"provisioningStatus\":\"on\"}", "provisioningStatus"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"capabilities\":{\"iotEdge\":\"yes\"}}", "capabilities.iotEdge: must be true or false"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"not*base64\"}}}", "attestation.symmetricKey.primaryKey"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"AAAA\"}}}", "16 to 64"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{\"primary\":{\"certificate\":\"MIIB\"}}}}}", "certificate"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"x509\"}}", "attestation.x509: required"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"tpm\",\"symmetricKey\":{}}}", "other than its type"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"static\"}", "static"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"custom\"}", "customAllocationDefinition"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"customAllocationDefinition\":{\"webhookUrl\":\"http://x\"}}", "apiVersion: required"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"symmetricKey\"},\"iotHubs\":[1]}", "array of strings"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\",\"attestation\":{\"type\":\"none\"}}", "cannot provision"},
        {CU_ENR_GROUP, "{\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"AAAAAAAA\"}}}", "cannot use tpm"},
        {CU_ENR_GROUP, "{\"enrollmentGroupId\":\"g\",\"attestation\":{\"type\":\"x509\",\"x509\":{}}}", "exactly one"},
        {CU_ENR_GROUP, "{\"enrollmentGroupId\":\"g\",\"deviceId\":\"d\",\"attestation\":{\"type\":\"symmetricKey\"}}", "deviceId: unknown field"},
        {CU_ENR_INDIVIDUAL, "{\"registrationId\":\"a\\u0000b\",\"attestation\":{\"type\":\"symmetricKey\"}}", "NUL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char reason[512] = "";
        cu_enr *e = NULL;
        cu_rc rc = cu_enr_parse(cases[i].kind, cases[i].json, strlen(cases[i].json), &e, reason, sizeof reason);
        bool has = strstr(reason, cases[i].why) != NULL;
        if (rc != CU_E_INVALID_ARG || !has)
            fprintf(stderr, "case %zu: rc %d reason '%s'\n", i, rc, reason);
        CU_ASSERT_EQUAL(rc, CU_E_INVALID_ARG);
        CU_ASSERT_TRUE(has);
        CU_ASSERT_PTR_NULL(e);
        cu_enr_free(e);
    }
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"individual symmetric-key enrollment", test_individual_symkey},
        {"group certificate as PEM, base64(DER), base64(PEM)", test_group_cert_forms},
        {"malformed enrollments refused with reasons", test_malformed},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_enrollment", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
