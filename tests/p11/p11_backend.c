#include "p11_backend.h"

#include "cu_test.h"

#include <custos/token.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SOFTHSM2_MODULE "/usr/lib/softhsm/libsofthsm2.so"

int p11_backend_select(p11_backend *b, const char *kind)
{
    memset(b, 0, sizeof *b);
    b->label = "custos-test";
    b->pin = "12345678";
    if (strcmp(kind, "softhsm2") == 0) {
        b->kind = "softhsm2";
        b->hmac_keygen = b->hmac_import = true;
        return 0;
    }
    return -1;
}

static int softhsm2_create(p11_backend *b)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tokens", b->dir);
    if (cu_test_sh("mkdir -p '%s'", path) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/softhsm2.conf", b->dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", b->dir);
    fclose(f);
    setenv("SOFTHSM2_CONF", path, 1);
    snprintf(b->module, sizeof b->module, "%s", SOFTHSM2_MODULE);
    cu_module *m = NULL;
    cu_token_desc *slots = NULL;
    size_t n = 0;
    if (cu_module_load(b->module, CU_QUIRK_INIT_RETRY, &m) != CU_OK || cu_module_slots(m, &slots, &n) != CU_OK ||
        n == 0 || cu_module_init_token(m, slots[0].slot_id, b->label, "87654321", b->pin) != CU_OK) {
        fprintf(stderr, "softhsm2 token: %s\n", cu_err_last()->msg);
        free(slots);
        return -1;
    }
    free(slots);
    cu_module_unref(m);
    snprintf(b->uri, sizeof b->uri, "pkcs11:token=%s?module-path=%s", b->label, b->module);
    return 0;
}

int p11_backend_create(p11_backend *b)
{
    if ((b->dir = cu_test_mkdtemp(b->kind)) == NULL)
        return -1;
    return softhsm2_create(b);
}

void p11_backend_destroy(p11_backend *b)
{
    cu_test_rmtree(b->dir);
    free(b->dir);
    b->dir = NULL;
}
