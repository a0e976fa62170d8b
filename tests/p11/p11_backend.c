#include "p11_backend.h"

#include "cu_test.h"

#include <custos/fixture.h>
#include <custos/token.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SO_PIN "87654321"

int p11_backend_select(p11_backend *b, const char *kind)
{
    cu_fixture_kind k;
    memset(b, 0, sizeof *b);
    if (cu_fixture_kind_parse(kind, &k) != CU_OK)
        return -1;
    b->kind = cu_fixture_kind_str(k);
    b->label = "custos-test";
    b->pin = "12345678";
    /* tpm2-pkcs11 makes secret keys only through tpm2_ptool (TOKENS.md). */
    b->hmac_keygen = b->hmac_import = k != CU_FIXTURE_TPM2;
    b->fork_ok = k != CU_FIXTURE_TPM2;
    /* Debian registers these two with p11-kit (/usr/share/p11-kit/modules). */
    b->p11kit_name = k == CU_FIXTURE_SOFTHSM2 ? "softhsm2" : k == CU_FIXTURE_TPM2 ? "tpm2_pkcs11" : NULL;
    return 0;
}

int p11_backend_create(p11_backend *b)
{
    cu_fixture_kind k;
    cu_fixture *f = NULL;
    char path[512];
    if (cu_fixture_kind_parse(b->kind, &k) != CU_OK || (b->dir = cu_test_mkdtemp(b->kind)) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/token", b->dir);
    if (cu_fixture_create(k, path, b->label, SO_PIN, b->pin, NULL, &f) != CU_OK) {
        fprintf(stderr, "fixture %s: %s\n", b->kind, cu_err_last()->msg);
        return -1;
    }
    b->priv = f;
    snprintf(b->module, sizeof b->module, "%s", cu_fixture_get0_module(f));
    snprintf(b->uri, sizeof b->uri, "%s", cu_fixture_get0_uri(f));
    snprintf(b->quirks, sizeof b->quirks, "%s", cu_fixture_get0_quirks(f));
    if (k == CU_FIXTURE_TPM2) {
        /* A known HMAC key, so MACs can be compared with OpenSSL's. */
        for (size_t i = 0; i < sizeof b->hmac_value; i++)
            b->hmac_value[i] = (uint8_t)(0xa5 ^ i);
        b->hmac_value_len = sizeof b->hmac_value;
        if (cu_fixture_tpm2_import_hmac(f, b->hmac_value, b->hmac_value_len, "hmac", "hmac", b->pin) != CU_OK) {
            fprintf(stderr, "tpm2 HMAC import: %s\n", cu_err_last()->msg);
            return -1;
        }
        /* tpm2-pkcs11 reads a token's objects at C_Initialize: start it
         * again so that it sees the key tpm2_ptool just added. */
        cu_p11_shutdown();
    }
    return 0;
}

void p11_backend_destroy(p11_backend *b)
{
    cu_fixture *f = b->priv;
    if (f != NULL) {
        cu_fixture_destroy(f);
        cu_fixture_free(f);
    }
    cu_test_rmtree(b->dir);
    free(b->dir);
    b->dir = NULL;
}
