/* custos enrollment …: individual enrollments (and, through cu_pcli_enr,
 * the `group` command, which shares this code). */
#include "cli.h"

#include <custos/enrollment.h>
#include <custos/prov.h>
#include <custos/state.h>
#include <custos/store.h>
#include <custos/tpmsvc.h>
#include <custos/x509.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Shared with cmd_group.c, cmd_ca.c, cmd_hub.c, cmd_registration.c (no
 * header of their own: tools/ keeps one file per command group). */
int cu_pcli_open(const char *state, cu_state **_st);
char *cu_pcli_read_file(const char *path, size_t max, size_t *_len);
int cu_pcli_enr(cu_enr_kind kind, int argc, char **argv);

#define DEFAULT_STATE "./var"
#define MAX_FILE (1024 * 1024)

int cu_pcli_open(const char *state, cu_state **_st)
{
    char actor[320];
    if (cu_state_open(state ? state : DEFAULT_STATE, NULL, _st) != CU_OK)
        return cu_cli_fail("cannot open the state in %s: %s", state ? state : DEFAULT_STATE, cu_err_last()->msg);
    /* Every change this command makes is audited under its user. */
    cu_store_set_actor(cu_state_get0_store(*_st), cu_cli_actor(actor, sizeof actor));
    return CU_EXIT_OK;
}

char *cu_pcli_read_file(const char *path, size_t max, size_t *_len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        cu_cli_fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (n + 1 >= cap) {
            if (cap >= max + 1) {
                cu_cli_fail("%s: larger than %zu bytes", path, max);
                free(buf);
                buf = NULL;
                break;
            }
            char *t = realloc(buf, cap *= 2);
            if (t == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = t;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    if (f != stdin)
        fclose(f);
    if (buf != NULL) {
        buf[n] = 0;
        if (_len)
            *_len = n;
    }
    return buf;
}

/* A key file: base64 text, surrounding whitespace ignored. */
static char *read_key_file(const char *path)
{
    char *s = cu_pcli_read_file(path, 4096, NULL);
    if (s == NULL)
        return NULL;
    char *p = s;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    memmove(s, p, strlen(p) + 1);
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
        s[--n] = 0;
    return s;
}

/* ---- options shared by create and update ---- */

typedef struct enr_opts {
    const char *state, *file, *etag, *attestation, *device_id, *policy, *webhook, *webhook_api;
    const char *pkey, *skey, *cert, *scert, *caref, *scaref, *ek, *twin, *reprov;
    const char *hubs[64];
    size_t nhubs;
    int enable; /* 1 enable, 0 disable, -1 unchanged */
    int edge;   /* 1 set, -1 unchanged */
    bool json, show_keys, create_only;
    const char *after, *cert_chain, *regid, *sas_file, *rejects;
    const char *ek_cert, *tpm_roots, *tpm_inter;
    long page_size, batch;
} enr_opts;

enum {
    O_STATE = 1000, O_FILE, O_ETAG, O_ATT, O_DEVID, O_POLICY, O_WEBHOOK, O_WEBHOOK_API, O_PKEY, O_SKEY,
    O_CERT, O_SCERT, O_CAREF, O_SCAREF, O_EK, O_TWIN, O_REPROV, O_HUB, O_ENABLE, O_DISABLE, O_EDGE,
    O_JSON, O_SHOWKEYS, O_AFTER, O_PAGE, O_REGID, O_SAS, O_CREATE_ONLY, O_BATCH, O_REJECTS,
    O_EKCERT, O_TPMROOTS, O_TPMINTER,
};

static const struct option LONGOPTS[] = {
    {"state", required_argument, NULL, O_STATE},
    {"file", required_argument, NULL, O_FILE},
    {"etag", required_argument, NULL, O_ETAG},
    {"attestation", required_argument, NULL, O_ATT},
    {"device-id", required_argument, NULL, O_DEVID},
    {"allocation-policy", required_argument, NULL, O_POLICY},
    {"webhook-url", required_argument, NULL, O_WEBHOOK},
    {"webhook-api-version", required_argument, NULL, O_WEBHOOK_API},
    {"primary-key-file", required_argument, NULL, O_PKEY},
    {"secondary-key-file", required_argument, NULL, O_SKEY},
    {"cert", required_argument, NULL, O_CERT},
    {"secondary-cert", required_argument, NULL, O_SCERT},
    {"ca-ref", required_argument, NULL, O_CAREF},
    {"secondary-ca-ref", required_argument, NULL, O_SCAREF},
    {"ek-file", required_argument, NULL, O_EK},
    {"ek-cert", required_argument, NULL, O_EKCERT},
    {"tpm-roots", required_argument, NULL, O_TPMROOTS},
    {"tpm-intermediates", required_argument, NULL, O_TPMINTER},
    {"initial-twin-file", required_argument, NULL, O_TWIN},
    {"reprovision", required_argument, NULL, O_REPROV},
    {"hub", required_argument, NULL, O_HUB},
    {"enable", no_argument, NULL, O_ENABLE},
    {"disable", no_argument, NULL, O_DISABLE},
    {"disabled", no_argument, NULL, O_DISABLE},
    {"iot-edge", no_argument, NULL, O_EDGE},
    {"json", no_argument, NULL, O_JSON},
    {"show-keys", no_argument, NULL, O_SHOWKEYS},
    {"after", required_argument, NULL, O_AFTER},
    {"page-size", required_argument, NULL, O_PAGE},
    {"registration-id", required_argument, NULL, O_REGID},
    {"sas-file", required_argument, NULL, O_SAS},
    {"create-only", no_argument, NULL, O_CREATE_ONLY},
    {"batch", required_argument, NULL, O_BATCH},
    {"rejects", required_argument, NULL, O_REJECTS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const char *group_name(cu_enr_kind k) { return k == CU_ENR_GROUP ? "group" : "enrollment"; }

static void usage(cu_enr_kind kind, FILE *f)
{
    const char *g = group_name(kind);
    bool grp = kind == CU_ENR_GROUP;
    fprintf(f,
            "usage: custos %s <command> [options]\n\n"
            "commands:\n"
            "  create %s [flags] | create --file FILE   add %s (fails if it exists)\n"
            "  show ID [--show-keys]                     one entry\n"
            "  list [--page-size N] [--after ID]         entries in id order, a page at a time\n"
            "  update ID [--etag E] [flags | --file FILE]  change an entry (412 on a stale etag)\n"
            "  delete ID [--etag E]                      remove an entry\n"
            "  import FILE [--create-only] [--rejects F] bulk JSON lines (one REST object a line)\n",
            g, grp ? "GROUP-ID" : "REGISTRATION-ID", grp ? "an enrollment group" : "an individual enrollment");
    if (!grp)
        fprintf(f, "  explain (--cert CHAIN.pem | --registration-id ID) [--sas-file F]\n"
                   "                                            the decision the service would make, and why\n");
    else
        fprintf(f, "  symkey-limit [N]                          how many symmetric-key groups the store may hold\n"
                   "                                            (default %d; each is tried for an unknown device)\n",
                CU_STORE_DEFAULT_MAX_SYMKEY_GROUPS);
    fprintf(f,
            "\nflags (create/update):\n"
            "  --attestation x509|symmetricKey%s\n"
            "  --primary-key-file F --secondary-key-file F   base64 keys (generated when absent)\n"
            "  --cert F --secondary-cert F                    PEM: %s\n"
            "%s"
            "%s"
            "  --enable | --disable, --hub HOST (repeat), --allocation-policy hashed|geoLatency|static|custom\n"
            "  --webhook-url URL [--webhook-api-version V], --reprovision migrate|reset|never\n"
            "  --iot-edge, --initial-twin-file F (JSON {tags, properties:{desired}})\n"
            "\ncommon: --state DIR (default ./var), --json. Keys are never taken from the command line.\n",
            grp ? "" : "|tpm", grp ? "the group's signing (root or intermediate CA) certificate" : "the device's certificate",
            grp ? "  --ca-ref NAME --secondary-ca-ref NAME         a verified CA certificate (custos ca)\n" : "",
            grp ? "" : "  --device-id ID, --ek-file F (base64 TPM2B_PUBLIC of the endorsement key;\n"
                  "      without an id, the TPM default id: base32 of SHA-256 of the EK)\n"
                  "  --ek-cert F --tpm-roots F [--tpm-intermediates F]  check the EK's certificate\n"
                  "      (PEM or DER) against TPM manufacturer roots before writing (extension)\n");
}

static int parse_opts(cu_enr_kind kind, int argc, char **argv, enr_opts *o)
{
    memset(o, 0, sizeof *o);
    o->enable = -1;
    o->edge = -1;
    o->page_size = 100;
    o->batch = 1000;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", LONGOPTS, NULL)) != -1) {
        switch (c) {
        case O_STATE: o->state = optarg; break;
        case O_FILE: o->file = optarg; break;
        case O_ETAG: o->etag = optarg; break;
        case O_ATT: o->attestation = optarg; break;
        case O_DEVID: o->device_id = optarg; break;
        case O_POLICY: o->policy = optarg; break;
        case O_WEBHOOK: o->webhook = optarg; break;
        case O_WEBHOOK_API: o->webhook_api = optarg; break;
        case O_PKEY: o->pkey = optarg; break;
        case O_SKEY: o->skey = optarg; break;
        case O_CERT: o->cert = optarg; break;
        case O_SCERT: o->scert = optarg; break;
        case O_CAREF: o->caref = optarg; break;
        case O_SCAREF: o->scaref = optarg; break;
        case O_EK: o->ek = optarg; break;
        case O_EKCERT: o->ek_cert = optarg; break;
        case O_TPMROOTS: o->tpm_roots = optarg; break;
        case O_TPMINTER: o->tpm_inter = optarg; break;
        case O_TWIN: o->twin = optarg; break;
        case O_REPROV: o->reprov = optarg; break;
        case O_HUB:
            if (o->nhubs == sizeof o->hubs / sizeof o->hubs[0])
                return cu_cli_usage(group_name(kind), "too many --hub");
            o->hubs[o->nhubs++] = optarg;
            break;
        case O_ENABLE: o->enable = 1; break;
        case O_DISABLE: o->enable = 0; break;
        case O_EDGE: o->edge = 1; break;
        case O_JSON: o->json = true; break;
        case O_SHOWKEYS: o->show_keys = true; break;
        case O_AFTER: o->after = optarg; break;
        case O_PAGE: o->page_size = strtol(optarg, NULL, 10); break;
        case O_REGID: o->regid = optarg; break;
        case O_SAS: o->sas_file = optarg; break;
        case O_CREATE_ONLY: o->create_only = true; break;
        case O_BATCH: o->batch = strtol(optarg, NULL, 10); break;
        case O_REJECTS: o->rejects = optarg; break;
        case 'h': usage(kind, stdout); return -1;
        default:
            return cu_cli_usage(group_name(kind), "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (o->page_size < 1 || o->page_size > 10000)
        return cu_cli_usage(group_name(kind), "--page-size must be 1..10000");
    if (o->batch < 1 || o->batch > 100000)
        return cu_cli_usage(group_name(kind), "--batch must be 1..100000");
    if ((o->ek_cert != NULL) != (o->tpm_roots != NULL) || (o->tpm_inter != NULL && o->ek_cert == NULL))
        return cu_cli_usage(group_name(kind), "--ek-cert and --tpm-roots go together "
                            "(--tpm-intermediates with them)");
    return CU_EXIT_OK;
}

static json_t *obj_at(json_t *parent, const char *key)
{
    json_t *o = json_object_get(parent, key);
    if (!json_is_object(o)) {
        o = json_object();
        json_object_set_new(parent, key, o);
    }
    return o;
}

static int set_cert(json_t *set, const char *slot, const char *path)
{
    char *pem = cu_pcli_read_file(path, CU_X509_MAX_INPUT, NULL);
    if (pem == NULL)
        return CU_EXIT_FAIL;
    json_object_set_new(obj_at(set, slot), "certificate", json_string(pem));
    free(pem);
    return CU_EXIT_OK;
}

/* Extension: the EK's certificate must chain to a TPM manufacturer's root
 * and certify this very EK, or nothing is written. The public protocol
 * carries no certificate, so the operator's enrollment is where a
 * genuine-TPM check can stand. */
static int check_ek_cert(json_t *att, const enr_opts *o)
{
    const char *ek = json_string_value(json_object_get(json_object_get(att, "tpm"), "endorsementKey"));
    if (ek == NULL)
        return cu_cli_usage("enrollment", "--ek-cert needs the endorsement key (--ek-file)");
    size_t n = 0;
    char *cert = cu_pcli_read_file(o->ek_cert, 64 * 1024, &n);
    if (cert == NULL)
        return CU_EXIT_FAIL;
    cu_tpmsvc_pub *pub = NULL;
    int rc = CU_EXIT_OK;
    if (cu_tpmsvc_pub_parse_b64(ek, &pub) != CU_OK ||
        cu_tpmsvc_ekcert_verify(pub, (const uint8_t *)cert, n, o->tpm_roots, NULL, o->tpm_inter) != CU_OK)
        rc = cu_cli_fail("%s: the EK certificate is refused: %s", o->ek_cert, cu_err_last()->msg);
    cu_tpmsvc_pub_free(pub);
    free(cert);
    return rc;
}

/* Applies the flags to an enrollment's JSON. */
static int apply_flags(cu_enr_kind kind, json_t *j, const enr_opts *o)
{
    int rc;
    json_t *att = obj_at(j, "attestation");
    const char *type = o->attestation;
    if (type == NULL && (o->cert || o->caref))
        type = "x509";
    if (type == NULL && o->ek)
        type = "tpm";
    if (type == NULL && (o->pkey || o->skey))
        type = "symmetricKey";
    if (type == NULL && json_object_get(att, "type") == NULL)
        type = "symmetricKey";
    if (type != NULL) {
        const char *cur = json_string_value(json_object_get(att, "type"));
        if (cur == NULL || strcmp(cur, type) != 0) { /* a new mechanism replaces the old */
            json_object_clear(att);
            json_object_set_new(att, "type", json_string(type));
        }
    }
    if (o->pkey || o->skey) {
        json_t *sym = obj_at(att, "symmetricKey");
        const char *files[2] = {o->pkey, o->skey}, *names[2] = {"primaryKey", "secondaryKey"};
        for (int i = 0; i < 2; i++) {
            if (files[i] == NULL)
                continue;
            char *k = read_key_file(files[i]);
            if (k == NULL)
                return CU_EXIT_FAIL;
            json_object_set_new(sym, names[i], json_string(k));
            memset(k, 0, strlen(k));
            free(k);
        }
    }
    if (o->cert || o->scert) {
        json_t *x = obj_at(att, "x509");
        json_t *set = obj_at(x, kind == CU_ENR_GROUP ? "signingCertificates" : "clientCertificates");
        json_object_del(x, "caReferences");
        if (o->cert && (rc = set_cert(set, "primary", o->cert)) != 0)
            return rc;
        if (o->scert && (rc = set_cert(set, "secondary", o->scert)) != 0)
            return rc;
    }
    if (o->caref || o->scaref) {
        json_t *x = obj_at(att, "x509");
        json_object_del(x, "signingCertificates");
        json_t *refs = obj_at(x, "caReferences");
        if (o->caref)
            json_object_set_new(refs, "primary", json_string(o->caref));
        if (o->scaref)
            json_object_set_new(refs, "secondary", json_string(o->scaref));
    }
    if (o->ek) {
        char *k = read_key_file(o->ek);
        if (k == NULL)
            return CU_EXIT_FAIL;
        json_object_set_new(obj_at(att, "tpm"), "endorsementKey", json_string(k));
        free(k);
    }
    if (o->device_id)
        json_object_set_new(j, "deviceId", json_string(o->device_id));
    if (o->enable >= 0)
        json_object_set_new(j, "provisioningStatus", json_string(o->enable ? "enabled" : "disabled"));
    if (o->edge > 0)
        json_object_set_new(obj_at(j, "capabilities"), "iotEdge", json_true());
    if (o->policy)
        json_object_set_new(j, "allocationPolicy", json_string(o->policy));
    if (o->nhubs > 0) {
        json_t *a = json_array();
        for (size_t i = 0; i < o->nhubs; i++)
            json_array_append_new(a, json_string(o->hubs[i]));
        json_object_set_new(j, "iotHubs", a);
    }
    if (o->webhook) {
        json_t *d = obj_at(j, "customAllocationDefinition");
        json_object_set_new(d, "webhookUrl", json_string(o->webhook));
        json_object_set_new(d, "apiVersion", json_string(o->webhook_api ? o->webhook_api : "2021-10-01"));
    }
    if (o->reprov) {
        json_t *r = obj_at(j, "reprovisionPolicy");
        if (strcmp(o->reprov, "migrate") == 0) {
            json_object_set_new(r, "updateHubAssignment", json_true());
            json_object_set_new(r, "migrateDeviceData", json_true());
        } else if (strcmp(o->reprov, "reset") == 0) {
            json_object_set_new(r, "updateHubAssignment", json_true());
            json_object_set_new(r, "migrateDeviceData", json_false());
        } else if (strcmp(o->reprov, "never") == 0) {
            json_object_set_new(r, "updateHubAssignment", json_false());
            json_object_set_new(r, "migrateDeviceData", json_false());
        } else {
            return cu_cli_usage(group_name(kind), "--reprovision is migrate, reset or never");
        }
    }
    if (o->twin) {
        size_t n = 0;
        char *t = cu_pcli_read_file(o->twin, 96 * 1024, &n);
        json_error_t e;
        json_t *tw = t ? json_loadb(t, n, JSON_REJECT_DUPLICATES, &e) : NULL;
        free(t);
        if (tw == NULL)
            return cu_cli_fail("%s: not JSON", o->twin);
        json_object_set_new(j, "initialTwin", tw);
    }
    if (o->ek_cert != NULL)
        return check_ek_cert(att, o);
    return CU_EXIT_OK;
}

static void print_enr(const cu_enr *e, const enr_opts *o)
{
    if (o->json) {
        char *s = cu_enr_to_json(e, o->show_keys ? CU_ENR_JSON_SHOW_KEYS : 0);
        puts(s ? s : "{}");
        free(s);
        return;
    }
    bool grp = cu_enr_get_kind(e) == CU_ENR_GROUP;
    printf("%-20s %s\n", grp ? "enrollmentGroupId:" : "registrationId:", cu_enr_get0_id(e));
    if (!grp)
        printf("%-20s %s\n", "deviceId:", cu_enr_get0_device_id(e) ? cu_enr_get0_device_id(e) : cu_enr_get0_id(e));
    printf("%-20s %s\n", "attestation:", cu_att_type_str(cu_enr_get_att_type(e)));
    for (int s = 0; s < 2; s++) {
        const char *pem = cu_enr_get0_cert(e, (cu_enr_slot)s);
        const char *ref = grp ? cu_enr_get0_ca_ref(e, (cu_enr_slot)s) : NULL;
        X509 *x = NULL;
        if (pem && cu_x509_decode(pem, strlen(pem), &x) == CU_OK) {
            char *subj = cu_x509_name_str(X509_get_subject_name(x)), fp[65];
            cu_x509_sha256_hex(x, fp);
            printf("%-20s %s (sha256 %s)\n", s ? "  secondary cert:" : "  primary cert:", subj ? subj : "?", fp);
            free(subj);
            X509_free(x);
        }
        if (ref)
            printf("%-20s %s\n", s ? "  secondary CA:" : "  primary CA:", ref);
        if (o->show_keys && cu_enr_get0_symkey(e, (cu_enr_slot)s))
            printf("%-20s %s\n", s ? "  secondaryKey:" : "  primaryKey:", cu_enr_get0_symkey(e, (cu_enr_slot)s));
    }
    printf("%-20s %s\n", "provisioningStatus:", cu_enr_is_enabled(e) ? "enabled" : "disabled");
    printf("%-20s %s\n", "allocationPolicy:", cu_enr_get0_allocation_policy(e));
    if (cu_enr_get_hub_count(e) > 0) {
        printf("%-20s", "iotHubs:");
        for (size_t i = 0; i < cu_enr_get_hub_count(e); i++)
            printf(" %s", cu_enr_get0_hub(e, i));
        putchar('\n');
    }
    printf("%-20s %s\n", "reprovision:", !cu_enr_reprovision_update_hub(e) ? "never"
                                             : cu_enr_reprovision_migrate(e) ? "migrate" : "reset");
    printf("%-20s %s\n", "etag:", cu_enr_get0_etag(e) ? cu_enr_get0_etag(e) : "");
    printf("%-20s %s\n", "created:", cu_enr_get0_created(e) ? cu_enr_get0_created(e) : "");
    printf("%-20s %s\n", "updated:", cu_enr_get0_updated(e) ? cu_enr_get0_updated(e) : "");
}

static const char *id_key(cu_enr_kind kind) { return kind == CU_ENR_GROUP ? "enrollmentGroupId" : "registrationId"; }

/* create / update */
static int cmd_write(cu_enr_kind kind, bool create, int argc, char **argv)
{
    enr_opts o;
    int rc = parse_opts(kind, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CU_EXIT_OK : rc;
    const char *id = optind < argc ? argv[optind] : NULL;
    cu_state *st = NULL;
    cu_enr *e = NULL, *old = NULL;
    json_t *j = NULL;
    char *text = NULL, reason[512] = "";
    const char *if_match = o.etag;

    if (optind + 1 < argc)
        return cu_cli_usage(group_name(kind), "unexpected argument '%s'", argv[optind + 1]);
    char *derived = NULL;
    if (id == NULL && o.file == NULL && create && kind == CU_ENR_INDIVIDUAL && o.ek != NULL) {
        /* A TPM device's default registration id comes from its EK. */
        char *ek = read_key_file(o.ek);
        cu_tpmsvc_pub *pub = NULL;
        if (ek == NULL || cu_tpmsvc_pub_parse_b64(ek, &pub) != CU_OK || (derived = malloc(CU_TPM_REGID_LEN + 1)) == NULL ||
            cu_tpmsvc_registration_id(pub, derived) != CU_OK) {
            free(ek);
            free(derived);
            cu_tpmsvc_pub_free(pub);
            return cu_cli_fail("%s: %s", o.ek, cu_err_last()->msg);
        }
        free(ek);
        cu_tpmsvc_pub_free(pub);
        id = derived;
    }
    if (id == NULL && o.file == NULL)
        return cu_cli_usage(group_name(kind), "%s needs an id or --file", create ? "create" : "update");
    if ((rc = cu_pcli_open(o.state, &st)) != 0)
        return rc;
    if (o.file != NULL) {
        size_t n = 0;
        json_error_t err;
        if ((text = cu_pcli_read_file(o.file, CU_ENR_MAX_JSON, &n)) == NULL) {
            rc = CU_EXIT_FAIL;
            goto cleanup;
        }
        if ((j = json_loadb(text, n, JSON_REJECT_DUPLICATES, &err)) == NULL || !json_is_object(j)) {
            rc = cu_cli_fail("%s: malformed JSON at line %d column %d: %s", o.file, err.line, err.column,
                             j ? "not an object" : err.text);
            goto cleanup;
        }
        const char *fid = json_string_value(json_object_get(j, id_key(kind)));
        if (id != NULL && fid != NULL && strcasecmp(id, fid) != 0) {
            rc = cu_cli_fail("%s says %s '%s', not '%s'", o.file, id_key(kind), fid, id);
            goto cleanup;
        }
        if (fid == NULL && id != NULL)
            json_object_set_new(j, id_key(kind), json_string(id));
        if (if_match == NULL)
            if_match = json_string_value(json_object_get(j, "etag"));
        if (!create && id == NULL)
            id = fid;
    } else if (create) {
        j = json_pack("{s:s}", id_key(kind), id);
    } else {
        /* Update from flags: start from the stored entry, keys included. */
        if (cu_store_enr_get(cu_state_get0_store(st), kind, id, &old) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto cleanup;
        }
        /* Optimistic concurrency: without --etag, the etag just read guards
         * against a concurrent change being overwritten. */
        if (if_match == NULL)
            if_match = cu_enr_get0_etag(old);
        char *s = cu_enr_to_json(old, CU_ENR_JSON_SHOW_KEYS | CU_ENR_JSON_COMPACT);
        json_error_t err;
        j = s ? json_loads(s, 0, &err) : NULL;
        free(s);
        json_object_del(j, "etag");
    }
    if (j == NULL) {
        rc = cu_cli_fail("out of memory");
        goto cleanup;
    }
    if ((rc = apply_flags(kind, j, &o)) != 0)
        goto cleanup;
    json_object_del(j, "etag");
    char *js = json_dumps(j, JSON_COMPACT);
    cu_rc r = cu_enr_parse(kind, js, strlen(js), &e, reason, sizeof reason);
    memset(js, 0, strlen(js));
    free(js);
    if (r != CU_OK) {
        rc = cu_cli_fail("%s: %s", o.file ? o.file : "invalid enrollment", reason);
        goto cleanup;
    }
    if (cu_store_enr_put(cu_state_get0_store(st), e, if_match, create ? CU_STORE_CREATE : CU_STORE_REPLACE,
                         reason, sizeof reason) != CU_OK) {
        rc = cu_cli_fail("%s", reason);
        goto cleanup;
    }
    print_enr(e, &o);
cleanup:
    if (text != NULL) {
        memset(text, 0, strlen(text));
        free(text);
    }
    json_decref(j);
    cu_enr_free(e);
    cu_enr_free(old);
    cu_state_close(st);
    free(derived);
    return rc;
}

static int cmd_show(cu_enr_kind kind, int argc, char **argv)
{
    enr_opts o;
    int rc = parse_opts(kind, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CU_EXIT_OK : rc;
    if (optind + 1 != argc)
        return cu_cli_usage(group_name(kind), "show takes one id");
    cu_state *st = NULL;
    cu_enr *e = NULL;
    if ((rc = cu_pcli_open(o.state, &st)) != 0)
        return rc;
    if (cu_store_enr_get(cu_state_get0_store(st), kind, argv[optind], &e) != CU_OK)
        rc = cu_cli_fail("%s", cu_err_last()->msg);
    else
        print_enr(e, &o);
    cu_enr_free(e);
    cu_state_close(st);
    return rc;
}

static int cmd_list(cu_enr_kind kind, int argc, char **argv)
{
    enr_opts o;
    int rc = parse_opts(kind, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CU_EXIT_OK : rc;
    cu_state *st = NULL;
    char **ids = NULL;
    size_t n = 0;
    if ((rc = cu_pcli_open(o.state, &st)) != 0)
        return rc;
    cu_store *s = cu_state_get0_store(st);
    if (cu_store_list(s, kind == CU_ENR_GROUP ? CU_KIND_GROUP : CU_KIND_ENROLLMENT, o.after, (size_t)o.page_size,
                      &ids, &n) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    if (o.json)
        printf("{\"items\":[");
    for (size_t i = 0; i < n; i++) {
        cu_enr *e = NULL;
        if (cu_store_enr_get(s, kind, ids[i], &e) != CU_OK) {
            /* A row that fails its seal is listed as such, not hidden. */
            if (o.json) {
                printf("%s{\"%s\":", i ? "," : "", id_key(kind));
                cu_cli_json_str(stdout, ids[i]);
                printf(",\"error\":");
                cu_cli_json_str(stdout, cu_err_last()->msg);
                printf("}");
            } else {
                printf("%-40s ERROR %s\n", ids[i], cu_err_last()->msg);
            }
            rc = CU_EXIT_FAIL;
            continue;
        }
        if (o.json) {
            char *js = cu_enr_to_json(e, CU_ENR_JSON_COMPACT);
            printf("%s%s", i ? "," : "", js ? js : "{}");
            free(js);
        } else {
            printf("%-40s %-13s %-9s %s\n", cu_enr_get0_id(e), cu_att_type_str(cu_enr_get_att_type(e)),
                   cu_enr_is_enabled(e) ? "enabled" : "disabled", cu_enr_get0_allocation_policy(e));
        }
        cu_enr_free(e);
    }
    bool more = n == (size_t)o.page_size;
    if (o.json) {
        printf("]");
        if (more) {
            printf(",\"continuation\":");
            cu_cli_json_str(stdout, ids[n - 1]);
        }
        printf("}\n");
    } else if (more) {
        fprintf(stderr, "(more: --after %s)\n", ids[n - 1]);
    }
cleanup:
    cu_store_ids_free(ids, n);
    cu_state_close(st);
    return rc;
}

static int cmd_delete(cu_enr_kind kind, int argc, char **argv)
{
    enr_opts o;
    int rc = parse_opts(kind, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CU_EXIT_OK : rc;
    if (optind + 1 != argc)
        return cu_cli_usage(group_name(kind), "delete takes one id");
    cu_state *st = NULL;
    char reason[512];
    if ((rc = cu_pcli_open(o.state, &st)) != 0)
        return rc;
    if (cu_store_enr_delete(cu_state_get0_store(st), kind, argv[optind], o.etag, reason, sizeof reason) != CU_OK)
        rc = cu_cli_fail("%s", reason);
    else if (!o.json)
        printf("deleted %s\n", argv[optind]);
    else
        printf("{\"deleted\":true}\n");
    cu_state_close(st);
    return rc;
}

/* ---- import ---- */

static void progress(size_t done, size_t total_bytes, size_t at_byte, size_t rejected, time_t start)
{
    int width = 40, fill = total_bytes ? (int)((double)at_byte / (double)total_bytes * width) : 0;
    double el = difftime(time(NULL), start);
    fprintf(stderr, "\r[%.*s%*s] %zu imported, %zu rejected%s%.0f/s ", fill,
            "########################################", width - fill, "", done, rejected, el > 0 ? ", " : "",
            el > 0 ? (double)done / el : 0.0);
}

static int cmd_import(cu_enr_kind kind, int argc, char **argv)
{
    enr_opts o;
    int rc = parse_opts(kind, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CU_EXIT_OK : rc;
    if (optind + 1 != argc)
        return cu_cli_usage(group_name(kind), "import takes one FILE of JSON lines");
    const char *path = argv[optind];
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    FILE *rej = NULL;
    cu_state *st = NULL;
    char *line = NULL;
    size_t cap = 0, lineno = 0, done = 0, rejected = 0, in_batch = 0;
    struct stat sb;
    size_t total = 0;
    bool tty = isatty(2);
    time_t start = time(NULL), last = 0;
    enum { SHOW = 20 };
    char *first[SHOW];
    size_t nfirst = 0;

    if (in == NULL)
        return cu_cli_fail("cannot read %s: %s", path, strerror(errno));
    if (fstat(fileno(in), &sb) == 0 && S_ISREG(sb.st_mode))
        total = (size_t)sb.st_size;
    if (o.rejects != NULL && (rej = fopen(o.rejects, "w")) == NULL) {
        rc = cu_cli_fail("cannot write %s: %s", o.rejects, strerror(errno));
        goto cleanup;
    }
    if ((rc = cu_pcli_open(o.state, &st)) != 0)
        goto cleanup;
    cu_store *s = cu_state_get0_store(st);
    ssize_t len;
    if (cu_store_begin(s) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        char reason[512] = "";
        cu_enr *e = NULL;
        cu_rc r = cu_enr_parse(kind, line, (size_t)len, &e, reason, sizeof reason);
        if (r == CU_OK)
            r = cu_store_enr_put(s, e, NULL, o.create_only ? CU_STORE_CREATE : 0, reason, sizeof reason);
        cu_enr_free(e);
        memset(line, 0, (size_t)len);
        if (r != CU_OK) {
            /* A refused line writes nothing; the batch goes on. */
            rejected++;
            char *msg = NULL;
            if (asprintf(&msg, "line %zu: %s", lineno, reason) >= 0) {
                if (rej)
                    fprintf(rej, "%s\n", msg);
                if (nfirst < SHOW)
                    first[nfirst++] = msg;
                else
                    free(msg);
            }
            if (r != CU_E_INVALID_ARG && r != CU_E_STATE && r != CU_E_OBJECT_NOT_FOUND) {
                cu_store_rollback(s);
                rc = cu_cli_fail("line %zu: %s (stopping; this batch was not written)", lineno, reason);
                goto cleanup;
            }
            continue;
        }
        done++;
        if (++in_batch >= (size_t)o.batch) {
            if (cu_store_commit(s) != CU_OK || cu_store_begin(s) != CU_OK) {
                rc = cu_cli_fail("%s", cu_err_last()->msg);
                goto cleanup;
            }
            in_batch = 0;
        }
        if (tty && time(NULL) != last) {
            last = time(NULL);
            progress(done, total, (size_t)ftell(in), rejected, start);
        }
    }
    if (cu_store_commit(s) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    if (tty)
        progress(done, total, total, rejected, start), fputc('\n', stderr);
    double el = difftime(time(NULL), start);
    if (o.json) {
        printf("{\"imported\":%zu,\"rejected\":%zu,\"seconds\":%.0f,\"rejects\":[", done, rejected, el);
        for (size_t i = 0; i < nfirst; i++) {
            printf(i ? "," : "");
            cu_cli_json_str(stdout, first[i]);
        }
        printf("]}\n");
    } else {
        printf("imported %zu, rejected %zu (%zu lines, %.0f s)\n", done, rejected, lineno, el);
        for (size_t i = 0; i < nfirst; i++)
            printf("  %s\n", first[i]);
        if (rejected > nfirst)
            printf("  ... and %zu more%s%s\n", rejected - nfirst, o.rejects ? ", all in " : " (--rejects FILE lists all)",
                   o.rejects ? o.rejects : "");
    }
    if (rejected > 0)
        rc = CU_EXIT_FAIL;
cleanup:
    for (size_t i = 0; i < nfirst; i++)
        free(first[i]);
    free(line);
    if (rej)
        fclose(rej);
    if (in != stdin)
        fclose(in);
    cu_state_close(st);
    return rc;
}

/* ---- explain ---- */

static int cmd_explain(int argc, char **argv)
{
    enr_opts o;
    int rc = parse_opts(CU_ENR_INDIVIDUAL, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CU_EXIT_OK : rc;
    o.cert_chain = o.cert;
    if (o.cert_chain == NULL && o.regid == NULL)
        return cu_cli_usage("enrollment", "explain needs --cert CHAIN.pem or --registration-id ID");
    cu_state *st = NULL;
    cu_prov *p = NULL;
    cu_x509_chain *chain = NULL;
    char *pem = NULL, *sas = NULL, *cn = NULL, *out = NULL;
    cu_prov_explain ex;
    memset(&ex, 0, sizeof ex);
    size_t n = 0;

    if (o.cert_chain != NULL) {
        if ((pem = cu_pcli_read_file(o.cert_chain, CU_X509_MAX_INPUT, &n)) == NULL) {
            rc = CU_EXIT_FAIL;
            goto cleanup;
        }
        if (cu_x509_chain_from_pem(pem, n, &chain) != CU_OK) {
            rc = cu_cli_fail("%s: %s", o.cert_chain, cu_err_last()->msg);
            goto cleanup;
        }
        if (o.regid == NULL && cu_x509_subject_cn(cu_x509_chain_get0_leaf(chain), &cn) != CU_OK) {
            rc = cu_cli_fail("%s: %s; give --registration-id", o.cert_chain, cu_err_last()->msg);
            goto cleanup;
        }
    }
    if (o.sas_file != NULL && (sas = read_key_file(o.sas_file)) == NULL) {
        rc = CU_EXIT_FAIL;
        goto cleanup;
    }
    if ((rc = cu_pcli_open(o.state, &st)) != 0)
        goto cleanup;
    cu_prov_config cfg = {.id_scope = cu_state_id_scope(st), .use_default_skew = true};
    if (cu_prov_new(cu_state_get0_store(st), &cfg, &p) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    cu_prov_request req = {.registration_id = o.regid ? o.regid : cn, .chain = chain, .authorization = sas};
    if (cu_prov_explain_request(p, &req, &ex) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    out = o.json ? cu_prov_explain_to_json(&ex, false) : cu_prov_explain_to_text(&ex);
    fputs(out ? out : "", stdout);
    if (o.json)
        putchar('\n');
    /* Exit status says the outcome: 0 provision, 1 refuse, 0 undecided. */
    rc = ex.outcome == CU_PROV_REFUSE ? CU_EXIT_FAIL : CU_EXIT_OK;
cleanup:
    free(out);
    cu_prov_explain_clear(&ex);
    cu_prov_free(p);
    cu_state_close(st);
    cu_x509_chain_free(chain);
    free(pem);
    free(cn);
    if (sas) {
        memset(sas, 0, strlen(sas));
        free(sas);
    }
    return rc;
}

int cu_pcli_enr(cu_enr_kind kind, int argc, char **argv)
{
    if (argc < 2) {
        usage(kind, stderr);
        return CU_EXIT_USAGE;
    }
    if (cu_cli_is_help(argv[1])) {
        usage(kind, stdout);
        return CU_EXIT_OK;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    if (strcmp(cmd, "create") == 0)
        return cmd_write(kind, true, argc, argv);
    if (strcmp(cmd, "update") == 0)
        return cmd_write(kind, false, argc, argv);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(kind, argc, argv);
    if (strcmp(cmd, "list") == 0)
        return cmd_list(kind, argc, argv);
    if (strcmp(cmd, "delete") == 0)
        return cmd_delete(kind, argc, argv);
    if (strcmp(cmd, "import") == 0)
        return cmd_import(kind, argc, argv);
    if (strcmp(cmd, "explain") == 0 && kind == CU_ENR_INDIVIDUAL)
        return cmd_explain(argc, argv);
    return cu_cli_usage(group_name(kind), "unknown command '%s'", cmd);
}

int cu_cmd_enrollment(int argc, char **argv)
{
    return cu_pcli_enr(CU_ENR_INDIVIDUAL, argc, argv);
}
