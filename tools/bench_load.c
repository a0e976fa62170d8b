/* custos bench load: registrations per second and latency of a running
 * custosd, from many concurrent devices on this machine. It reads the
 * endpoint, id scope and CA from the service's state directory and enrolls
 * what it needs there (a symmetric-key group whose derived keys the devices
 * use, or an X.509 group on a fresh CA that issues the device certificates). */
#include "cli.h"

#include <custos/enrollment.h>
#include <custos/load.h>
#include <custos/pki.h>
#include <custos/server.h>
#include <custos/store.h>
#include <custos/x509.h>

#include <jansson.h>
#include <openssl/rand.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cu_bench_load(int argc, char **argv);

/* CPU seconds (user + system) of process pid so far, from /proc; < 0 if
 * unknown. */
static double proc_cpu(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* after "pid (comm) ": state is field 3, utime 14, stime 15 */
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static cu_rc enroll_group(cu_store *s, const char *id, const char *att_json)
{
    char reason[512] = "", json[8192 + 256];
    cu_enr *e = NULL;
    snprintf(json, sizeof json, "{\"enrollmentGroupId\":\"%s\",\"attestation\":%s}", id, att_json);
    cu_rc rc = cu_enr_parse(CU_ENR_GROUP, json, strlen(json), &e, reason, sizeof reason);
    if (rc == CU_OK)
        rc = cu_store_enr_put(s, e, NULL, CU_STORE_CREATE, reason, sizeof reason);
    cu_enr_free(e);
    if (rc != CU_OK)
        return cu_err_set(rc, "enrolling group %s: %s", id, reason[0] ? reason : cu_err_last()->msg);
    return CU_OK;
}

int cu_bench_load(int argc, char **argv)
{
    const char *state = NULL, *mode_s = "symmetric", *count_s = NULL, *conc_s = "64", *prefix = NULL,
               *succ_path = NULL, *max_s = NULL, *first_s = NULL, *pid_s = NULL;
    bool json = false, help = false, retry = false;
    cu_cli_opt opts[] = {
        {"--state", &state, NULL, NULL, NULL, 0},       {"--mode", &mode_s, NULL, NULL, NULL, 0},
        {"--count", &count_s, NULL, NULL, NULL, 0},     {"--concurrency", &conc_s, NULL, NULL, NULL, 0},
        {"--prefix", &prefix, NULL, NULL, NULL, 0},     {"--first", &first_s, NULL, NULL, NULL, 0},
        {"--successes", &succ_path, NULL, NULL, NULL, 0}, {"--max-seconds", &max_s, NULL, NULL, NULL, 0},
        {"--server-pid", &pid_s, NULL, NULL, NULL, 0},
        {"--retry", NULL, &retry, NULL, NULL, 0},       {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},         {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("bench load", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos bench load [--state DIR] [--mode symmetric|x509] [--count N]\n"
               "                         [--concurrency C] [--prefix P] [--first N] [--retry]\n"
               "                         [--successes FILE] [--max-seconds S] [--server-pid PID]\n"
               "                         [--json]\n\n"
               "Drives the custosd whose state is DIR (default ./var) on this machine:\n"
               "  symmetric  devices derive their keys from a fresh symmetric-key group and\n"
               "             keep their connection alive (default count 20000)\n"
               "  x509       devices hold certificates of a fresh CA enrolled as a group; each\n"
               "             registration makes a new, full TLS handshake (default count 5000)\n"
               "Prints registrations per second and p50/p99 latency (PUT to final answer).\n"
               "--retry reconnects and retries a device after a transport error (restarts);\n"
               "--successes writes the id of every assigned registration to FILE.\n"
               "CPU per registration: this generator's own (user + system), and custosd's\n"
               "when --server-pid names it (read from /proc): rates on a shared machine vary,\n"
               "CPU per registration much less.\n"
               "Exit status 0 only if every registration was assigned.\n");
        return CU_EXIT_OK;
    }
    cu_load_mode mode;
    if (!strcmp(mode_s, "symmetric"))
        mode = CU_LOAD_SYMKEY;
    else if (!strcmp(mode_s, "x509"))
        mode = CU_LOAD_X509;
    else
        return cu_cli_usage("bench load", "--mode is symmetric or x509");
    long count = count_s ? atol(count_s) : mode == CU_LOAD_SYMKEY ? 20000 : 5000;
    long conc = atol(conc_s);
    if (count < 1 || count > 10000000 || conc < 1 || conc > 1024)
        return cu_cli_usage("bench load", "--count 1..10000000, --concurrency 1..1024");

    cu_srv_config cfg;
    cu_srv_state *st = NULL;
    cu_store *store = NULL;
    cu_srv_info info;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    FILE *succ = NULL;
    char *pem = NULL, gid[64], pfx[80], host[256], att[8192];
    uint8_t gkey[64], r[4];
    unsigned port = 0;
    int status = CU_EXIT_FAIL;

    cu_srv_config_init(&cfg);
    if ((state != NULL && cu_srv_config_set(&cfg, "state", state) != CU_OK) ||
        cu_srv_state_open(&cfg, false, &st) != CU_OK || cu_srv_info_get(st, &info) != CU_OK ||
        cu_srv_state_store_open(st, &store) != CU_OK) {
        cu_cli_fail("%s", cu_err_last()->msg);
        goto out;
    }
    if (sscanf(info.endpoint, "https://%255[^:]:%u", host, &port) != 2) {
        cu_cli_fail("no endpoint in the state (is custosd running?)");
        goto out;
    }
    RAND_bytes(r, sizeof r);
    snprintf(gid, sizeof gid, "bench-%s-%02x%02x%02x%02x", mode == CU_LOAD_SYMKEY ? "sym" : "x509", r[0], r[1], r[2], r[3]);
    if (prefix == NULL) {
        snprintf(pfx, sizeof pfx, "%s-", gid);
        prefix = pfx;
    }
    if (mode == CU_LOAD_SYMKEY) {
        unsigned char b64[100];
        RAND_bytes(gkey, sizeof gkey);
        EVP_EncodeBlock(b64, gkey, sizeof gkey);
        snprintf(att, sizeof att, "{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}",
                 b64, b64);
    } else {
        cu_pki_spec spec = {.cn = gid, .org = "Custos bench", .ca = true, .pathlen = 0, .not_before = -3600,
                            .not_after = 86400};
        if (cu_pki_keygen(&ca_key) != CU_OK || cu_pki_issue(&spec, ca_key, NULL, ca_key, &ca) != CU_OK ||
            (pem = cu_x509_to_pem(ca)) == NULL) {
            cu_cli_fail("%s", cu_err_last()->msg);
            goto out;
        }
        json_t *j = json_pack("{s:s, s:{s:{s:{s:s}}}}", "type", "x509", "x509", "signingCertificates", "primary",
                              "certificate", pem);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        snprintf(att, sizeof att, "%s", s ? s : "{}");
        free(s);
        json_decref(j);
    }
    if (enroll_group(store, gid, att) != CU_OK) {
        cu_cli_fail("%s", cu_err_last()->msg);
        goto out;
    }
    if (succ_path != NULL && (succ = fopen(succ_path, "a")) == NULL) {
        cu_cli_fail("cannot write %s", succ_path);
        goto out;
    }
    cu_load_config lc = {.host = host, .port = port, .ca_file = info.ca_file, .id_scope = info.id_scope,
                         .mode = mode, .count = (size_t)count, .concurrency = (unsigned)conc, .prefix = prefix,
                         .first = first_s ? (size_t)atol(first_s) : 0, .group_key = gkey,
                         .group_key_len = sizeof gkey, .ca_cert = ca, .ca_key = ca_key, .retry = retry,
                         .max_seconds = max_s ? (unsigned)atoi(max_s) : 0, .successes = succ};
    /* The certificate's name may not resolve here (a public host name on a
     * test machine): then reach the service on loopback. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (!strcmp(host, "localhost") || getaddrinfo(host, NULL, &hints, &ai) != 0)
        lc.connect = "127.0.0.1";
    if (ai != NULL)
        freeaddrinfo(ai);
    cu_load_result res;
    long spid = pid_s ? atol(pid_s) : 0;
    double s0 = spid > 0 ? proc_cpu(spid) : -1;
    if (pid_s != NULL && s0 < 0) {
        cu_cli_fail("--server-pid %s: no such process to measure", pid_s);
        goto out;
    }
    /* A service that goes away mid-write must be an error, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    if (cu_load_run(&lc, &res) != CU_OK) {
        cu_cli_fail("%s", cu_err_last()->msg);
        goto out;
    }
    double s1 = s0 >= 0 ? proc_cpu(spid) : -1;
    size_t done = res.assigned + res.refused + res.failed + res.errors;
    double cli_us = done ? res.cpu_seconds / (double)done * 1e6 : 0;
    double srv_us = s0 >= 0 && s1 >= s0 && done ? (s1 - s0) / (double)done * 1e6 : -1;
    /* The engine tries every symmetric-key group for a derived key: leave
     * no bench group behind to slow later registrations. */
    char why[256];
    cu_store_enr_delete(store, CU_ENR_GROUP, gid, NULL, why, sizeof why);
    double rps = res.seconds > 0 ? (double)res.assigned / res.seconds : 0;
    if (json) {
        printf("{\"mode\":\"%s\",\"count\":%ld,\"concurrency\":%ld,\"assigned\":%zu,\"refused\":%zu,\"failed\":%zu,"
               "\"errors\":%zu,\"retries\":%zu,\"handshakes\":%zu,\"seconds\":%.3f,\"perSecond\":%.1f,"
               "\"p50Ms\":%.3f,\"p99Ms\":%.3f,\"maxMs\":%.3f,\"clientCpuUs\":%.1f,",
               mode_s, count, conc, res.assigned, res.refused, res.failed, res.errors, res.retries, res.handshakes,
               res.seconds, rps, res.p50_ms, res.p99_ms, res.max_ms, cli_us);
        if (srv_us >= 0)
            printf("\"serverCpuUs\":%.1f,", srv_us);
        printf("\"prefix\":");
        cu_cli_json_str(stdout, prefix);
        printf(",\"firstError\":");
        cu_cli_json_str(stdout, res.first_error);
        printf("}\n");
    } else {
        printf("%s: %zu/%ld assigned in %.2f s = %.0f registrations/s (%ld clients, %zu TLS handshakes)\n"
               "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; refused %zu, failed %zu, errors %zu, retries %zu\n",
               mode_s, res.assigned, count, res.seconds, rps, conc, res.handshakes, res.p50_ms, res.p99_ms,
               res.max_ms, res.refused, res.failed, res.errors, res.retries);
        printf("CPU per registration: client %.0f us", cli_us);
        if (srv_us >= 0)
            printf(", custosd %.0f us: two idle cores would carry %.0f registrations/s", srv_us,
                   2e6 / (srv_us + cli_us));
        printf("\n");
        if (res.first_error[0])
            printf("first error: %s\n", res.first_error);
    }
    status = res.assigned == (size_t)count ? CU_EXIT_OK : CU_EXIT_FAIL;
out:
    if (succ != NULL)
        fclose(succ);
    free(pem);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    cu_store_close(store);
    cu_srv_state_free(st);
    cu_srv_config_clear(&cfg);
    return status;
}
