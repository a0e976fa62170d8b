/* Custos: allocation — which hub a device goes to (PROTOCOL.md §6). */
#ifndef CUSTOS_ALLOC_H
#define CUSTOS_ALLOC_H

#include <custos/rc.h>
#include <custos/record.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* hashed: weighted rendezvous hashing over hubs with applyAllocationPolicy
 * and weight > 0. Stable per registration id (case-insensitive), spread in
 * proportion to the weights, and adding a hub moves only the devices that
 * the new hub wins. geoLatency on one site is the same function (every hub
 * has the same latency, ties are hashed by weight).
 * @retval CU_OK, CU_E_OBJECT_NOT_FOUND (no eligible hub) */
cu_rc cu_alloc_hashed(const cu_hub *hubs, size_t n, const char *registration_id, size_t *_idx);

/* custom: POSTs request_json to url (application/json) and returns the
 * response body when the status is 200 and it parses as a JSON object with a
 * string iotHubHostName. timeout_ms bounds the whole exchange. On failure
 * the reason says which: connection, timeout, HTTP status, bad JSON.
 * @retval CU_OK, CU_E_IO (reason written), CU_E_INVALID_ARG */
cu_rc cu_alloc_custom(const char *url, const char *request_json, long timeout_ms, char **_response,
                      char *reason, size_t reason_len);

#ifdef __cplusplus
}
#endif
#endif
