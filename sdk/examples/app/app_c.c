/* An app using the installed C API (fieldsync::sdk_c, libfieldsync.so): opens a replica,
 * syncs once when a server is given, and prints the sync bookkeeping as JSON.
 *
 * Usage:   app_c DB [URL USER PASSWORD]
 * Example: app_c tablet.db ws://127.0.0.1:8470/sync enumerator-longhuqu s3cret
 * Exit status: 0 on success, 1 with the reason on stderr. */
#include <stdio.h>
#include <stdlib.h>

#include <fieldsync/fieldsync.h>

static void on_status(void* context, const fs_replicator_status* status) {
    (void)context;
    printf("  state %d: pushed %llu/%llu, pulled %llu\n", (int)status->state,
           (unsigned long long)status->pushed, (unsigned long long)status->push_total,
           (unsigned long long)status->pulled);
}

int main(int argc, char** argv) {
    fs_error err = FS_ERROR_INIT;
    fs_replica* replica;
    char* info;
    int rc = 0;
    if (argc != 2 && argc != 5) {
        fprintf(stderr, "usage: app_c DB [URL USER PASSWORD]\n");
        return 1;
    }
    printf("fieldsync %s\n", fs_version());
    replica = fs_replica_open(argv[1], NULL, &err);
    if (!replica) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], err.message);
        fs_error_clear(&err);
        return 1;
    }
    if (argc == 5) {
        fs_replicator_config* config = fs_replicator_config_new(argv[2]);
        fs_replicator* replicator;
        fs_replicator_config_set_credentials(config, argv[3], argv[4], NULL);
        fs_replicator_config_set_app(config, "example-app-c/1.0");
        fs_replicator_config_set_status_callback(config, on_status, NULL, NULL);
        replicator = fs_replicator_new(replica, config, &err);
        fs_replicator_config_free(config);
        if (!replicator || !fs_replicator_sync_once(replicator, 60000, &err)) {
            fprintf(stderr, "sync failed: %s\n", err.message ? err.message : "?");
            fs_error_clear(&err);
            rc = 1;
        }
        fs_replicator_release(replicator);
    } else {
        /* No schema yet: the write is refused, with the reason. */
        char* id = fs_replica_create(replica, "households", "{\"head_name\": \"Bater\"}", &err);
        if (id || err.code != FS_ERROR_VALIDATION_FAILED) rc = 1;
        printf("before the first sync a write is refused: %s\n", err.message ? err.message : "?");
        fs_string_free(id);
        fs_error_clear(&err);
    }
    info = fs_replica_sync_info(replica, &err);
    if (info) printf("%s\n", info);
    fs_string_free(info);
    fs_replica_release(replica);
    return rc;
}
