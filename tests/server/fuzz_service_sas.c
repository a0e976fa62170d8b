/* libFuzzer: custosd's service SAS parser and verifier on arbitrary
 * Authorization values. The state is stubbed: a fixed policy key and names. */
#include "srv_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cu_srv_state {
    int unused;
};

static const char *const NAMES[] = {"dps.example.net", "localhost", "127.0.0.1"};
static const uint8_t KEY[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

size_t cu_srv_state_names(const cu_srv_state *st, const char *const **_names)
{
    (void)st;
    *_names = NAMES;
    return 3;
}

const uint8_t *cu_srv_state_policy_key(const cu_srv_state *st, size_t *_len)
{
    (void)st;
    *_len = sizeof KEY;
    return KEY;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cu_srv_state st = {0};
    char *s = malloc(size + 1), why[200];
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    (void)cu_srv__service_sas_check(&st, s, 300, why, sizeof why);
    free(s);
    return 0;
}
