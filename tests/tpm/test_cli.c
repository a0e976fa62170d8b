/* `custos device tpm-identity` against a swtpm of the token fixture: the
 * same EK and registration id twice in a row, JSON that parses and agrees
 * with the library, usage errors. CU_CUSTOS_BIN is the real `custos`. */
#include "cu_test.h"
#include "fixture_child.h"

#include <custos/fixture.h>
#include <custos/tpmsvc.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char *base;
static cu_fixture *fx;
static char tcti[128];

static int suite_init(void)
{
    base = cu_test_mkdtemp("tpmcli");
    char d[512];
    snprintf(d, sizeof d, "%s/tok", base);
    if (base == NULL || (fx = fixture_in_child(d, "cli-tpm")) == NULL)
        return -1;
    snprintf(tcti, sizeof tcti, "swtpm:host=127.0.0.1,port=%d", cu_fixture_tpm_port(fx));
    return 0;
}

static int suite_cleanup(void)
{
    if (fx != NULL)
        cu_fixture_destroy(fx);
    cu_fixture_free(fx);
    cu_test_rmtree(base);
    free(base);
    return 0;
}

/* Runs the command; returns its exit status and stdout (caller frees). */
static int run(const char *args, char **_out)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' device tpm-identity %s 2>/dev/null", CU_CUSTOS_BIN, args);
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    char *buf = calloc(1, 8192);
    size_t n = p ? fread(buf, 1, 8191, p) : 0;
    buf[n] = 0;
    int st = p ? pclose(p) : -1;
    *_out = buf;
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_stable_json(void)
{
    char args[256], *a = NULL, *b = NULL;
    snprintf(args, sizeof args, "--tcti %s --json", tcti);
    CU_ASSERT_EQUAL(run(args, &a), 0);
    CU_ASSERT_EQUAL(run(args, &b), 0);
    CU_ASSERT_STRING_EQUAL(a, b);
    json_error_t err;
    json_t *j = json_loads(a, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    const char *id = json_string_value(json_object_get(j, "registrationId"));
    const char *ek = json_string_value(json_object_get(j, "endorsementKey"));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "ekType")), "rsa2048");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "tcti")), tcti);
    CU_ASSERT_PTR_NOT_NULL_FATAL(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ek);
    /* What it prints is what the service computes from the EK. */
    cu_tpmsvc_pub *p = NULL;
    char want[CU_TPM_REGID_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(cu_tpmsvc_pub_parse_b64(ek, &p), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_pub_check(p, CU_TPM_ROLE_EK), CU_OK);
    CU_ASSERT_EQUAL(cu_tpmsvc_registration_id(p, want), CU_OK);
    CU_ASSERT_STRING_EQUAL(id, want);
    cu_tpmsvc_pub_free(p);

    /* Text form: the same values, stable too. */
    char *t1 = NULL, *t2 = NULL;
    snprintf(args, sizeof args, "--tcti %s", tcti);
    CU_ASSERT_EQUAL(run(args, &t1), 0);
    CU_ASSERT_EQUAL(run(args, &t2), 0);
    CU_ASSERT_STRING_EQUAL(t1, t2);
    CU_ASSERT_PTR_NOT_NULL(strstr(t1, id));
    CU_ASSERT_PTR_NOT_NULL(strstr(t1, ek));

    /* The ECC EK (extension) is another key with another id. */
    char *e = NULL;
    snprintf(args, sizeof args, "--tcti %s --ek ecc --json", tcti);
    CU_ASSERT_EQUAL(run(args, &e), 0);
    json_t *je = json_loads(e, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(je);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(je, "ekType")), "ecc-p256");
    CU_ASSERT_STRING_NOT_EQUAL(json_string_value(json_object_get(je, "registrationId")), id);
    json_decref(je);
    json_decref(j);
    free(a);
    free(b);
    free(t1);
    free(t2);
    free(e);
}

/* --dir: the swtpm of a tpm2 token directory (through its tpm2-abrmd):
 * the same TPM as --tcti, so the same identity. */
static void test_dir(void)
{
    char args[700], *a = NULL, *b = NULL;
    snprintf(args, sizeof args, "--tcti %s", tcti);
    CU_ASSERT_EQUAL(run(args, &a), 0);
    snprintf(args, sizeof args, "--dir '%s'", cu_fixture_get0_dir(fx));
    CU_ASSERT_EQUAL(run(args, &b), 0);
    CU_ASSERT_STRING_EQUAL(a, b);
    free(a);
    free(b);
    snprintf(args, sizeof args, "--dir '%s' --tcti %s", cu_fixture_get0_dir(fx), tcti);
    CU_ASSERT_EQUAL(run(args, &a), 2);
    free(a);
    snprintf(args, sizeof args, "--dir '%s/nonexistent'", base);
    CU_ASSERT_EQUAL(run(args, &a), 1);
    free(a);
}

static void test_errors(void)
{
    char *o = NULL;
    CU_ASSERT_EQUAL(run("--ek dsa", &o), 2);
    free(o);
    CU_ASSERT_EQUAL(run("--bogus", &o), 2);
    free(o);
    CU_ASSERT_EQUAL(run("--tcti swtpm:host=127.0.0.1,port=1", &o), 1);
    CU_ASSERT_STRING_EQUAL(o, "");
    free(o);
    CU_ASSERT_EQUAL(run("--help", &o), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(o, "usage: custos device tpm-identity"));
    free(o);
}

static const cu_test_case cases[] = {
    {"same EK and registration id twice; JSON parses", test_stable_json},
    {"--dir: a tpm2 token directory's swtpm", test_dir},
    {"usage errors and an absent TPM", test_errors},
    {NULL, NULL},
};

int main(void)
{
    if (cu_test_add_suite("tpm_cli", suite_init, suite_cleanup, cases) != 0)
        return 2;
    return cu_test_run();
}
