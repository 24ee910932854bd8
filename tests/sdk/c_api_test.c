/* c_api_test.c: the C API (fieldsync.h), compiled as C99 and linked against the shared
 * library libfieldsync.so (fieldsync::sdk_c), as a C, JNI or Swift app would use it.
 *
 * The server is played by a custom transport written here in C (fs_transport): it answers
 * hello with a welcome carrying the demo survey schema, pull with an empty last page, and push
 * with a push_ack accepting every item. So the test covers open, errors, writes, JSON reads,
 * lists, observers, the replicator (sync_once, status callback) and every release function,
 * without a network.
 *
 * Exit status: 0 when every check passed, 1 otherwise (each failed check is printed).
 */
#define _POSIX_C_SOURCE 200809L

#include "fieldsync/fieldsync.h" /* first: the header includes what it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        ++checks;                                                                    \
        if (!(cond)) {                                                               \
            ++failures;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_CONTAINS(text, needle)                                                           \
    do {                                                                                       \
        ++checks;                                                                              \
        if (!(text) || !strstr((text), (needle))) {                                            \
            ++failures;                                                                        \
            fprintf(stderr, "%s:%d: expected %s to contain %s, got: %s\n", __FILE__, __LINE__, \
                    #text, (needle), (text) ? (text) : "(null)");                              \
        }                                                                                      \
    } while (0)

/* --- A minimal CBOR writer (definite lengths, shortest heads) ---------------------------- */

typedef struct buffer {
    unsigned char* data;
    size_t size;
    size_t cap;
} buffer;

static void put(buffer* b, const void* p, size_t n) {
    if (b->size + n > b->cap) {
        b->cap = (b->size + n) * 2 + 64;
        b->data = (unsigned char*)realloc(b->data, b->cap);
        if (!b->data) abort();
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void head(buffer* b, unsigned major, uint64_t v) {
    unsigned char h[9];
    size_t n = 1;
    int i;
    if (v < 24) {
        h[0] = (unsigned char)(major << 5 | v);
    } else if (v <= 0xff) {
        h[0] = (unsigned char)(major << 5 | 24);
        n = 2;
    } else if (v <= 0xffff) {
        h[0] = (unsigned char)(major << 5 | 25);
        n = 3;
    } else if (v <= 0xffffffffu) {
        h[0] = (unsigned char)(major << 5 | 26);
        n = 5;
    } else {
        h[0] = (unsigned char)(major << 5 | 27);
        n = 9;
    }
    for (i = (int)n - 1; i >= 1; --i) {
        h[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    put(b, h, n);
}

static void cbor_uint(buffer* b, uint64_t v) {
    head(b, 0, v);
}
static void cbor_text(buffer* b, const char* s) {
    head(b, 3, strlen(s));
    put(b, s, strlen(s));
}
static void cbor_array(buffer* b, uint64_t n) {
    head(b, 4, n);
}
static void cbor_map(buffer* b, uint64_t n) {
    head(b, 5, n);
}
static void cbor_bool(buffer* b, int v) {
    unsigned char c = v ? 0xf5 : 0xf4;
    put(b, &c, 1);
}

/* Finds `key` (a CBOR text) in a frame and returns the uint that follows it (small values). */
static uint64_t find_uint(const uint8_t* data, size_t size, const char* key) {
    size_t klen = strlen(key), i;
    for (i = 0; i + 1 + klen < size; ++i) {
        if (data[i] == (0x60 | klen) && memcmp(data + i + 1, key, klen) == 0) {
            const uint8_t* v = data + i + 1 + klen;
            if (*v < 24) return *v;
            if (*v == 24) return v[1];
            if (*v == 25) return (uint64_t)v[1] << 8 | v[2];
            return 0;
        }
    }
    return 0;
}

/* Number of items of the array following `key` (small arrays). */
static uint64_t find_array_len(const uint8_t* data, size_t size, const char* key) {
    size_t klen = strlen(key), i;
    for (i = 0; i + 1 + klen < size; ++i)
        if (data[i] == (0x60 | klen) && memcmp(data + i + 1, key, klen) == 0) {
            const uint8_t* v = data + i + 1 + klen;
            if ((*v & 0xe0) == 0x80 && (*v & 0x1f) < 24) return *v & 0x1f;
        }
    return 0;
}

static int frame_is(const uint8_t* data, size_t size, const char* type) {
    /* "t" is the first key of every canonical message: a1.. 61 74 6x <type> */
    size_t tlen = strlen(type);
    return size > 4 + tlen && data[1] == 0x61 && data[2] == 't' && data[3] == (0x60 | tlen) &&
           memcmp(data + 4, type, tlen) == 0;
}

/* --- The scripted server, as a custom transport ------------------------------------------ */

typedef struct peer {
    char* schema;
    int connects;
    int hellos;
    int pushes;
    int pulls;
    int items_acked;
    int freed;
} peer;

static uint64_t now_ms(void) {
    return (uint64_t)time(NULL) * 1000u;
}

static void reply(fs_transport_connection* conn, buffer* b) {
    /* Reporting from inside send() is allowed: the replicator queues events. */
    fs_transport_connection_received(conn, b->data, b->size);
    free(b->data);
}

static void peer_connect(void* context, fs_transport_connection* conn, const char* url,
                         const fs_header* headers, size_t header_count) {
    peer* p = (peer*)context;
    (void)headers;
    (void)header_count;
    ++p->connects;
    if (strncmp(url, "ws://loopback", 13) != 0) {
        fs_transport_connection_closed(conn, 1006, NULL, FS_ERROR_CONNECT_FAILED, "unknown host");
        return;
    }
    fs_transport_connection_opened(conn);
}

static void peer_send(void* context, fs_transport_connection* conn, const uint8_t* data,
                      size_t size) {
    peer* p = (peer*)context;
    buffer b = {NULL, 0, 0};
    if (frame_is(data, size, "hello")) {
        ++p->hellos;
        cbor_map(&b, 10);
        cbor_text(&b, "t");
        cbor_text(&b, "welcome");
        cbor_text(&b, "v");
        cbor_uint(&b, 1);
        cbor_text(&b, "role");
        cbor_text(&b, "enumerator");
        cbor_text(&b, "user");
        cbor_text(&b, "enum-c");
        cbor_text(&b, "scope");
        cbor_array(&b, 1);
        cbor_text(&b, "ordos/ejin-horo");
        cbor_text(&b, "token");
        cbor_text(&b, "token-enum-c");
        cbor_text(&b, "limits");
        cbor_map(&b, 2);
        cbor_text(&b, "max_batch");
        cbor_uint(&b, 100);
        cbor_text(&b, "max_frame");
        cbor_uint(&b, 4u << 20);
        cbor_text(&b, "schema");
        cbor_text(&b, p->schema);
        cbor_text(&b, "server_time");
        cbor_uint(&b, now_ms());
        cbor_text(&b, "schema_version");
        cbor_uint(&b, 1);
        reply(conn, &b);
    } else if (frame_is(data, size, "pull")) {
        ++p->pulls;
        cbor_map(&b, 5);
        cbor_text(&b, "t");
        cbor_text(&b, "changes");
        cbor_text(&b, "more");
        cbor_bool(&b, 0);
        cbor_text(&b, "items");
        cbor_array(&b, 0);
        cbor_text(&b, "since");
        cbor_uint(&b, find_uint(data, size, "since"));
        cbor_text(&b, "cursor");
        cbor_uint(&b, 7);
        reply(conn, &b);
    } else if (frame_is(data, size, "push")) {
        uint64_t n = find_array_len(data, size, "items"), i;
        ++p->pushes;
        p->items_acked += (int)n;
        cbor_map(&b, 5);
        cbor_text(&b, "t");
        cbor_text(&b, "push_ack");
        cbor_text(&b, "batch");
        cbor_uint(&b, find_uint(data, size, "batch"));
        cbor_text(&b, "cursor");
        cbor_uint(&b, 7);
        cbor_text(&b, "results");
        cbor_array(&b, n);
        for (i = 0; i < n; ++i) {
            cbor_map(&b, 1);
            cbor_text(&b, "ok");
            cbor_bool(&b, 1);
        }
        cbor_text(&b, "server_time");
        cbor_uint(&b, now_ms());
        reply(conn, &b);
    }
}

static void peer_close(void* context, fs_transport_connection* conn, uint16_t code,
                       const char* reason) {
    (void)context;
    fs_transport_connection_closed(conn, code, reason, FS_OK, NULL);
}

static void peer_free(void* context) {
    ((peer*)context)->freed++;
}

/* --- Callbacks --------------------------------------------------------------------------- */

typedef struct status_log {
    int calls;
    fs_replicator_state last_state;
    int saw_idle;
    int freed;
} status_log;

static void on_status(void* context, const fs_replicator_status* status) {
    status_log* log = (status_log*)context;
    log->calls++;
    log->last_state = status->state;
    if (status->state == FS_REPLICATOR_IDLE) log->saw_idle = 1;
}
static void free_status_log(void* context) {
    ((status_log*)context)->freed++;
}

typedef struct change_log {
    int calls;
    fs_change_origin origin;
    char json[512];
    int freed;
} change_log;

static void on_change(void* context, fs_change_origin origin, const char* changes_json) {
    change_log* log = (change_log*)context;
    log->calls++;
    log->origin = origin;
    strncpy(log->json, changes_json, sizeof log->json - 1);
}
static void free_change_log(void* context) {
    ((change_log*)context)->freed++;
}

/* --- Helpers ----------------------------------------------------------------------------- */

static char* read_file(const char* path) {
    FILE* f = fopen(path, "rb");
    long n;
    char* text;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = (char*)malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
    }
    if (text) text[n] = '\0';
    fclose(f);
    return text;
}

static fs_replicator* make_replicator(fs_replica* replica, peer* server, status_log* log) {
    fs_error err = FS_ERROR_INIT;
    fs_transport t;
    fs_replicator* r;
    fs_replicator_config* config = fs_replicator_config_new("ws://loopback/sync");
    CHECK(config != NULL);
    fs_replicator_config_set_credentials(config, "enum-c", "enum-c-pw", NULL);
    fs_replicator_config_set_app(config, "c_api_test/1");
    t.context = server;
    t.connect = peer_connect;
    t.send = peer_send;
    t.close = peer_close;
    t.free_context = peer_free;
    fs_replicator_config_set_transport(config, &t);
    fs_replicator_config_set_status_callback(config, on_status, log, free_status_log);
    CHECK(!fs_replicator_config_add_pin(config, "not-a-pin", &err));
    CHECK(err.code == FS_ERROR_INVALID_ARGUMENT);
    fs_error_clear(&err);
    r = fs_replicator_new(replica, config, &err);
    CHECK(r != NULL);
    fs_replicator_config_free(config); /* the replicator keeps what it needs */
    return r;
}

int main(void) {
    char dir_template[] = "/tmp/fieldsync-c-api-XXXXXX";
    char path[256], wal[300], shm[300];
    const char* dir = mkdtemp(dir_template);
    fs_error err = FS_ERROR_INIT;
    peer server;
    status_log status;
    change_log changes;
    fs_replica* replica;
    fs_replicator* replicator;
    char *id, *json, *household, *bad;
    uint64_t token;

    memset(&server, 0, sizeof server);
    memset(&status, 0, sizeof status);
    memset(&changes, 0, sizeof changes);
    if (!dir) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/tablet.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    server.schema = read_file(FIELDSYNC_SOURCE_DIR "/protocol/schemas/household-survey.json");
    CHECK(server.schema != NULL);

    printf("fieldsync C API %s\n", fs_version());

    /* Errors: NULL arguments and a bad device id fail cleanly with a message. */
    CHECK(fs_replica_open(path, "not-a-uuid", &err) == NULL);
    CHECK(err.code == FS_ERROR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "device id");
    fs_error_clear(&err);
    CHECK(err.code == FS_OK && err.message == NULL);
    CHECK(fs_replica_open("/nonexistent-dir/x/y.db", NULL, &err) == NULL);
    CHECK(err.code == FS_ERROR_INTERNAL);
    CHECK(err.message != NULL);
    fs_error_clear(&err);
    CHECK(fs_replica_open("/nonexistent-dir/x/y.db", NULL, NULL) == NULL); /* NULL error is fine */

    /* Open. */
    replica = fs_replica_open(path, "0190f3c2-0000-7000-8000-000000000abc", &err);
    CHECK(replica != NULL);
    if (!replica) {
        fprintf(stderr, "cannot open: %s\n", err.message ? err.message : "?");
        return 1;
    }
    id = fs_replica_device_id(replica);
    CHECK(id && strcmp(id, "0190f3c2-0000-7000-8000-000000000abc") == 0);
    fs_string_free(id);
    id = fs_replica_id(replica);
    CHECK(id && strlen(id) == 36);
    fs_string_free(id);

    /* Before the first sync there is no schema: writes are refused with the reason. */
    CHECK(fs_replica_create(replica, "households", "{\"head_name\": \"Bater\"}", &err) == NULL);
    CHECK(err.code == FS_ERROR_VALIDATION_FAILED);
    CHECK_CONTAINS(err.message, "sync");
    /* Writing a new error into a used fs_error frees the old message (no leak under ASan). */
    CHECK(fs_replica_schema(replica, &err) == NULL);
    CHECK(err.code == FS_ERROR_NOT_FOUND);
    fs_error_clear(&err);

    /* First sync through the C transport: receives the schema. */
    replicator = make_replicator(replica, &server, &status);
    CHECK(replicator != NULL);
    CHECK(fs_replicator_sync_once(replicator, 10000, &err));
    if (err.message) fprintf(stderr, "sync_once: %s\n", err.message);
    fs_error_clear(&err);
    CHECK(server.hellos == 1 && server.pulls == 1);
    CHECK(status.calls > 0 && status.saw_idle && status.last_state == FS_REPLICATOR_STOPPED);
    {
        fs_replicator_status* s = fs_replicator_get_status(replicator);
        CHECK(s != NULL && s->state == FS_REPLICATOR_STOPPED && s->up_to_date &&
              s->error_code == FS_OK);
        CHECK(s != NULL && s->cursor == 7 && s->error_message == NULL);
        fs_replicator_status_free(s);
    }
    json = fs_replica_schema(replica, &err);
    CHECK_CONTAINS(json, "\"households\"");
    fs_string_free(json);

    /* Observer. */
    token = fs_replica_add_observer(replica, on_change, &changes, free_change_log, &err);
    CHECK(token != 0);
    {
        fs_change_callback none = NULL; /* a NULL callback is refused with an error */
        CHECK(fs_replica_add_observer(replica, none, &changes, NULL, &err) == 0);
    }
    CHECK(err.code == FS_ERROR_INVALID_ARGUMENT);
    fs_error_clear(&err);

    /* Write and read back as JSON. */
    household = fs_replica_create(replica, "households",
                                  "{\"village\": \"ordos/ejin-horo/altan-xire/longhuqu\","
                                  " \"head_name\": \"Bater\", \"poverty_status\": \"dibao_line\","
                                  " \"members_count\": 4, \"assistance\": [\"lambs_for_ewes\"],"
                                  " \"gps\": {\"lat\": 39.6087, \"lon\": 109.7813}}",
                                  &err);
    CHECK(household != NULL);
    if (!household) {
        fprintf(stderr, "create: %s\n", err.message ? err.message : "?");
        return 1;
    }
    CHECK(changes.calls == 1 && changes.origin == FS_CHANGE_LOCAL_WRITE);
    CHECK_CONTAINS(changes.json, household);
    json = fs_replica_get(replica, "households", household, &err);
    CHECK_CONTAINS(json, "\"head_name\":\"Bater\"");
    CHECK_CONTAINS(json, "\"members_count\":4");
    CHECK_CONTAINS(json, "\"assistance\":[\"lambs_for_ewes\"]");
    CHECK_CONTAINS(json, "\"sync\":\"pending\"");
    CHECK_CONTAINS(json, "\"conflicts\":{}");
    CHECK_CONTAINS(json, "\"gps\":{\"lat\":");
    fs_string_free(json);
    CHECK(fs_replica_pending_count(replica, &err) == 1);

    /* Validation errors name the field. */
    bad = fs_replica_create(replica, "households",
                            "{\"village\": \"ordos/ejin-horo/altan-xire/longhuqu\","
                            " \"head_name\": \"X\", \"poverty_status\": \"rich\"}",
                            &err);
    CHECK(bad == NULL);
    CHECK(err.code == FS_ERROR_VALIDATION_FAILED);
    CHECK_CONTAINS(err.message, "poverty_status");
    fs_error_clear(&err);
    CHECK(fs_replica_create(replica, "households", "[1, 2]", &err) == NULL);
    CHECK(err.code == FS_ERROR_INVALID_ARGUMENT);
    fs_error_clear(&err);
    CHECK(!fs_replica_update(replica, "households", household, "{\"members_count\": 45}", &err));
    CHECK(err.code == FS_ERROR_VALIDATION_FAILED);
    CHECK_CONTAINS(err.message, "members_count");
    fs_error_clear(&err);

    /* Update, counters, lists and filters. */
    CHECK(fs_replica_update(replica, "households", household, "{\"members_count\": 5}", &err));
    CHECK(fs_replica_increment(replica, "households", household, "visit_count", 2, &err));
    json = fs_replica_list(replica, "households",
                           "{\"where\": {\"poverty_status\": \"dibao_line\"}}", &err);
    CHECK_CONTAINS(json, household);
    CHECK_CONTAINS(json, "\"visit_count\":2");
    fs_string_free(json);
    json = fs_replica_list(replica, "households", "{\"where\": {\"poverty_status\": \"not_poor\"}}",
                           &err);
    CHECK(json && strcmp(json, "[]") == 0);
    fs_string_free(json);
    json = fs_replica_list(replica, "households", "{\"area\": \"ordos/hanggin\"}", &err);
    CHECK(json && strcmp(json, "[]") == 0);
    fs_string_free(json);
    CHECK(fs_replica_list(replica, "households", "{\"colour\": 1}", &err) == NULL);
    CHECK(err.code == FS_ERROR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "colour");
    fs_error_clear(&err);

    /* Not found, bad ids. */
    CHECK(fs_replica_get(replica, "households", "0190f3c2-0000-7000-8000-000000000001", &err) ==
          NULL);
    CHECK(err.code == FS_ERROR_NOT_FOUND);
    fs_error_clear(&err);
    CHECK(fs_replica_get(replica, "households", "nope", &err) == NULL);
    CHECK(err.code == FS_ERROR_INVALID_ARGUMENT);
    fs_error_clear(&err);

    /* Second sync: the write is pushed and acknowledged. */
    CHECK(fs_replicator_sync_once(replicator, 10000, &err));
    if (err.message) fprintf(stderr, "sync_once: %s\n", err.message);
    fs_error_clear(&err);
    CHECK(server.pushes >= 1 && server.items_acked >= 1);
    CHECK(fs_replica_pending_count(replica, &err) == 0);
    json = fs_replica_sync_info(replica, &err);
    CHECK_CONTAINS(json, "\"user\":\"enum-c\"");
    CHECK_CONTAINS(json, "\"has_token\":true");
    CHECK_CONTAINS(json, "\"pending\":0");
    fs_string_free(json);
    json = fs_replica_get(replica, "households", household, &err);
    CHECK_CONTAINS(json, "\"sync\":\"synced\"");
    fs_string_free(json);

    /* Delete; the tombstone is listed only on request. */
    CHECK(fs_replica_delete(replica, "households", household, &err));
    json = fs_replica_get(replica, "households", household, &err);
    CHECK_CONTAINS(json, "\"deleted\":true");
    fs_string_free(json);
    json = fs_replica_list(replica, "households", NULL, &err);
    CHECK(json && strcmp(json, "[]") == 0);
    fs_string_free(json);
    json = fs_replica_list(replica, "households", "{\"include_deleted\": true}", &err);
    CHECK_CONTAINS(json, household);
    fs_string_free(json);

    /* An unknown host fails cleanly through the transport's error. */
    {
        fs_replicator_config* config = fs_replicator_config_new("ws://elsewhere/sync");
        fs_transport t;
        fs_replicator* r2;
        t.context = &server;
        t.connect = peer_connect;
        t.send = peer_send;
        t.close = peer_close;
        t.free_context = NULL;
        fs_replicator_config_set_transport(config, &t);
        r2 = fs_replicator_new(replica, config, &err);
        fs_replicator_config_free(config);
        CHECK(!fs_replicator_sync_once(r2, 10000, &err));
        CHECK(err.code == FS_ERROR_CONNECT_FAILED);
        CHECK_CONTAINS(err.message, "unknown host");
        fs_error_clear(&err);
        fs_replicator_release(r2);
    }
    /* A URL that is not one. */
    {
        fs_replicator_config* config = fs_replicator_config_new("ftp://x");
        CHECK(fs_replicator_new(replica, config, &err) == NULL);
        CHECK(err.code == FS_ERROR_INVALID_URL);
        fs_error_clear(&err);
        fs_replicator_config_free(config);
    }

    /* Release everything; contexts are freed exactly once. */
    fs_replica_remove_observer(replica, token);
    fs_replica_remove_observer(replica, token); /* unknown tokens are ignored */
    CHECK(changes.freed == 1);
    fs_replicator_release(replicator);
    CHECK(status.freed == 1);
    CHECK(server.freed == 1);
    fs_string_free(household);
    fs_replica_release(replica);

    /* NULL-safe release functions. */
    fs_replica_release(NULL);
    fs_replicator_release(NULL);
    fs_replicator_config_free(NULL);
    fs_replicator_status_free(NULL);
    fs_string_free(NULL);
    fs_error_clear(NULL);

    /* Reopen: the data is there. */
    replica = fs_replica_open(path, NULL, &err);
    CHECK(replica != NULL);
    json = fs_replica_list(replica, "households", "{\"include_deleted\": true}", &err);
    CHECK(json && strstr(json, "\"deleted\":true") != NULL);
    fs_string_free(json);
    fs_replica_release(replica);

    free(server.schema);
    unlink(wal);
    unlink(shm);
    unlink(path);
    rmdir(dir);
    printf("c_api_test: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
