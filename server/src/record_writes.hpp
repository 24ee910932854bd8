// Storing a changed record state the way the sync service does: validate against the schema,
// put the row (new sequence, move bookkeeping), append the audit entry, reconcile the record's
// open conflicts, and note the touched areas so live tablets are caught up after the commit.
// Private to the server. Used by the HTTP API's server-side writes (a supervisor's edit or
// conflict resolution); sync_session.cpp shares the conflict and audit formats below
// (competing_values_json, change_summary_json) for device pushes.
//
// Formats written here (the console and docs/api.md read them):
//   conflicts.values_json   [{"value": <json>, "by": "<user>", "replica": "<uuid>",
//                             "ts": <hlc>, "at": "<ISO 8601 UTC>"}, ...]   (entries by dot)
//   audit.summary           {"fields": {"<name>": <new provisional value or [elements]>},
//                            "created": <bool>}   only the fields whose state changed
//
// Thread-compatible: call on the store's writer thread, inside the caller's transaction (and
// savepoint: on failure nothing is rolled back here).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/store.hpp"

namespace fieldsync::server {

/// The conflicts table's values_json of a review field's view.
std::string competing_values_json(const protocol::FieldView& view);

/// The audit summary of a change from `before` (nullptr: created) to `after`.
std::string change_summary_json(const protocol::RecordState* before,
                                const protocol::RecordState& after);

/// One server-side change of one record.
struct RecordChange {
    const protocol::RecordState* before = nullptr;  ///< the stored state; nullptr: new record
    std::string before_area;                        ///< the stored row's area ("" when new)
    const protocol::RecordState* after = nullptr;   ///< the new state (required)
    std::uint32_t schema_version = 0;               ///< the schema the write was made under
    std::string user;                               ///< author (audit, conflicts closed by it)
    std::string device;                             ///< audit device column, e.g. "api"
    std::string note;                               ///< note on conflicts this change closes
    std::string resolution_json;                    ///< resolution stored on closed conflicts
    std::int64_t at_ms = 0;
    const Scope* scope = nullptr;  ///< when set, the new area must lie inside it (forbidden)
};

struct RecordChangeResult {
    bool changed = false;  ///< false: the new state equals the stored one; nothing was written
    std::uint64_t seq = 0;
    std::string area;
    Store::ConflictChange conflicts;
};

/// Validates and stores `c.after`. Errors: validation_failed (schema), forbidden (area outside
/// `c.scope`), internal (store; the caller rolls its savepoint back). `touch_area` is called with
/// the new area and, when the record moved, the old one.
Result<RecordChangeResult> write_record_change(Store& store, const protocol::Schema& schema,
                                               const RecordChange& c,
                                               const std::function<void(std::string)>& touch_area);

}  // namespace fieldsync::server
