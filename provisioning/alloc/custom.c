/* custom allocation: the webhook client (libcurl). */
#include <custos/alloc.h>

#include "../core/prov_int.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A webhook answer larger than this is refused (the service's message size). */
#define MAX_RESPONSE (96 * 1024)

typedef struct buf {
    char *p;
    size_t n;
    bool overflow;
} buf;

static size_t on_data(char *data, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t len = size * nmemb;
    if (b->overflow || b->n + len > MAX_RESPONSE) {
        b->overflow = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    char *t = realloc(b->p, b->n + len + 1);
    if (t == NULL)
        return 0;
    memcpy(t + b->n, data, len);
    b->p = t;
    b->n += len;
    b->p[b->n] = 0;
    return len;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

cu_rc cu_alloc_custom(const char *url, const char *request_json, long timeout_ms, char **_response,
                      char *reason, size_t reason_len)
{
    cu_prov__return_val_if_fail(url != NULL && request_json != NULL && _response != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    CURL *c = NULL;
    struct curl_slist *hdr = NULL;
    buf b = {NULL, 0, false};
    long status = 0;
    json_t *j = NULL;
    json_error_t je;

    *_response = NULL;
    pthread_once(&curl_once, curl_init);
    if ((c = curl_easy_init()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "cannot start an HTTP client");
        goto cleanup;
    }
    hdr = curl_slist_append(hdr, "Content-Type: application/json; charset=utf-8");
    hdr = curl_slist_append(hdr, "Accept: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request_json);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(request_json));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cr = curl_easy_perform(c);
    if (cr != CURLE_OK) {
        rc = cu_prov__refuse(CU_E_IO, reason, reason_len, "custom allocation webhook %s: %s", url,
                        b.overflow ? "answer larger than 96 KiB" : curl_easy_strerror(cr));
        goto cleanup;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        rc = cu_prov__refuse(CU_E_IO, reason, reason_len, "custom allocation webhook answered HTTP %ld", status);
        goto cleanup;
    }
    if (b.p == NULL || (j = json_loadb(b.p, b.n, JSON_REJECT_DUPLICATES, &je)) == NULL || !json_is_object(j)) {
        rc = cu_prov__refuse(CU_E_IO, reason, reason_len, "custom allocation webhook: answer is not a JSON object%s%s",
                        j == NULL && b.p ? ": " : "", j == NULL && b.p ? je.text : "");
        goto cleanup;
    }
    if (!json_is_string(json_object_get(j, "iotHubHostName"))) {
        rc = cu_prov__refuse(CU_E_IO, reason, reason_len, "custom allocation webhook: answer has no iotHubHostName");
        goto cleanup;
    }
    *_response = b.p;
    b.p = NULL;
cleanup:
    json_decref(j);
    free(b.p);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return rc;
}
