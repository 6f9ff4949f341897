/*
 * ngx_http_pulsevault_decrypt_module: the media edge sends a range of an encrypted original
 * (shared/crypto/chunked.ts: AES-256-GCM in fixed-size chunks) itself, decrypting only the
 * chunks the range lies in, so players seek in an original at close to nginx's own speed
 * instead of through the stream function's one thread (docs/benchmarks.md, row 3b).
 *
 * The stream function decides everything, as for any file it hands to the edge: the token, the
 * scope, the audit entry, the status and the byte range (shared/delivery/media-response.ts). It
 * answers with X-Accel-Redirect to a location holding
 *
 *     pulsevault_decrypt $upstream_http_x_media_edge_decrypt $pv_edge_key;
 *
 * and a grant in that header: base64url(nonce 12 ‖ AES-256-GCM(status u16 ‖ start u64 ‖ length
 * u64 ‖ video id 16 ‖ file key 32) ‖ tag 16), sealed under HMAC-SHA256(edge key, GRANT_LABEL)
 * with the redirect's URI as AAD (shared/delivery/edge-decrypt.ts). The file key therefore
 * never crosses the network or reaches a log (nginx's debug log prints upstream headers) in
 * the clear, and a grant opens only for the file it was made for.
 *
 * Every chunk's tag is checked before any of its bytes go out: the first window is decrypted
 * before the status line (a failure is a 500), a later failure cuts the connection. Failures
 * are logged on the cycle's log, never the request's: an nginx request log line quotes the
 * request line (a token) and the client's address.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


#define PV_MAGIC            "PVAEAD01"
#define PV_HEADER_BYTES     32
#define PV_TAG_BYTES        16
#define PV_ID_BYTES         16
#define PV_KEY_BYTES        32
#define PV_NONCE_BYTES      12
#define PV_AAD_BYTES        (PV_HEADER_BYTES + PV_ID_BYTES + 5)
#define PV_GRANT_PLAIN      (2 + 8 + 8 + PV_ID_BYTES + PV_KEY_BYTES)
#define PV_GRANT_BYTES      (PV_NONCE_BYTES + PV_GRANT_PLAIN + PV_TAG_BYTES)
#define PV_GRANT_LABEL      "pulsevault media-edge decrypt grant v1"
#define PV_MIN_CHUNK        1024
#define PV_MAX_CHUNK        (16 * 1024 * 1024)
/* Windows decrypted in one turn of the event loop before the others get theirs. */
#define PV_WINDOWS_PER_TURN 4
/* Window buffers a worker keeps for its next requests: a fresh one per request is page faults on every range. */
#define PV_SPARE_BUFFERS    16


typedef struct {
    ngx_http_complex_value_t  *grant;
    ngx_http_complex_value_t  *edge_key;
    size_t                     window;
} ngx_http_pv_decrypt_loc_conf_t;


typedef struct {
    u_char                    *data;
    size_t                     capacity;
    ngx_buf_t                 *bufs;
    ngx_chain_t               *links;
    ngx_uint_t                 count;
    unsigned                   queued:1;    /* handed to the output filters, maybe not yet sent */
    unsigned                   unsent:1;    /* decrypted but not yet handed on */
} ngx_http_pv_window_t;


typedef struct {
    ngx_fd_t                   fd;
    ngx_str_t                  path;
    EVP_CIPHER_CTX            *cipher;
    u_char                     header[PV_HEADER_BYTES];
    u_char                     id[PV_ID_BYTES];
    off_t                      size;        /* plaintext bytes */
    size_t                     chunk;
    ngx_uint_t                 chunks;
    ngx_uint_t                 per_window;
    off_t                      next;        /* next plaintext byte to decrypt */
    off_t                      end;         /* one past the range's last byte */
    ngx_http_pv_window_t       windows[2];
} ngx_http_pv_decrypt_ctx_t;


static ngx_int_t ngx_http_pv_decrypt_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_pv_decrypt_serve(ngx_http_request_t *r);
static void ngx_http_pv_decrypt_write(ngx_http_request_t *r);
static char *ngx_http_pv_decrypt(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_pv_decrypt_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_pv_decrypt_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


static ngx_command_t  ngx_http_pv_decrypt_commands[] = {

    { ngx_string("pulsevault_decrypt"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_pv_decrypt,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("pulsevault_decrypt_window"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_pv_decrypt_loc_conf_t, window),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_pv_decrypt_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */
    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */
    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */
    ngx_http_pv_decrypt_create_loc_conf,   /* create location configuration */
    ngx_http_pv_decrypt_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_pulsevault_decrypt_module = {
    NGX_MODULE_V1,
    &ngx_http_pv_decrypt_module_ctx,       /* module context */
    ngx_http_pv_decrypt_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* This worker's spare window buffers (a worker is one thread). */
static u_char  *ngx_http_pv_spare[PV_SPARE_BUFFERS];
static size_t   ngx_http_pv_spare_capacity[PV_SPARE_BUFFERS];
static ngx_uint_t  ngx_http_pv_nspare;


static u_char *
ngx_http_pv_take_buffer(size_t need, size_t *capacity, ngx_log_t *log)
{
    u_char      *p;
    ngx_uint_t   i;

    for (i = 0; i < ngx_http_pv_nspare; i++) {
        if (ngx_http_pv_spare_capacity[i] >= need) {
            p = ngx_http_pv_spare[i];
            *capacity = ngx_http_pv_spare_capacity[i];
            ngx_http_pv_nspare--;
            ngx_http_pv_spare[i] = ngx_http_pv_spare[ngx_http_pv_nspare];
            ngx_http_pv_spare_capacity[i] =
                ngx_http_pv_spare_capacity[ngx_http_pv_nspare];
            return p;
        }
    }

    *capacity = need;
    return ngx_alloc(need, log);
}


static void
ngx_http_pv_give_buffer(u_char *p, size_t capacity)
{
    if (ngx_http_pv_nspare < PV_SPARE_BUFFERS) {
        ngx_http_pv_spare[ngx_http_pv_nspare] = p;
        ngx_http_pv_spare_capacity[ngx_http_pv_nspare] = capacity;
        ngx_http_pv_nspare++;
        return;
    }

    /* It held plaintext: none of it goes back to the allocator for other uses. */
    OPENSSL_cleanse(p, capacity);
    ngx_free(p);
}


static void
ngx_http_pv_decrypt_cleanup(void *data)
{
    ngx_http_pv_decrypt_ctx_t  *ctx = data;
    ngx_uint_t                  i;

    for (i = 0; i < 2; i++) {
        if (ctx->windows[i].data) {
            ngx_http_pv_give_buffer(ctx->windows[i].data,
                                    ctx->windows[i].capacity);
            ctx->windows[i].data = NULL;
        }
    }

    if (ctx->cipher) {
        EVP_CIPHER_CTX_free(ctx->cipher);   /* clears the key schedule */
        ctx->cipher = NULL;
    }
}


static uint64_t
ngx_http_pv_be64(const u_char *p)
{
    uint64_t    v = 0;
    ngx_uint_t  i;

    for (i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }

    return v;
}


static uint32_t
ngx_http_pv_be32(const u_char *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | p[3];
}


static void
ngx_http_pv_put_be32(u_char *p, uint32_t v)
{
    p[0] = (u_char) (v >> 24);
    p[1] = (u_char) (v >> 16);
    p[2] = (u_char) (v >> 8);
    p[3] = (u_char) v;
}


/*
 * Open the function's grant: status, range, video id and the file's key. NGX_DECLINED when it
 * is missing or does not authenticate (for this URI, under this edge key).
 */
static ngx_int_t
ngx_http_pv_open_grant(ngx_http_request_t *r,
    ngx_http_pv_decrypt_loc_conf_t *dlcf, u_char *plain)
{
    int              len, ok;
    u_char           raw[PV_GRANT_BYTES + 4], grant_key[EVP_MAX_MD_SIZE];
    ngx_str_t        grant, edge_key, decoded;
    unsigned int     grant_key_len;
    EVP_CIPHER_CTX  *c;

    if (ngx_http_complex_value(r, dlcf->grant, &grant) != NGX_OK
        || ngx_http_complex_value(r, dlcf->edge_key, &edge_key) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* base64url without padding. */
    if (grant.len != (PV_GRANT_BYTES * 4 + 2) / 3 || edge_key.len == 0)
    {
        return NGX_DECLINED;
    }

    decoded.data = raw;
    if (ngx_decode_base64url(&decoded, &grant) != NGX_OK
        || decoded.len != PV_GRANT_BYTES)
    {
        return NGX_DECLINED;
    }

    if (HMAC(EVP_sha256(), edge_key.data, (int) edge_key.len,
             (u_char *) PV_GRANT_LABEL, sizeof(PV_GRANT_LABEL) - 1,
             grant_key, &grant_key_len) == NULL)
    {
        return NGX_ERROR;
    }

    c = EVP_CIPHER_CTX_new();
    if (c == NULL) {
        OPENSSL_cleanse(grant_key, sizeof(grant_key));
        return NGX_ERROR;
    }

    ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, grant_key, raw)
         && EVP_DecryptUpdate(c, NULL, &len, r->uri.data, (int) r->uri.len)
         && EVP_DecryptUpdate(c, plain, &len, raw + PV_NONCE_BYTES,
                              PV_GRANT_PLAIN)
         && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, PV_TAG_BYTES,
                                raw + PV_NONCE_BYTES + PV_GRANT_PLAIN)
         && EVP_DecryptFinal_ex(c, plain + PV_GRANT_PLAIN, &len) > 0;

    EVP_CIPHER_CTX_free(c);
    OPENSSL_cleanse(grant_key, sizeof(grant_key));

    if (!ok) {
        OPENSSL_cleanse(plain, PV_GRANT_PLAIN);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static size_t
ngx_http_pv_plain_length(ngx_http_pv_decrypt_ctx_t *ctx, ngx_uint_t i)
{
    return i + 1 < ctx->chunks ? ctx->chunk
                               : (size_t) (ctx->size - (off_t) i * ctx->chunk);
}


static off_t
ngx_http_pv_offset(ngx_http_pv_decrypt_ctx_t *ctx, ngx_uint_t i)
{
    return PV_HEADER_BYTES + (off_t) i * (ctx->chunk + PV_TAG_BYTES);
}


static ngx_int_t
ngx_http_pv_read(ngx_http_pv_decrypt_ctx_t *ctx, u_char *into, size_t len,
    off_t at)
{
    ssize_t  n;

    while (len) {
        n = pread(ctx->fd, into, len, at);

        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        if (n <= 0) {
            ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, n == 0 ? 0 : ngx_errno,
                          "pulsevault_decrypt: reading \"%V\" failed",
                          &ctx->path);
            return NGX_ERROR;
        }

        into += n;
        len -= n;
        at += n;
    }

    return NGX_OK;
}


/* Decrypt chunk i in place (its ciphertext then its tag at p); NGX_ERROR when its tag fails. */
static ngx_int_t
ngx_http_pv_open_chunk(ngx_http_pv_decrypt_ctx_t *ctx, ngx_uint_t i,
    u_char *p)
{
    int     len, ok;
    size_t  plain;
    u_char  nonce[PV_NONCE_BYTES], aad[PV_AAD_BYTES];

    plain = ngx_http_pv_plain_length(ctx, i);

    ngx_memcpy(nonce, ctx->header + 24, 8);
    ngx_http_pv_put_be32(nonce + 8, (uint32_t) i);

    ngx_memcpy(aad, ctx->header, PV_HEADER_BYTES);
    ngx_memcpy(aad + PV_HEADER_BYTES, ctx->id, PV_ID_BYTES);
    ngx_http_pv_put_be32(aad + PV_HEADER_BYTES + PV_ID_BYTES, (uint32_t) i);
    aad[PV_AAD_BYTES - 1] = (i + 1 == ctx->chunks);

    ok = EVP_DecryptInit_ex(ctx->cipher, NULL, NULL, NULL, nonce)
         && EVP_DecryptUpdate(ctx->cipher, NULL, &len, aad, PV_AAD_BYTES)
         && (plain == 0
             || EVP_DecryptUpdate(ctx->cipher, p, &len, p, (int) plain))
         && EVP_CIPHER_CTX_ctrl(ctx->cipher, EVP_CTRL_GCM_SET_TAG,
                                PV_TAG_BYTES, p + plain)
         && EVP_DecryptFinal_ex(ctx->cipher, p + plain, &len) > 0;

    if (!ok) {
        ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                      "pulsevault_decrypt: chunk %ui of \"%V\" failed its "
                      "authentication tag: not sent", i, &ctx->path);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* Read and decrypt the next window of the range into w, as a chain of the plaintext it holds. */
static ngx_int_t
ngx_http_pv_fill(ngx_http_request_t *r, ngx_http_pv_decrypt_ctx_t *ctx,
    ngx_http_pv_window_t *w)
{
    off_t        lo, hi, from;
    u_char      *p;
    size_t       len;
    ngx_buf_t   *b;
    ngx_uint_t   first, last, i;

    first = (ngx_uint_t) (ctx->next / (off_t) ctx->chunk);
    last = (ngx_uint_t) ((ctx->end - 1) / (off_t) ctx->chunk);
    if (last > first + ctx->per_window - 1) {
        last = first + ctx->per_window - 1;
    }

    from = ngx_http_pv_offset(ctx, first);
    len = (size_t) (ngx_http_pv_offset(ctx, last) - from)
          + ngx_http_pv_plain_length(ctx, last) + PV_TAG_BYTES;

    if (ngx_http_pv_read(ctx, w->data, len, from) != NGX_OK) {
        return NGX_ERROR;
    }

    w->count = 0;

    for (i = first; i <= last; i++) {
        p = w->data + (i - first) * (ctx->chunk + PV_TAG_BYTES);

        if (ngx_http_pv_open_chunk(ctx, i, p) != NGX_OK) {
            return NGX_ERROR;
        }

        lo = ngx_max(ctx->next, (off_t) i * (off_t) ctx->chunk);
        hi = ngx_min(ctx->end,
                     (off_t) i * (off_t) ctx->chunk
                     + (off_t) ngx_http_pv_plain_length(ctx, i));

        b = &w->bufs[w->count];
        ngx_memzero(b, sizeof(ngx_buf_t));
        b->temporary = 1;
        b->start = p;
        b->end = p + ctx->chunk;
        b->pos = p + (lo - (off_t) i * (off_t) ctx->chunk);
        b->last = p + (hi - (off_t) i * (off_t) ctx->chunk);

        w->links[w->count].buf = b;
        w->links[w->count].next = &w->links[w->count + 1];
        w->count++;

        ctx->next = hi;
    }

    w->links[w->count - 1].next = NULL;

    if (ctx->next == ctx->end) {
        b = w->bufs + w->count - 1;
        b->last_buf = (r == r->main);
        b->last_in_chain = 1;
    }

    w->unsent = 1;
    return NGX_OK;
}


/* Whether the output filters sent every byte of a window handed to them (its buffer may take the next). */
static ngx_uint_t
ngx_http_pv_window_free(ngx_http_pv_window_t *w)
{
    ngx_uint_t  i;

    if (w->unsent) {
        return 0;
    }

    if (w->queued) {
        for (i = 0; i < w->count; i++) {
            if (w->bufs[i].pos != w->bufs[i].last) {
                return 0;
            }
        }

        w->queued = 0;
    }

    return 1;
}


/*
 * The function's headers came across the redirect (Content-Type, Cache-Control, Accept-Ranges):
 * an error page gets none of them, as nginx's own error answers (ngx_http_clean_header).
 */
static void
ngx_http_pv_clean_header(ngx_http_request_t *r)
{
    ngx_memzero(&r->headers_out.status,
                sizeof(ngx_http_headers_out_t)
                    - offsetof(ngx_http_headers_out_t, status));

    r->headers_out.headers.part.nelts = 0;
    r->headers_out.headers.part.next = NULL;
    r->headers_out.headers.last = &r->headers_out.headers.part;

    r->headers_out.content_length_n = -1;
    r->headers_out.last_modified_time = -1;
}


static ngx_int_t
ngx_http_pv_decrypt_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_pv_decrypt_serve(r);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE && !r->header_sent) {
        ngx_http_pv_clean_header(r);
    }

    return rc;
}


static ngx_int_t
ngx_http_pv_decrypt_serve(ngx_http_request_t *r)
{
    u_char                          *last, grant[PV_GRANT_PLAIN];
    size_t                           root, need;
    uint32_t                         chunk;
    ngx_int_t                        rc;
    ngx_uint_t                       status, i;
    ngx_str_t                        path;
    off_t                            start, length;
    ngx_table_elt_t                 *h;
    ngx_pool_cleanup_t              *cln;
    ngx_open_file_info_t             of;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_pv_decrypt_ctx_t       *ctx;
    ngx_http_pv_decrypt_loc_conf_t  *dlcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    dlcf = ngx_http_get_module_loc_conf(r, ngx_http_pulsevault_decrypt_module);

    rc = ngx_http_pv_open_grant(r, dlcf, grant);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                      "pulsevault_decrypt: the stream function's grant is "
                      "missing or does not open with this edge's key");
        return NGX_HTTP_BAD_GATEWAY;
    }

    status = (grant[0] << 8) | grant[1];
    start = (off_t) ngx_http_pv_be64(grant + 2);
    length = (off_t) ngx_http_pv_be64(grant + 10);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_pv_decrypt_ctx_t));
    if (ctx == NULL) {
        OPENSSL_cleanse(grant, sizeof(grant));
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        OPENSSL_cleanse(grant, sizeof(grant));
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_pv_decrypt_cleanup;
    cln->data = ctx;

    ngx_memcpy(ctx->id, grant + 18, PV_ID_BYTES);
    ctx->cipher = EVP_CIPHER_CTX_new();

    if (ctx->cipher == NULL
        || !EVP_DecryptInit_ex(ctx->cipher, EVP_aes_256_gcm(), NULL,
                               grant + 18 + PV_ID_BYTES, NULL))
    {
        OPENSSL_cleanse(grant, sizeof(grant));
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    OPENSSL_cleanse(grant, sizeof(grant));

    last = ngx_http_map_uri_to_path(r, &path, &root, 0);
    if (last == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    path.len = last - path.data;
    ctx->path = path;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    ngx_memzero(&of, sizeof(ngx_open_file_info_t));
    of.read_ahead = clcf->read_ahead;
    of.directio = NGX_MAX_OFF_T_VALUE;
    of.valid = clcf->open_file_cache_valid;
    of.min_uses = clcf->open_file_cache_min_uses;
    of.errors = clcf->open_file_cache_errors;
    of.events = clcf->open_file_cache_events;

    if (ngx_http_set_disable_symlinks(r, clcf, &path, &of) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_open_cached_file(clcf->open_file_cache, &path, &of, r->pool)
        != NGX_OK)
    {
        /* Gone since the function opened it (a delete). */
        if (of.err == NGX_ENOENT || of.err == NGX_ENOTDIR) {
            return NGX_HTTP_NOT_FOUND;
        }

        /* Unreadable by the edge, or swapped for a symlink since: never sent. */
        ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, of.err,
                      "pulsevault_decrypt: %s \"%V\" failed",
                      of.failed ? of.failed : "open", &path);
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (!of.is_file) {
        return NGX_HTTP_NOT_FOUND;
    }

    ctx->fd = of.fd;

    if (ngx_http_pv_read(ctx, ctx->header, PV_HEADER_BYTES, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    chunk = ngx_http_pv_be32(ctx->header + 8);
    ctx->size = (off_t) ngx_http_pv_be64(ctx->header + 16);
    ctx->chunk = chunk;

    if (ngx_memcmp(ctx->header, PV_MAGIC, 8) != 0
        || chunk < PV_MIN_CHUNK || chunk > PV_MAX_CHUNK
        || ngx_http_pv_be32(ctx->header + 12) != 0
        || ctx->size < 0 || ctx->size > NGX_MAX_OFF_T_VALUE / 2)
    {
        goto malformed;
    }

    ctx->chunks = ctx->size == 0 ? 1 : (ctx->size + chunk - 1) / chunk;

    /* A chunk's number is 32 bits of its nonce. */
    if (ctx->chunks > 0xffffffff || of.size != PV_HEADER_BYTES + ctx->size
                   + (off_t) ctx->chunks * PV_TAG_BYTES)
    {
        goto malformed;
    }

    /* The function planned on this file's plaintext size: a range of another is refused. */
    if ((status != NGX_HTTP_OK && status != NGX_HTTP_PARTIAL_CONTENT)
        || start < 0 || length < 0 || start + length > ctx->size
        || (length == 0 && (status != NGX_HTTP_OK || ctx->size != 0))
        || (status == NGX_HTTP_OK && length != ctx->size))
    {
        ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                      "pulsevault_decrypt: the grant's range does not fit "
                      "\"%V\"", &path);
        return NGX_HTTP_BAD_GATEWAY;
    }

    ctx->next = start;
    ctx->end = start + length;
    ctx->per_window = ngx_max(1, dlcf->window / chunk);
    need = ctx->per_window * (chunk + PV_TAG_BYTES);

    for (i = 0; i < 2; i++) {
        ctx->windows[i].bufs = ngx_palloc(r->pool,
                                   ctx->per_window * sizeof(ngx_buf_t));
        ctx->windows[i].links = ngx_palloc(r->pool,
                                    ctx->per_window * sizeof(ngx_chain_t));
        ctx->windows[i].data = ngx_http_pv_take_buffer(need,
                                   &ctx->windows[i].capacity,
                                   r->connection->log);

        if (ctx->windows[i].bufs == NULL || ctx->windows[i].links == NULL
            || ctx->windows[i].data == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* Nothing goes out before the first window authenticates: a failure is still a 500. */
    if (r->method != NGX_HTTP_HEAD) {
        if (length == 0) {
            if (ngx_http_pv_read(ctx, ctx->windows[0].data, PV_TAG_BYTES,
                                 PV_HEADER_BYTES) != NGX_OK
                || ngx_http_pv_open_chunk(ctx, 0, ctx->windows[0].data)
                   != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

        } else if (ngx_http_pv_fill(r, ctx, &ctx->windows[0]) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = length;
    r->headers_out.last_modified_time = of.mtime;
    /* The function planned the range: nginx's range filter never re-plans it. */
    r->allow_ranges = 0;

    if (status == NGX_HTTP_PARTIAL_CONTENT) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Content-Range");
        h->value.data = ngx_pnalloc(r->pool,
                                    sizeof("bytes -/") - 1 + 3 * NGX_OFF_T_LEN);
        if (h->value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->value.len = ngx_sprintf(h->value.data, "bytes %O-%O/%O", start,
                                   start + length - 1, ctx->size)
                       - h->value.data;
        r->headers_out.content_range = h;
    }

    if (r->headers_out.content_type.len == 0
        && ngx_http_set_content_type(r) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_pulsevault_decrypt_module);

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (length == 0) {
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    r->main->count++;
    r->write_event_handler = ngx_http_pv_decrypt_write;
    ngx_http_pv_decrypt_write(r);

    return NGX_DONE;

malformed:

    ngx_log_error(NGX_LOG_CRIT, ngx_cycle->log, 0,
                  "pulsevault_decrypt: \"%V\" is not a whole encrypted file",
                  &path);
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * Hand windows to the output filters, two in flight: one being sent while the next is
 * decrypted into the other. Called again when the socket can take more.
 */
static void
ngx_http_pv_decrypt_write(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_uint_t                  i, filled;
    ngx_chain_t                *out;
    ngx_event_t                *wev;
    ngx_connection_t           *c;
    ngx_http_pv_window_t       *w;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_pv_decrypt_ctx_t  *ctx;

    c = r->connection;
    wev = c->write;
    ctx = ngx_http_get_module_ctx(r, ngx_http_pulsevault_decrypt_module);
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (wev->timedout) {
        c->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    for (filled = 0; /* void */; /* void */) {
        out = NULL;

        for (i = 0; i < 2 && out == NULL; i++) {
            w = &ctx->windows[i];

            if (!w->unsent && ctx->next < ctx->end
                && ngx_http_pv_window_free(w))
            {
                if (filled == PV_WINDOWS_PER_TURN) {
                    ngx_post_event(wev, &ngx_posted_events);
                    return;
                }

                if (ngx_http_pv_fill(r, ctx, w) != NGX_OK) {
                    /* A byte past this point did not authenticate: cut the response short. */
                    ngx_http_finalize_request(r, NGX_ERROR);
                    return;
                }

                filled++;
            }

            if (w->unsent) {
                w->unsent = 0;
                w->queued = 1;
                out = w->links;
            }
        }

        rc = ngx_http_output_filter(r, out);

        if (rc == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        if (ctx->next == ctx->end && !ctx->windows[0].unsent
            && !ctx->windows[1].unsent)
        {
            /* The last buffer is handed on: nginx's writer sends what the socket has not taken yet. */
            ngx_http_finalize_request(r, rc);
            return;
        }

        if (out == NULL && rc == NGX_OK
            && ngx_http_pv_window_free(&ctx->windows[0])
               + ngx_http_pv_window_free(&ctx->windows[1]))
        {
            /*
             * That flush sent what was left, and the socket is still writable: no write event
             * would come (epoll is edge-triggered) to go on, so go on now.
             */
            continue;
        }

        if (out == NULL) {
            /* Both windows still on their way to the client: wait until it takes more. */
            if (!wev->delayed) {
                ngx_add_timer(wev, clcf->send_timeout);
            }

            if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
                ngx_http_finalize_request(r, NGX_ERROR);
            }

            return;
        }
    }
}


static ngx_http_complex_value_t *
ngx_http_pv_compile(ngx_conf_t *cf, ngx_str_t *value)
{
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    cv = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (cv == NULL) {
        return NULL;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = value;
    ccv.complex_value = cv;

    return ngx_http_compile_complex_value(&ccv) == NGX_OK ? cv : NULL;
}


static char *
ngx_http_pv_decrypt(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_pv_decrypt_loc_conf_t  *dlcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (dlcf->grant) {
        return "is duplicate";
    }

    value = cf->args->elts;

    dlcf->grant = ngx_http_pv_compile(cf, &value[1]);
    dlcf->edge_key = ngx_http_pv_compile(cf, &value[2]);
    if (dlcf->grant == NULL || dlcf->edge_key == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_pv_decrypt_handler;

    return NGX_CONF_OK;
}


static void *
ngx_http_pv_decrypt_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_pv_decrypt_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_pv_decrypt_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->window = NGX_CONF_UNSET_SIZE;

    return conf;
}


static char *
ngx_http_pv_decrypt_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_pv_decrypt_loc_conf_t  *prev = parent;
    ngx_http_pv_decrypt_loc_conf_t  *conf = child;

    ngx_conf_merge_size_value(conf->window, prev->window, 1024 * 1024);

    if (conf->window < PV_MIN_CHUNK) {
        return "pulsevault_decrypt_window must be at least 1k";
    }

    return NGX_CONF_OK;
}
