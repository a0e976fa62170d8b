/* The state directory: store + keyring + id scope. */
#include <custos/state.h>

#include "prov_int.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct cu_state {
    cu_keyring *kr;
    cu_store *store;
    char id_scope[16];
};

static cu_rc software_key(const char *dir, uint8_t key[32])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/keyring.key", dir);
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, key, 32);
        close(fd);
        if (n != 32)
            return cu_err_set(CU_E_IO, "%s: not a 32-byte key", path);
        return CU_OK;
    }
    if (errno != ENOENT)
        return cu_err_set_sys(CU_E_IO, errno, "cannot read %s", path);
    if (RAND_bytes(key, 32) != 1)
        return cu_err_set(CU_E_CRYPTO, "no randomness for the keyring key");
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return cu_err_set_sys(CU_E_IO, errno, "cannot create %s", path);
    ssize_t n = write(fd, key, 32);
    if (close(fd) != 0 || n != 32)
        return cu_err_set_sys(CU_E_IO, errno, "cannot write %s", path);
    return CU_OK;
}

cu_rc cu_state_open(const char *dir, const char *key_uri, cu_state **_out)
{
    cu_prov__return_val_if_fail(dir != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    cu_state *st = calloc(1, sizeof *st);
    char *scope = NULL;
    uint8_t key[32];

    *_out = NULL;
    if (st == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = cu_err_set_sys(CU_E_IO, errno, "cannot create the state directory %s", dir);
        goto cleanup;
    }
    if (key_uri == NULL)
        key_uri = getenv("CUSTOS_KEYRING_URI");
    if (key_uri != NULL && *key_uri != 0) {
        if ((rc = cu_keyring_provider_load(NULL)) == CU_OK)
            rc = cu_keyring_evp_mac_new(NULL, "provider=custos", key_uri, &st->kr);
    } else {
        if ((rc = software_key(dir, key)) == CU_OK)
            rc = cu_keyring_software_new(key, sizeof key, &st->kr);
        OPENSSL_cleanse(key, sizeof key);
    }
    if (rc != CU_OK)
        goto cleanup;
    /* The store may live elsewhere (PostgreSQL shared by several nodes). */
    const char *spec = getenv("CUSTOS_STORE"), *pw = getenv("CUSTOS_STORE_PASSWORD_FILE");
    if (spec != NULL && *spec != 0)
        rc = cu_store_open_spec(spec, pw != NULL && *pw != 0 ? pw : NULL, st->kr, &st->store);
    else
        rc = cu_store_open_dir(dir, st->kr, &st->store);
    if (rc != CU_OK)
        goto cleanup;
    rc = cu_store_setting_get(st->store, "idScope", &scope);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        uint8_t r[4];
        char hex[9];
        if (RAND_bytes(r, sizeof r) != 1) {
            rc = cu_err_set(CU_E_CRYPTO, "no randomness");
            goto cleanup;
        }
        cu_prov__hex(r, sizeof r, hex);
        snprintf(st->id_scope, sizeof st->id_scope, "0ne%s", hex);
        for (char *p = st->id_scope + 3; *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 32);
        rc = cu_store_setting_put(st->store, "idScope", st->id_scope);
    } else if (rc == CU_OK) {
        snprintf(st->id_scope, sizeof st->id_scope, "%s", scope);
    }
    if (rc != CU_OK)
        goto cleanup;
    *_out = st;
    st = NULL;
cleanup:
    free(scope);
    cu_state_close(st);
    return rc;
}

void cu_state_close(cu_state *st)
{
    if (st == NULL)
        return;
    cu_store_close(st->store);
    cu_keyring_free(st->kr);
    free(st);
}

cu_store *cu_state_get0_store(cu_state *st) { return st ? st->store : NULL; }
cu_keyring *cu_state_get0_keyring(cu_state *st) { return st ? st->kr : NULL; }
const char *cu_state_keyring_name(const cu_state *st) { return st ? cu_keyring_name(st->kr) : NULL; }
const char *cu_state_id_scope(const cu_state *st) { return st ? st->id_scope : NULL; }
