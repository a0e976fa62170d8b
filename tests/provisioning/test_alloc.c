/* Allocation: hashed (weights, stability) and the custom webhook against a
 * tiny HTTP server on a loopback port. */
#include "fixture.h"

#include <custos/alloc.h>
#include <custos/sas.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void test_hashed(void)
{
    cu_hub hubs[4] = {{"a.example.net", 1, true}, {"b.example.net", 1, true}, {"c.example.net", 2, true},
                      {"d.example.net", 1, true}};
    int count[3] = {0, 0, 0};
    size_t first[4000];
    for (int i = 0; i < 4000; i++) {
        char id[32];
        snprintf(id, sizeof id, "device-%d", i);
        size_t idx = 99, again = 98;
        CU_ASSERT_EQUAL_FATAL(cu_alloc_hashed(hubs, 3, id, &idx), CU_OK);
        CU_ASSERT_EQUAL(cu_alloc_hashed(hubs, 3, id, &again), CU_OK);
        CU_ASSERT_EQUAL(idx, again); /* stable */
        first[i] = idx;
        count[idx]++;
    }
    /* 1:1:2 within a generous margin. */
    CU_ASSERT(count[0] > 800 && count[0] < 1200);
    CU_ASSERT(count[1] > 800 && count[1] < 1200);
    CU_ASSERT(count[2] > 1700 && count[2] < 2300);
    /* Adding a hub moves devices only to the new hub. */
    int moved = 0;
    for (int i = 0; i < 4000; i++) {
        char id[32];
        snprintf(id, sizeof id, "device-%d", i);
        size_t idx = 0;
        CU_ASSERT_EQUAL(cu_alloc_hashed(hubs, 4, id, &idx), CU_OK);
        if (idx != first[i]) {
            CU_ASSERT_EQUAL(idx, 3);
            moved++;
        }
    }
    CU_ASSERT(moved > 500 && moved < 1300);
    /* A hub with applyAllocationPolicy=false gets nothing. */
    hubs[2].apply = false;
    size_t idx = 0;
    for (int i = 0; i < 200; i++) {
        char id[32];
        snprintf(id, sizeof id, "x-%d", i);
        CU_ASSERT_EQUAL(cu_alloc_hashed(hubs, 3, id, &idx), CU_OK);
        CU_ASSERT_NOT_EQUAL(idx, 2);
    }
    cu_hub none[1] = {{"z", 1, false}};
    CU_ASSERT_EQUAL(cu_alloc_hashed(none, 1, "x", &idx), CU_E_OBJECT_NOT_FOUND);
}

static const char *KEY_B64 = "c3ltbWV0cmljLWtleS1mb3ItdGVzdHMtb25seS0zMmI=";

/* Registers regid with a token signed by key (derived from it when derive);
 * returns the record's assigned hub and substatus. */
static cu_prov_outcome reg(fx *f, const char *regid, bool derive, char hub[256], char sub[40])
{
    uint8_t *k = NULL, dk[32];
    size_t kl = 0;
    char *tok = NULL;
    cu_prov_outcome o = CU_PROV_UNDECIDED;
    hub[0] = sub[0] = 0;
    if (cu_sas_key_decode(KEY_B64, &k, &kl) != CU_OK)
        return o;
    if ((!derive || cu_sas_derive_key(k, kl, regid, dk) == CU_OK) &&
        cu_sas_sign(derive ? dk : k, derive ? 32 : kl, "0ne00000001", regid, (uint64_t)time(NULL) + 600,
                    "registration", &tok) == CU_OK) {
        cu_prov_request req = {.registration_id = regid, .authorization = tok};
        cu_prov_result res;
        if (cu_prov_register(f->prov, &req, &res) == CU_OK) {
            o = res.outcome;
            snprintf(hub, 256, "%s", res.record.assigned_hub);
            snprintf(sub, 40, "%s", res.record.substatus);
        }
        cu_prov_result_clear(&res);
    }
    free(tok);
    cu_sas_key_free(k, kl);
    return o;
}

/* static: the enrollment's one hub, whatever hashing would say; geoLatency:
 * exactly hashed over the enrollment's hubs with the linked weights (one
 * site); a reprovision to another hub with migrateDeviceData false:
 * deviceDataReset. */
static void test_policies(void)
{
    fx f;
    char reason[512], hub[256], sub[40];
    CU_ASSERT_FATAL(fx_open(&f, "policies") == 0);
    cu_hub h1 = {"hub1.example.net", 1, true}, h2 = {"hub2.example.net", 3, true};
    CU_ASSERT_EQUAL_FATAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    const char *grp = "{\"enrollmentGroupId\":\"%s\",\"allocationPolicy\":\"%s\",\"iotHubs\":[%s],"
                      "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\"}}}";

    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason, grp, "static-group", "static",
                                      "\"hub1.example.net\"", KEY_B64), CU_OK);
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof id, "static-%d", i);
        CU_ASSERT_EQUAL(reg(&f, id, true, hub, sub), CU_PROV_PROVISION);
        CU_ASSERT_STRING_EQUAL(hub, "hub1.example.net");
    }
    CU_ASSERT_EQUAL_FATAL(cu_store_enr_delete(f.store, CU_ENR_GROUP, "static-group", NULL, reason, sizeof reason),
                          CU_OK);

    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_GROUP, reason, sizeof reason, grp, "geo-group", "geoLatency",
                                      "\"hub1.example.net\",\"hub2.example.net\"", KEY_B64), CU_OK);
    cu_hub both[2] = {h1, h2};
    int per[2] = {0, 0};
    for (int i = 0; i < 40; i++) {
        char id[32];
        size_t idx = 9;
        snprintf(id, sizeof id, "geo-%d", i);
        CU_ASSERT_EQUAL_FATAL(cu_alloc_hashed(both, 2, id, &idx), CU_OK);
        CU_ASSERT_EQUAL(reg(&f, id, true, hub, sub), CU_PROV_PROVISION);
        CU_ASSERT_STRING_EQUAL(hub, both[idx].name);
        per[idx]++;
    }
    CU_ASSERT(per[0] > 0 && per[1] > 0);

    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"reset-1\",\"iotHubs\":[\"hub1.example.net\"],"
                                      "\"reprovisionPolicy\":{\"updateHubAssignment\":true,\"migrateDeviceData\":false},"
                                      "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                                      "{\"primaryKey\":\"%s\"}}}", KEY_B64), CU_OK);
    CU_ASSERT_EQUAL(reg(&f, "reset-1", false, hub, sub), CU_PROV_PROVISION);
    CU_ASSERT_STRING_EQUAL(hub, "hub1.example.net");
    CU_ASSERT_STRING_EQUAL(sub, "initialAssignment");
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"reset-1\",\"iotHubs\":[\"hub2.example.net\"],"
                                      "\"reprovisionPolicy\":{\"updateHubAssignment\":true,\"migrateDeviceData\":false},"
                                      "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                                      "{\"primaryKey\":\"%s\"}}}", KEY_B64), CU_OK);
    CU_ASSERT_EQUAL(reg(&f, "reset-1", false, hub, sub), CU_PROV_PROVISION);
    CU_ASSERT_STRING_EQUAL(hub, "hub2.example.net");
    CU_ASSERT_STRING_EQUAL(sub, "deviceDataReset");
    fx_close(&f);
}

/* ---- a one-shot-per-connection HTTP server ---- */

typedef struct server {
    int fd, port;
    pthread_t th;
    const char *mode; /* "ok", "500", "slow", "garbage", "unlinked" */
    char last_body[16384];
    volatile int stop;
} server;

static void *serve(void *arg)
{
    server *s = arg;
    while (!s->stop) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            break;
        char buf[32768];
        size_t n = 0;
        ssize_t r;
        char *body = NULL;
        long clen = -1;
        while (n < sizeof buf - 1 && (r = read(c, buf + n, sizeof buf - 1 - n)) > 0) {
            n += (size_t)r;
            buf[n] = 0;
            char *hend = strstr(buf, "\r\n\r\n");
            if (hend != NULL) {
                char *cl = strcasestr(buf, "Content-Length:");
                clen = cl ? strtol(cl + 15, NULL, 10) : 0;
                body = hend + 4;
                if ((long)(n - (size_t)(body - buf)) >= clen)
                    break;
            }
        }
        if (body != NULL)
            snprintf(s->last_body, sizeof s->last_body, "%s", body);
        const char *body_out = NULL, *status = "200 OK";
        char resp[1024];
        if (strcmp(s->mode, "500") == 0) {
            status = "500 Internal Server Error";
            body_out = "";
        } else if (strcmp(s->mode, "garbage") == 0) {
            body_out = "nope!";
        } else if (strcmp(s->mode, "unlinked") == 0) {
            body_out = "{\"iotHubHostName\":\"evil.example.net\"}";
        } else {
            body_out = "{\"iotHubHostName\":\"hub2.example.net\",\"payload\":{\"fw\":\"2.1\",\"slot\":7}}";
        }
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s", status, strlen(body_out), body_out);
        if (strcmp(s->mode, "slow") == 0)
            usleep(1500 * 1000);
        if (send(c, resp, strlen(resp), MSG_NOSIGNAL) < 0) {
            /* the client may have given up (timeout case) */
        }
        close(c);
    }
    return NULL;
}

static int server_start(server *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    memset(s->last_body, 0, sizeof s->last_body);
    s->stop = 0;
    s->mode = "ok";
    if ((s->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(s->fd, 8) != 0 || getsockname(s->fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->th, NULL, serve, s);
}

static void server_stop(server *s)
{
    s->stop = 1;
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->th, NULL);
}

static void test_custom_webhook(void)
{
    fx f;
    server srv;
    char reason[512];
    static const char *KEY = "c3ltbWV0cmljLWtleS1mb3ItdGVzdHMtb25seS0zMmI=";
    CU_ASSERT_FATAL(fx_open(&f, "alloc") == 0);
    CU_ASSERT_FATAL(server_start(&srv) == 0);
    cu_hub h2 = {"hub2.example.net", 1, true};
    CU_ASSERT_EQUAL(cu_store_hub_put(f.store, &h2, NULL, 0), CU_OK);
    CU_ASSERT_EQUAL_FATAL(fx_put_json(&f, CU_ENR_INDIVIDUAL, reason, sizeof reason,
                                      "{\"registrationId\":\"dev-c\",\"allocationPolicy\":\"custom\","
                                      "\"customAllocationDefinition\":{\"webhookUrl\":\"http://127.0.0.1:%d/alloc\","
                                      "\"apiVersion\":\"2021-10-01\"},\"attestation\":{\"type\":\"symmetricKey\","
                                      "\"symmetricKey\":{\"primaryKey\":\"%s\"}}}", srv.port, KEY), CU_OK);
    uint8_t *k = NULL;
    size_t kl = 0;
    char *tok = NULL;
    CU_ASSERT_EQUAL(cu_sas_key_decode(KEY, &k, &kl), CU_OK);
    CU_ASSERT_EQUAL(cu_sas_sign(k, kl, "0ne00000001", "dev-c", (uint64_t)time(NULL) + 600, "registration", &tok), CU_OK);
    cu_prov_request req = {.registration_id = "dev-c", .authorization = tok, .payload_json = "{\"model\":\"x1\"}"};

    const struct {
        const char *mode, *status, *why;
    } cases[] = {
        {"ok", "assigned", ""},
        {"500", "failed", "HTTP 500"},
        {"garbage", "failed", "not a JSON object"},
        {"unlinked", "failed", "not a linked hub"},
        {"slow", "failed", "imeout"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv.mode = cases[i].mode;
        cu_prov_result res;
        CU_ASSERT_EQUAL_FATAL(cu_prov_register(f.prov, &req, &res), CU_OK);
        CU_ASSERT_EQUAL(res.outcome, CU_PROV_PROVISION);
        bool ok = strcmp(res.record.status, cases[i].status) == 0 &&
                  strstr(res.record.error_message, cases[i].why) != NULL;
        if (!ok)
            fprintf(stderr, "mode %s: status %s message '%s'\n", cases[i].mode, res.record.status,
                    res.record.error_message);
        CU_ASSERT_TRUE(ok);
        if (i == 0) {
            CU_ASSERT_STRING_EQUAL(res.record.assigned_hub, "hub2.example.net");
            CU_ASSERT_PTR_NOT_NULL(res.record.payload_json);
            CU_ASSERT_PTR_NOT_NULL(strstr(res.record.payload_json, "\"slot\":7"));
            /* The request: the enrollment without keys, the runtime context, linked hubs. */
            CU_ASSERT_PTR_NOT_NULL(strstr(srv.last_body, "\"individualEnrollment\""));
            CU_ASSERT_PTR_NOT_NULL(strstr(srv.last_body, "\"deviceRuntimeContext\""));
            CU_ASSERT_PTR_NOT_NULL(strstr(srv.last_body, "\"linkedHubs\""));
            CU_ASSERT_PTR_NOT_NULL(strstr(srv.last_body, "\"model\":\"x1\""));
            CU_ASSERT_PTR_NULL(strstr(srv.last_body, KEY));
        } else {
            CU_ASSERT_EQUAL(res.record.error_code, 400208);
        }
        cu_prov_result_clear(&res);
    }
    free(tok);
    cu_sas_key_free(k, kl);
    server_stop(&srv);
    fx_close(&f);
}

int main(void)
{
    static const cu_test_case cases[] = {
        {"hashed: weights, stability, minimal movement", test_hashed},
        {"static, geoLatency, reprovision with reset", test_policies},
        {"custom allocation webhook", test_custom_webhook},
        {NULL, NULL},
    };
    if (cu_test_add_suite("prov_alloc", NULL, NULL, cases) != 0)
        return 2;
    return cu_test_run();
}
