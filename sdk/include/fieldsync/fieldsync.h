/* fieldsync.h: the C API of the fieldsync SDK (the stable ABI, for JNI, Swift and C apps).
 *
 * Library: libfieldsync.so (CMake target fieldsync::sdk_c). It exports only the fs_*
 * functions declared here; the C++ API (replica.hpp, replicator.hpp, ...) is linked statically
 * (see README.md next to this file for why).
 *
 * Conventions (read these once; every declaration below follows them):
 *
 *  - C99. Include this header alone; it includes <stdbool.h>, <stddef.h> and <stdint.h>.
 *  - Handles are opaque: `fs_replica`, `fs_replicator`, `fs_replicator_config`,
 *    `fs_replicator_status`, `fs_transport_connection`. A handle IS the library's object
 *    (no handle table); release each one you own with its *_release / *_free function.
 *    Release functions accept NULL and do nothing then.
 *  - Errors: a function that can fail takes `fs_error* out_error` as its LAST parameter. It may
 *    be NULL (you then only learn "failed" from the return value). It is written only on
 *    failure: `code` is set and `message` points to a new string for people, naming what was
 *    wrong ("households: field members_count: 45 is above the maximum 30"). Initialize it with
 *    FS_ERROR_INIT and call fs_error_clear() after a failure (it frees the message); writing a
 *    new error into an fs_error that still holds a message frees the old message first.
 *    Failure is signalled by the return value: NULL for pointers, false for bool, a negative
 *    number for counts.
 *  - Strings are UTF-8 and NUL-terminated. Parameters are borrowed for the duration of the
 *    call. A returned `char*` is new and owned by the caller: free it with fs_string_free().
 *    `const char*` inside a struct passed to a callback is valid only during the callback.
 *  - Records travel as JSON text: a write takes an object {"field": value, ...}; values are
 *    typed by the survey schema (a date is "2024-05-01", a geo point {"lat": .., "lon": ..},
 *    a multi-select field a list of codes). Reads return JSON documents described at each
 *    function. Ids are the lower-case 36-character UUID text form.
 *  - Booleans are C99 `bool`. Enums have a fixed width (FS_ENUM) and stable values.
 *  - Nullability: everything is non-null unless marked FS_NULLABLE (Swift imports these as
 *    optionals; other pointers as non-optional).
 *  - Threads: every function is thread-safe unless its comment says otherwise. Callbacks say
 *    on which thread they run; they must return quickly and must not block (post to your UI
 *    thread). Each callback takes `void* context` (yours) and each registration takes an
 *    optional `free_context`, called exactly once when the library will not use the context
 *    any more (a JNI global ref or a retained Swift box is released there).
 *  - No function throws or aborts on bad input: C++ exceptions never cross this boundary
 *    (FS_ERROR_UNEXPECTED reports one).
 */
#ifndef FIELDSYNC_FIELDSYNC_H
#define FIELDSYNC_FIELDSYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- Portability macros ------------------------------------------------------------------ */

#if defined(_WIN32)
#if defined(FIELDSYNC_C_BUILDING)
#define FS_EXPORT __declspec(dllexport)
#else
#define FS_EXPORT __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define FS_EXPORT __attribute__((visibility("default")))
#else
#define FS_EXPORT
#endif

#if defined(__cplusplus)
#define FS_NOEXCEPT noexcept
#else
#define FS_NOEXCEPT
#endif

/* Nullability for Swift (clang only; other compilers see nothing). */
#if defined(__clang__)
#define FS_NULLABLE _Nullable
#define FS_NONNULL _Nonnull
#define FS_ASSUME_NONNULL_BEGIN _Pragma("clang assume_nonnull begin")
#define FS_ASSUME_NONNULL_END _Pragma("clang assume_nonnull end")
#else
#define FS_NULLABLE
#define FS_NONNULL
#define FS_ASSUME_NONNULL_BEGIN
#define FS_ASSUME_NONNULL_END
#endif

/* Enums with a fixed underlying type: a real enum in C++ and for Swift's importer (clang in
 * Objective-C mode), a typedef of the integer type plus named constants in plain C. */
#if defined(__clang__) && (defined(__OBJC__) || defined(__swift__))
#define FS_ENUM(type, name)                                                  \
    typedef enum __attribute__((enum_extensibility(open))) name : type name; \
    enum __attribute__((enum_extensibility(open))) name : type
#elif defined(__cplusplus)
#define FS_ENUM(type, name) enum name : type
#else
#define FS_ENUM(type, name) \
    typedef type name;      \
    enum
#endif

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wnullability-extension"
#endif

#ifdef __cplusplus
extern "C" {
#endif

FS_ASSUME_NONNULL_BEGIN

/* --- Errors and strings ------------------------------------------------------------------ */

/** Error codes. 1-18 are the sync protocol's codes (protocol/SPEC.md §7), 100-108 the
 *  transport's, 200+ the C API's own. */
FS_ENUM(int32_t, fs_error_code){
    FS_OK = 0,
    FS_ERROR_MALFORMED = 1,
    FS_ERROR_LIMIT_EXCEEDED = 2,
    FS_ERROR_WRONG_TYPE = 3,
    FS_ERROR_MISSING_FIELD = 4,
    FS_ERROR_INVALID_VALUE = 5, /**< no such record; the record is deleted; bad value */
    FS_ERROR_UNKNOWN_MESSAGE = 6,
    FS_ERROR_UNSUPPORTED_VERSION = 7, /**< replica file from a newer SDK; update the app */
    FS_ERROR_SCHEMA_INVALID = 8,
    FS_ERROR_VALIDATION_FAILED = 9, /**< a write does not fit the survey schema, or no schema
                                         yet (sync once first); the message names the field */
    FS_ERROR_CLOCK_DRIFT = 10,
    FS_ERROR_NOT_CANONICAL = 11,
    FS_ERROR_UNAUTHENTICATED = 12, /**< wrong password, refused token: ask the user */
    FS_ERROR_FORBIDDEN = 13,       /**< outside the user's areas */
    FS_ERROR_REPLICA_CONFLICT = 14,
    FS_ERROR_REBOOTSTRAP_REQUIRED = 15,
    FS_ERROR_UNEXPECTED_MESSAGE = 16, /**< also: the replicator is already running */
    FS_ERROR_INTERNAL = 17,           /**< SQLite failed (disk full, damaged file, locked) */
    FS_ERROR_BUSY = 18,               /**< server busy, or a sync did not finish in time */
    FS_ERROR_CLOSED = 100,            /**< the connection closed before the sync completed */
    FS_ERROR_CONNECT_FAILED = 101,    /**< DNS or TCP failure: offline, wrong host or port */
    FS_ERROR_TLS_FAILED = 102,        /**< untrusted certificate, wrong host name, ... */
    FS_ERROR_PIN_MISMATCH = 103,      /**< server key matches no configured pin */
    FS_ERROR_HANDSHAKE_FAILED = 104,  /**< WebSocket upgrade refused (wrong URL path?) */
    FS_ERROR_TIMEOUT = 105,
    FS_ERROR_PROTOCOL = 106, /**< broken WebSocket stream */
    FS_ERROR_INVALID_URL = 107,
    FS_ERROR_NETWORK = 108,          /**< connection lost */
    FS_ERROR_INVALID_ARGUMENT = 200, /**< NULL where a value is required, malformed JSON, bad id */
    FS_ERROR_NOT_FOUND = 201,        /**< no record with that id in that collection */
    FS_ERROR_UNEXPECTED = 202        /**< an unexpected C++ exception (a bug; please report) */
};

/** A failure: code and message. See the conventions block. */
typedef struct fs_error {
    fs_error_code code;
    char* FS_NULLABLE message; /**< owned by the fs_error; freed by fs_error_clear() */
} fs_error;

/** Initializer: `fs_error err = FS_ERROR_INIT;` */
#define FS_ERROR_INIT \
    { FS_OK, NULL }

/** Frees the message and resets the error to FS_OK. NULL-safe. */
FS_EXPORT void fs_error_clear(fs_error* FS_NULLABLE error) FS_NOEXCEPT;

/** Frees a string returned by this library. NULL-safe. */
FS_EXPORT void fs_string_free(char* FS_NULLABLE string) FS_NOEXCEPT;

/** The library version, "0.1.0". Static storage: do not free. */
FS_EXPORT const char* fs_version(void) FS_NOEXCEPT;

/** Called once with the context when the library no longer needs it. */
typedef void (*fs_free_context)(void* FS_NULLABLE context);

/* --- Replica: the local database --------------------------------------------------------- */

/** The local replica (one SQLite file). Thread-safe: any thread may read and write. */
typedef struct fs_replica fs_replica;

/** Opens the replica file at `path`, creating it when missing (new replica and device ids).
 *  `device_id`: the platform's install id (UUID text) used when the file is created; NULL:
 *  random. Returns the replica (release with fs_replica_release), or NULL on failure:
 *  FS_ERROR_INTERNAL (unreadable, corrupt, locked; the message names the file and SQLite's
 *  reason), FS_ERROR_UNSUPPORTED_VERSION (written by a newer SDK), FS_ERROR_INVALID_ARGUMENT. */
FS_EXPORT fs_replica* FS_NULLABLE fs_replica_open(const char* path,
                                                  const char* FS_NULLABLE device_id,
                                                  fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Releases the caller's reference. The file closes when no replicator uses it any more.
 *  Observers registered through this handle are removed. NULL-safe. */
FS_EXPORT void fs_replica_release(fs_replica* FS_NULLABLE replica) FS_NOEXCEPT;

/** The replica id (issues the dots of local writes), UUID text. Caller frees. NULL only when
 *  out of memory. */
FS_EXPORT char* FS_NULLABLE fs_replica_id(const fs_replica* replica) FS_NOEXCEPT;
/** The device id sent to the server, UUID text. Caller frees. NULL only when out of memory. */
FS_EXPORT char* FS_NULLABLE fs_replica_device_id(const fs_replica* replica) FS_NOEXCEPT;

/** Creates a record in `collection` from `fields_json` (an object; every required field).
 *  Returns its new id (caller frees), or NULL: FS_ERROR_VALIDATION_FAILED (the message names
 *  collection, field and reason), FS_ERROR_FORBIDDEN, FS_ERROR_INVALID_ARGUMENT (not a JSON
 *  object), FS_ERROR_INTERNAL. Durable when it returns. */
FS_EXPORT char* FS_NULLABLE fs_replica_create(fs_replica* replica, const char* collection,
                                              const char* fields_json,
                                              fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Writes the given fields of a live record. A multi-select field given a list becomes exactly
 *  that set. Writing a review field in conflict resolves the conflict once synced.
 *  Returns true, or false: as fs_replica_create, plus FS_ERROR_INVALID_VALUE (no such record,
 *  or deleted). */
FS_EXPORT bool fs_replica_update(fs_replica* replica, const char* collection, const char* id,
                                 const char* fields_json,
                                 fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Deletes a record (a tombstone that syncs; confirms a delete conflict). */
FS_EXPORT bool fs_replica_delete(fs_replica* replica, const char* collection, const char* id,
                                 fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Un-deletes a record (also settles a delete conflict in favour of the edit). */
FS_EXPORT bool fs_replica_restore(fs_replica* replica, const char* collection, const char* id,
                                  fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Adds `delta` (not 0) to a counter field. */
FS_EXPORT bool fs_replica_increment(fs_replica* replica, const char* collection, const char* id,
                                    const char* field, int64_t delta,
                                    fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** One record as JSON (caller frees), deleted ones included:
 *    {"collection": "households", "id": "...", "area": "ordos/...", "deleted": false,
 *     "delete_conflict": false, "sync": "synced" | "pending" | "rejected",
 *     "reject": {"code": "...", "reason": "..."}            (only when rejected)
 *     "fields": {"head_name": "Bater", "assistance": ["lambs_for_ewes"], "visit_count": 2, ...},
 *     "conflicts": {"poverty_status": [{"value": "dibao_line", "by": "enumerator-hashatu",
 *                   "replica": "...", "at": "2024-05-01T08:00:00.000Z", "ts": "..."}, ...]}}
 *  `fields` holds the provisional value of review fields in conflict; `conflicts` lists every
 *  competing value (`_deleted` for a delete conflict). NULL on failure: FS_ERROR_NOT_FOUND,
 *  FS_ERROR_INVALID_ARGUMENT (bad id), FS_ERROR_INTERNAL. */
FS_EXPORT char* FS_NULLABLE fs_replica_get(const fs_replica* replica, const char* collection,
                                           const char* id,
                                           fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** The records of `collection` matching `filter_json` as a JSON array of fs_replica_get
 *  objects, ordered by id (creation time). `filter_json` (NULL or "{}": all live records):
 *    {"area": "ordos/ejin-horo",          records in this area or below it
 *     "where": {"poverty_status": "dibao_line"},   provisional value equals (set: contains)
 *     "include_deleted": false, "only_conflicts": false, "only_unsynced": false,
 *     "limit": 0, "offset": 0}
 *  Caller frees. NULL on failure: FS_ERROR_INVALID_ARGUMENT (filter), FS_ERROR_VALIDATION_FAILED
 *  (a `where` value that does not fit the field), FS_ERROR_INTERNAL. */
FS_EXPORT char* FS_NULLABLE fs_replica_list(const fs_replica* replica, const char* collection,
                                            const char* FS_NULLABLE filter_json,
                                            fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Records waiting for upload; -1 on failure. */
FS_EXPORT int64_t fs_replica_pending_count(const fs_replica* replica,
                                           fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Sync bookkeeping as JSON (caller frees):
 *    {"device_id", "replica_id", "user", "role", "scope": [...], "schema_version", "cursor",
 *     "clock_offset_ms", "has_token", "last_sync_ms", "last_sync": "<ISO 8601>" | null,
 *     "last_error": {"code", "message", "at_ms"} | null, "pending", "rejected",
 *     "rejected_records": [{"collection", "id", "code", "reason"}, ...]}
 *  NULL on failure (FS_ERROR_INTERNAL). */
FS_EXPORT char* FS_NULLABLE fs_replica_sync_info(const fs_replica* replica,
                                                 fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** The survey schema JSON received from the server (to build forms). Caller frees. NULL with
 *  FS_ERROR_NOT_FOUND before the first sync. */
FS_EXPORT char* FS_NULLABLE fs_replica_schema(const fs_replica* replica,
                                              fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Why observers are called. */
FS_ENUM(uint8_t, fs_change_origin){
    FS_CHANGE_LOCAL_WRITE = 0, /**< a write through this replica */
    FS_CHANGE_REMOTE = 1,      /**< the sync joined downloaded changes */
    FS_CHANGE_REVOKED = 2,     /**< records left the user's scope */
    FS_CHANGE_SYNC_STATUS = 3  /**< upload status changed (acknowledged, rejected) */
};

/** Receives the records one committed transaction changed, as JSON
 *  {"households": ["<id>", ...], ...}, valid during the call. Runs on the thread that made the
 *  change (yours for your writes, the replicator's thread for downloads), after the commit
 *  and outside the replica's lock (it may read the replica). Must not block. */
typedef void (*fs_change_callback)(void* FS_NULLABLE context, fs_change_origin origin,
                                   const char* changes_json);

/** Registers an observer. Returns its token (never 0), or 0 on failure (NULL callback:
 *  FS_ERROR_INVALID_ARGUMENT). `free_context` (nullable) runs once after removal, when no call
 *  is in progress any more, on any thread. */
FS_EXPORT uint64_t fs_replica_add_observer(fs_replica* replica, fs_change_callback callback,
                                           void* FS_NULLABLE context,
                                           fs_free_context FS_NULLABLE free_context,
                                           fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;

/** Unregisters. A call in progress on another thread may still finish. Unknown tokens are
 *  ignored. */
FS_EXPORT void fs_replica_remove_observer(fs_replica* replica, uint64_t token) FS_NOEXCEPT;

/* --- Custom transport -------------------------------------------------------------------- */

/** The replicator's side of one connection made by a custom transport. The app reports the
 *  connection's events through it; it stays valid until fs_transport_connection_closed(). */
typedef struct fs_transport_connection fs_transport_connection;

/** One extra header of the WebSocket upgrade request. */
typedef struct fs_header {
    const char* name;
    const char* value;
} fs_header;

/** A transport supplied by the app (its platform's WebSocket), as a struct of callbacks.
 *  The replicator calls connect() once per connection attempt, then send()/close() for that
 *  connection, all from the replicator's thread (never concurrently). For each connect() the
 *  app reports, through the fs_transport_connection it was given, in order and never
 *  concurrently, from any one thread of its own:
 *    fs_transport_connection_opened()      at most once, when the WebSocket is open;
 *    fs_transport_connection_received()    per binary frame, only after opened;
 *    fs_transport_connection_closed()      exactly once, last (also when connecting failed,
 *                                          and after close()).
 *  Reports may also be made from inside connect/send/close (the replicator only queues them),
 *  as long as two reports for one connection never run at the same time. If the replicator
 *  gives up on a connection (stop() with a transport that does not close in time) it calls
 *  close() and ignores further reports; the app still reports closed to free the handle. */
typedef struct fs_transport {
    void* FS_NULLABLE context;
    /** Starts connecting to `url` (ws:// or wss://). Strings are valid during the call. */
    void (*connect)(void* FS_NULLABLE context, fs_transport_connection* connection, const char* url,
                    const fs_header* FS_NULLABLE headers, size_t header_count);
    /** Sends one binary frame (`data` is valid during the call). */
    void (*send)(void* FS_NULLABLE context, fs_transport_connection* connection,
                 const uint8_t* data, size_t size);
    /** Starts an orderly close with a WebSocket close code (1000 normal). */
    void (*close)(void* FS_NULLABLE context, fs_transport_connection* connection, uint16_t code,
                  const char* reason);
    /** Called once when no replicator uses the transport any more. Nullable. */
    fs_free_context FS_NULLABLE free_context;
} fs_transport;

/** The WebSocket is open. */
FS_EXPORT void fs_transport_connection_opened(fs_transport_connection* connection) FS_NOEXCEPT;
/** One binary frame arrived (copied before the call returns). */
FS_EXPORT void fs_transport_connection_received(fs_transport_connection* connection,
                                                const uint8_t* FS_NULLABLE data,
                                                size_t size) FS_NOEXCEPT;
/** The connection ended: `code` is the WebSocket close code (1006 when there was none);
 *  `error` is FS_OK for an orderly close, else what failed (FS_ERROR_CONNECT_FAILED,
 *  FS_ERROR_TLS_FAILED, FS_ERROR_NETWORK, ...) with `error_message` for people. The handle is
 *  invalid afterwards. */
FS_EXPORT void fs_transport_connection_closed(fs_transport_connection* connection, uint16_t code,
                                              const char* FS_NULLABLE reason, fs_error_code error,
                                              const char* FS_NULLABLE error_message) FS_NOEXCEPT;

/* --- Replicator: syncing with the server ------------------------------------------------- */

/** Replicator settings (opaque; set with the functions below, then pass to fs_replicator_new).
 *  Not thread-safe: configure from one thread. */
typedef struct fs_replicator_config fs_replicator_config;

/** New settings for the server at `url` (ws://host:port/sync or wss://...; the path defaults
 *  to /sync). Release with fs_replicator_config_free. NULL only if out of memory. */
FS_EXPORT fs_replicator_config* FS_NULLABLE fs_replicator_config_new(const char* url) FS_NOEXCEPT;
/** NULL-safe. Callbacks' contexts still used by a replicator made from it stay alive. */
FS_EXPORT void fs_replicator_config_free(fs_replicator_config* FS_NULLABLE config) FS_NOEXCEPT;

/** Log-in: with a `password` the server's session token is stored in the replica (the password
 *  never is); later syncs may pass NULL for both password and token (the stored token is
 *  used). */
FS_EXPORT void fs_replicator_config_set_credentials(fs_replicator_config* config, const char* user,
                                                    const char* FS_NULLABLE password,
                                                    const char* FS_NULLABLE token) FS_NOEXCEPT;
/** hello.app: "household-app/1.4". */
FS_EXPORT void fs_replicator_config_set_app(fs_replicator_config* config,
                                            const char* app) FS_NOEXCEPT;
/** false (default): one-shot; true: continuous (stay connected, reconnect with backoff). */
FS_EXPORT void fs_replicator_config_set_continuous(fs_replicator_config* config,
                                                   bool continuous) FS_NOEXCEPT;
/** PEM file of trusted certificate authorities for wss:// (default: the system store). */
FS_EXPORT void fs_replicator_config_set_ca_file(fs_replicator_config* config,
                                                const char* path) FS_NOEXCEPT;
/** Adds a certificate pin, "sha256/<base64>" of the server key's SPKI (or 64 hex digits).
 *  Returns false with FS_ERROR_INVALID_ARGUMENT for a malformed pin. */
FS_EXPORT bool fs_replicator_config_add_pin(fs_replicator_config* config, const char* pin,
                                            fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;
/** Connect and idle timeouts of the default transport, ms (0 leaves a value unchanged). */
FS_EXPORT void fs_replicator_config_set_timeouts(fs_replicator_config* config, uint32_t connect_ms,
                                                 uint32_t idle_ms) FS_NOEXCEPT;
/** Reconnect backoff of continuous mode, ms (0 leaves a value unchanged). */
FS_EXPORT void fs_replicator_config_set_backoff(fs_replicator_config* config, uint32_t initial_ms,
                                                uint32_t max_ms) FS_NOEXCEPT;
/** Adds a header to the WebSocket upgrade request. */
FS_EXPORT void fs_replicator_config_add_header(fs_replicator_config* config, const char* name,
                                               const char* value) FS_NOEXCEPT;
/** Uses the app's transport instead of the default one. The struct is copied; its context
 *  belongs to the library from now on (free_context runs when the config and every
 *  replicator made from it are gone). */
FS_EXPORT void fs_replicator_config_set_transport(fs_replicator_config* config,
                                                  const fs_transport* transport) FS_NOEXCEPT;

/** What the replicator is doing. */
FS_ENUM(uint8_t, fs_replicator_state){
    FS_REPLICATOR_STOPPED = 0,
    FS_REPLICATOR_CONNECTING = 1,
    FS_REPLICATOR_AUTHENTICATING = 2,
    FS_REPLICATOR_PUSHING = 3,
    FS_REPLICATOR_PULLING = 4,
    FS_REPLICATOR_IDLE = 5,   /**< up to date (continuous: connected, live) */
    FS_REPLICATOR_OFFLINE = 6 /**< continuous: waiting to reconnect */
};

/** A status snapshot. */
typedef struct fs_replicator_status {
    fs_replicator_state state;
    bool up_to_date;      /**< the last session caught up */
    uint32_t attempt;     /**< failed connection attempts in a row */
    uint64_t retry_in_ms; /**< offline: time until the next attempt */
    uint64_t pushed;      /**< records acknowledged in this session */
    uint64_t push_total;  /**< records to upload in this session (0 until known) */
    uint64_t rejected;    /**< records refused by the server in this session */
    uint64_t pulled;      /**< record states downloaded in this session */
    uint64_t pages;
    uint64_t cursor;
    uint64_t pending;                      /**< records waiting for upload */
    fs_error_code error_code;              /**< the last error, FS_OK when none */
    const char* FS_NULLABLE error_message; /**< its message, NULL when none */
} fs_replicator_status;

/** Status callback: runs on the replicator's thread whenever the status changes; `status` is
 *  valid during the call. Must not block, and must not call fs_replicator_release. */
typedef void (*fs_status_callback)(void* FS_NULLABLE context, const fs_replicator_status* status);

FS_EXPORT void fs_replicator_config_set_status_callback(
    fs_replicator_config* config, fs_status_callback FS_NULLABLE callback,
    void* FS_NULLABLE context, fs_free_context FS_NULLABLE free_context) FS_NOEXCEPT;

/** Syncs `replica` with the configured server on its own thread (the replicator keeps its
 *  own reference to the replica). Returns the replicator (release with
 *  fs_replicator_release), or NULL: FS_ERROR_INVALID_URL, FS_ERROR_INVALID_ARGUMENT. */
typedef struct fs_replicator fs_replicator;
FS_EXPORT fs_replicator* FS_NULLABLE fs_replicator_new(fs_replica* replica,
                                                       const fs_replicator_config* config,
                                                       fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;
/** Stops (as fs_replicator_stop) and frees. NULL-safe. Not from a callback. */
FS_EXPORT void fs_replicator_release(fs_replicator* FS_NULLABLE replicator) FS_NOEXCEPT;
/** Starts in the configured mode; does nothing when running. */
FS_EXPORT void fs_replicator_start(fs_replicator* replicator) FS_NOEXCEPT;
/** Stops promptly; when it returns no callback runs any more. From a callback it only
 *  requests the stop. */
FS_EXPORT void fs_replicator_stop(fs_replicator* replicator) FS_NOEXCEPT;
/** A one-shot sync that blocks until done or `timeout_ms` passed. Returns true when
 *  everything was pushed and pulled; false with the error (FS_ERROR_BUSY on timeout,
 *  FS_ERROR_UNEXPECTED_MESSAGE when already running). Not from a callback. */
FS_EXPORT bool fs_replicator_sync_once(fs_replicator* replicator, uint32_t timeout_ms,
                                       fs_error* FS_NULLABLE out_error) FS_NOEXCEPT;
/** The current status; free with fs_replicator_status_free. NULL only if out of memory. */
FS_EXPORT fs_replicator_status* FS_NULLABLE
fs_replicator_get_status(const fs_replicator* replicator) FS_NOEXCEPT;
/** NULL-safe. */
FS_EXPORT void fs_replicator_status_free(fs_replicator_status* FS_NULLABLE status) FS_NOEXCEPT;

FS_ASSUME_NONNULL_END

#ifdef __cplusplus
} /* extern "C" */
#endif

#if defined(__clang__)
#pragma clang diagnostic pop
#endif

#endif /* FIELDSYNC_FIELDSYNC_H */
