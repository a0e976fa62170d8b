#include "token_util.h"

#include "cli.h"

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

int cu_tok_read_cert(const char *path, uint8_t **_der, size_t *_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        cu_cli_fail("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    if (x == NULL) {
        rewind(f);
        x = d2i_X509_fp(f, NULL);
    }
    fclose(f);
    if (x == NULL) {
        cu_cli_fail("%s is not a PEM or DER X.509 certificate", path);
        return -1;
    }
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    X509_free(x);
    if (n <= 0 || (*_der = malloc((size_t)n)) == NULL) {
        OPENSSL_free(der);
        cu_cli_fail("cannot encode %s", path);
        return -1;
    }
    memcpy(*_der, der, (size_t)n);
    *_len = (size_t)n;
    OPENSSL_free(der);
    return 0;
}

void cu_tok_json_fields(const cu_token_desc *d)
{
    printf("\"label\":");
    cu_cli_json_str(stdout, d->label);
    printf(",\"manufacturer\":");
    cu_cli_json_str(stdout, d->manufacturer);
    printf(",\"model\":");
    cu_cli_json_str(stdout, d->model);
    printf(",\"serial\":");
    cu_cli_json_str(stdout, d->serial);
}

int cu_tok_run_isolated(int (*fn)(void *arg, int fd), void *arg, uint8_t **_out, size_t *_len)
{
    int fds[2];
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    if (pipe(fds) != 0) {
        cu_cli_fail("pipe: %s", strerror(errno));
        return CU_EXIT_FAIL;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        cu_cli_fail("fork: %s", strerror(errno));
        return CU_EXIT_FAIL;
    }
    if (pid == 0) {
        close(fds[0]);
        int rc = fn(arg, fds[1]);
        cu_p11_shutdown();
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    close(fds[1]);
    for (;;) {
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap ? cap * 2 : 4096);
            if (nb == NULL)
                break;
            buf = nb;
            cap = cap ? cap * 2 : 4096;
        }
        ssize_t n = read(fds[0], buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (_out != NULL) {
        *_out = buf;
        *_len = len;
    } else {
        free(buf);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : CU_EXIT_FAIL;
}
