// The local replica. Contract: fieldsync/replica.hpp; file format and invariants:
// replica_impl.hpp; durability and threading: docs/sdk.md.
//
// Every write follows the same path (do_write):
//   1. under the mutex: schema present? collection declared? every value valid for its field
//      (CollectionDef::validate_value: the message names collection, field and reason)?
//   2. load the record (or make a new UUIDv7 id), refuse edits of deleted records;
//   3. one protocol::Update with this replica's next dot, one tick of the corrected HLC and the
//      signed-in user as author; apply the operations to a copy of the state;
//   4. create: Schema::validate_record (required fields); area written: area_of + scope;
//   5. one transaction: record row, outbox row (change = ++change_counter), meta hlc and
//      change_counter; COMMIT (synchronous=FULL: durable on return);
//   6. outside the mutex: observers.
#include "fieldsync/replica.hpp"

#include <openssl/rand.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "replica_impl.hpp"

namespace fieldsync {

namespace p = fieldsync::protocol;
using sdk_detail::Db;
using sdk_detail::Transaction;

namespace {

// ---------------------------------------------------------------------------------------------
// Migrations. Append only: each entry moves user_version from its index to index + 1.

const char* const migrations[] = {
    // 0 -> 1: the initial layout (replica_impl.hpp).
    R"sql(
CREATE TABLE meta(
  key TEXT PRIMARY KEY,
  value
) WITHOUT ROWID;
CREATE TABLE records(
  collection TEXT NOT NULL,
  id BLOB NOT NULL,
  area TEXT NOT NULL DEFAULT '',
  deleted INTEGER NOT NULL DEFAULT 0,
  conflicted INTEGER NOT NULL DEFAULT 0,
  acked INTEGER NOT NULL DEFAULT 0,
  seen INTEGER NOT NULL DEFAULT 1,
  state BLOB NOT NULL,
  PRIMARY KEY(collection, id)
) WITHOUT ROWID;
CREATE INDEX records_by_area ON records(collection, area);
CREATE TABLE outbox(
  collection TEXT NOT NULL,
  id BLOB NOT NULL,
  change INTEGER NOT NULL,
  schema_version INTEGER NOT NULL,
  status INTEGER NOT NULL DEFAULT 0,
  code TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(collection, id)
) WITHOUT ROWID;
CREATE INDEX outbox_by_change ON outbox(status, change);
)sql",
    // 1 -> 2: records in a rowid table, keyed by an index on (collection, id). Record ids are
    // random, so in the WITHOUT ROWID table of version 1 every row of a pulled page (about a
    // kilobyte) landed on a different leaf page and each page's commit rewrote hundreds of
    // 4 KiB pages; rows now append, and only the small index entries land at random
    // (BENCHMARKS.md, "initial pull").
    R"sql(
CREATE TABLE records_v2(
  collection TEXT NOT NULL,
  id BLOB NOT NULL,
  area TEXT NOT NULL DEFAULT '',
  deleted INTEGER NOT NULL DEFAULT 0,
  conflicted INTEGER NOT NULL DEFAULT 0,
  acked INTEGER NOT NULL DEFAULT 0,
  seen INTEGER NOT NULL DEFAULT 1,
  state BLOB NOT NULL,
  PRIMARY KEY(collection, id)
);
INSERT INTO records_v2(collection, id, area, deleted, conflicted, acked, seen, state)
  SELECT collection, id, area, deleted, conflicted, acked, seen, state FROM records;
DROP TABLE records;
ALTER TABLE records_v2 RENAME TO records;
CREATE INDEX records_by_area ON records(collection, area);
)sql",
};
constexpr int latest_version = static_cast<int>(std::size(migrations));

std::uint64_t system_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

Status random_bytes(const ReplicaOptions& o, std::uint8_t* out, std::size_t n) {
    if (o.random) {
        o.random(out, n);
        return {};
    }
    if (RAND_bytes(out, static_cast<int>(n)) != 1)
        return Error{protocol_errc::internal,
                     "the system's random source (OpenSSL RAND_bytes) failed"};
    return {};
}

/// A random id in UUIDv4 form (SPEC.md §3.1 recommends it for replica ids).
Result<p::Id128> random_id(const ReplicaOptions& o) {
    p::Id128 id;
    if (auto st = random_bytes(o, id.bytes.data(), id.bytes.size()); !st) return st.error();
    id.bytes[6] = static_cast<std::uint8_t>((id.bytes[6] & 0x0f) | 0x40);
    id.bytes[8] = static_cast<std::uint8_t>((id.bytes[8] & 0x3f) | 0x80);
    return id;
}

p::ByteView id_bytes(const p::Id128& id) {
    return p::ByteView(id.bytes.data(), id.bytes.size());
}

p::Id128 id_from(const p::Bytes& b) {
    p::Id128 id;
    if (b.size() == id.bytes.size()) std::copy(b.begin(), b.end(), id.bytes.begin());
    return id;
}

std::string record_name(std::string_view collection, const RecordId& id) {
    return std::string(collection) + "/" + id.to_string();
}

std::string join_lines(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) {
        if (!out.empty()) out += '\n';
        out += s;
    }
    return out;
}

std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < s.size()) {
        auto nl = s.find('\n', start);
        if (nl == std::string::npos) nl = s.size();
        if (nl > start) out.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

/// The newest timestamp among the lww and review entries of a state (0 if none).
p::HlcTimestamp newest_ts(const p::RecordState& s) {
    p::HlcTimestamp out{};
    for (const auto& [name, f] : s.fields) {
        if (const auto* l = std::get_if<p::LwwState>(&f)) out = std::max(out, l->entry.ts);
        if (const auto* r = std::get_if<p::ReviewState>(&f))
            for (const auto& e : r->entries)
                out = std::max(out, e.ts);
    }
    return out;
}

/// Calls fn(Entry&) for every lww and review entry.
template <class F>
void for_each_entry(p::RecordState& s, F&& fn) {
    for (auto& [name, f] : s.fields) {
        if (auto* l = std::get_if<p::LwwState>(&f)) fn(l->entry);
        if (auto* r = std::get_if<p::ReviewState>(&f))
            for (auto& e : r->entries)
                fn(e);
    }
}

RecordView make_view(p::RecordState state, std::string area, std::int64_t status, std::string code,
                     std::string reason, bool in_outbox, const p::Schema* schema) {
    RecordView v;
    v.collection = state.collection;
    v.id = state.id;
    v.area = std::move(area);
    for (const auto& [name, f] : state.fields) {
        auto fv = state.view(name);
        if (!fv) continue;
        if (name == p::deleted_field) {
            v.deleted = state.is_deleted();
            v.delete_conflict = fv->conflict;
            continue;
        }
        FieldReading r;
        r.rule = fv->rule;
        r.value = fv->value;
        r.elements = fv->elements;
        r.conflict = fv->conflict;
        if (fv->conflict) {
            for (const auto& e : fv->competing)
                r.competing.push_back(CompetingValue{e.value, e.by, e.dot.replica, e.ts});
        }
        r.declared = schema && schema->find_field(state.collection, name) != nullptr;
        v.fields.emplace(name, std::move(r));
    }
    v.conflicts = state.conflicts();
    if (in_outbox) {
        v.sync = status == 1 ? SyncStatus::rejected : SyncStatus::pending;
        if (v.sync == SyncStatus::rejected) {
            v.reject_code = std::move(code);
            v.reject_reason = std::move(reason);
        }
    }
    v.state = std::move(state);
    return v;
}

bool matches_equals(const RecordView& v, const std::map<std::string, Value>& equals) {
    for (const auto& [field, want] : equals) {
        auto it = v.fields.find(field);
        if (it == v.fields.end()) {
            if (!std::holds_alternative<std::monostate>(want)) return false;
            continue;
        }
        const FieldReading& r = it->second;
        if (r.rule == p::MergeRule::set) {
            if (std::find(r.elements.begin(), r.elements.end(), want) == r.elements.end())
                return false;
        } else if (r.value != want) {
            return false;
        }
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Write operations

struct Op {
    enum class Kind { set, add, remove, replace_set, increment };
    Kind kind = Kind::set;
    const p::FieldDef* def = nullptr;
    Value value;
    std::vector<Value> elements;  // replace_set
};

enum class Mode { create, update, remove, restore, element_add, element_remove, increment };

Error no_schema_error() {
    return Error{protocol_errc::validation_failed,
                 "no survey schema yet: sync once to receive the survey schema before writing"};
}

/// The op a typed value means for its field (see FieldValues).
Result<Op> op_for(const p::CollectionDef& c, const std::string& field, const Value& v) {
    const p::FieldDef* def = c.find(field);
    if (!def)
        return Error{protocol_errc::validation_failed,
                     c.name + ": no field named \"" + field + "\" in this collection"};
    if (def->rule == p::MergeRule::counter) {
        const auto* d = std::get_if<std::int64_t>(&v);
        if (!d || *d == 0)
            return Error{protocol_errc::validation_failed,
                         c.name + ": field " + field +
                             ": a counter takes a non-zero integer delta, not " + p::to_display(v)};
    }
    if (auto st = c.validate_value(field, v); !st) return st.error();
    Op op;
    op.def = def;
    op.value = v;
    switch (def->rule) {
        case p::MergeRule::lww:
        case p::MergeRule::review:
            op.kind = Op::Kind::set;
            break;
        case p::MergeRule::set:
            op.kind = Op::Kind::add;
            break;
        case p::MergeRule::counter:
            op.kind = Op::Kind::increment;
            break;
    }
    return op;
}

Result<std::vector<Op>> ops_from_values(const p::CollectionDef& c, const FieldValues& fields) {
    std::vector<Op> ops;
    for (const auto& [name, v] : fields) {
        auto op = op_for(c, name, v);
        if (!op) return op.error();
        ops.push_back(std::move(*op));
    }
    return ops;
}

Result<std::vector<Op>> ops_from_json(const p::CollectionDef& c, const JsonFields& fields) {
    std::vector<Op> ops;
    for (const auto& [name, text] : fields) {
        const p::FieldDef* def = c.find(name);
        if (!def)
            return Error{protocol_errc::validation_failed,
                         c.name + ": no field named \"" + name + "\" in this collection"};
        const auto first = text.find_first_not_of(" \t\r\n");
        if (def->rule == p::MergeRule::set && first != std::string::npos && text[first] == '[') {
            boost::system::error_code ec;
            boost::json::value jv = boost::json::parse(text, ec);
            if (ec || !jv.is_array())
                return Error{protocol_errc::validation_failed,
                             c.name + ": field " + name + ": not a valid JSON array"};
            Op op;
            op.kind = Op::Kind::replace_set;
            op.def = def;
            for (const auto& element : jv.as_array()) {
                auto v = p::value_from_json(boost::json::serialize(element), *def);
                if (!v) return v.error().at(c.name);
                if (auto st = c.validate_value(name, *v); !st) return st.error();
                op.elements.push_back(std::move(*v));
            }
            ops.push_back(std::move(op));
            continue;
        }
        auto v = p::value_from_json(text, *def);
        if (!v) return v.error().at(c.name);
        auto op = op_for(c, name, *v);
        if (!op) return op.error();
        ops.push_back(std::move(*op));
    }
    return ops;
}

Status apply_op(p::Update& u, const p::RecordState& before, const Op& op) {
    const std::string& field = op.def->name;
    switch (op.kind) {
        case Op::Kind::set:
            return u.set(field, op.def->rule, op.value);
        case Op::Kind::add:
            return u.add_element(field, op.value);
        case Op::Kind::remove:
            return u.remove_element(field, op.value);
        case Op::Kind::increment:
            return u.add_to_counter(field, std::get<std::int64_t>(op.value));
        case Op::Kind::replace_set: {
            std::vector<Value> present;
            if (auto v = before.view(field)) present = v->elements;
            for (const auto& e : present) {
                if (std::find(op.elements.begin(), op.elements.end(), e) == op.elements.end())
                    if (auto st = u.remove_element(field, e); !st) return st;
            }
            for (const auto& e : op.elements) {
                if (std::find(present.begin(), present.end(), e) == present.end())
                    if (auto st = u.add_element(field, e); !st) return st;
            }
            return {};
        }
    }
    return {};
}

bool in_scope(const std::vector<std::string>& scope, std::string_view area) {
    if (scope.empty()) return true;  // unknown scope: the server decides
    return std::any_of(scope.begin(), scope.end(),
                       [&](const std::string& s) { return p::area_contains(s, area); });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Small public helpers

const char* to_string(SyncStatus s) noexcept {
    switch (s) {
        case SyncStatus::synced:
            return "synced";
        case SyncStatus::pending:
            return "pending";
        case SyncStatus::rejected:
            return "rejected";
    }
    return "unknown";
}

const Value* RecordView::value(std::string_view field) const {
    auto it = fields.find(std::string(field));
    return it == fields.end() ? nullptr : &it->second.value;
}

std::string RecordView::to_json() const {
    return p::record_to_json(state);
}

// ---------------------------------------------------------------------------------------------
// Impl basics

detail::ReplicaImpl::ReplicaImpl(ReplicaOptions o)
    : options(std::move(o)), clock([this] { return corrected_now(); }, options.max_drift_ms) {}

std::uint64_t detail::ReplicaImpl::raw_now() const {
    return options.clock ? options.clock() : system_ms();
}

std::uint64_t detail::ReplicaImpl::corrected_now() const {
    const auto raw = static_cast<std::int64_t>(raw_now());
    const std::int64_t corrected = raw + offset_ms.load(std::memory_order_relaxed);
    return corrected < 0 ? 0 : static_cast<std::uint64_t>(corrected);
}

void detail::ReplicaImpl::notify(const ChangeNotice& n) {
    if (n.records.empty()) return;
    std::vector<std::shared_ptr<ChangeObserver>> copy;
    {
        std::lock_guard lock(observers_mutex);
        for (const auto& [token, obs] : observers)
            copy.push_back(obs);
    }
    for (const auto& obs : copy)
        (*obs)(n);
}

Status detail::ReplicaImpl::set_meta_locked(const char* key, std::int64_t v) {
    auto s = db->prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)");
    if (!s) return s.error();
    return s->bind(1, key).bind(2, v).run();
}

Status detail::ReplicaImpl::set_meta_locked(const char* key, std::string_view v) {
    auto s = db->prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)");
    if (!s) return s.error();
    return s->bind(1, key).bind(2, v).run();
}

Status detail::ReplicaImpl::set_meta_blob_locked(const char* key, p::ByteView v) {
    auto s = db->prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)");
    if (!s) return s.error();
    return s->bind(1, key).bind_blob(2, v).run();
}

Result<std::optional<std::int64_t>> detail::ReplicaImpl::meta_int_locked(const char* key) {
    auto s = db->prepare("SELECT value FROM meta WHERE key = ?1");
    if (!s) return s.error();
    s->bind(1, key);
    auto row = s->step();
    if (!row) return row.error();
    if (!*row || s->col_is_null(0)) return std::optional<std::int64_t>{};
    return std::optional<std::int64_t>{s->col_int(0)};
}

Result<std::optional<std::string>> detail::ReplicaImpl::meta_text_locked(const char* key) {
    auto s = db->prepare("SELECT value FROM meta WHERE key = ?1");
    if (!s) return s.error();
    s->bind(1, key);
    auto row = s->step();
    if (!row) return row.error();
    if (!*row || s->col_is_null(0)) return std::optional<std::string>{};
    return std::optional<std::string>{s->col_text(0)};
}

Result<std::optional<p::Bytes>> detail::ReplicaImpl::meta_blob_locked(const char* key) {
    auto s = db->prepare("SELECT value FROM meta WHERE key = ?1");
    if (!s) return s.error();
    s->bind(1, key);
    auto row = s->step();
    if (!row) return row.error();
    if (!*row || s->col_is_null(0)) return std::optional<p::Bytes>{};
    return std::optional<p::Bytes>{s->col_blob(0)};
}

Status detail::ReplicaImpl::refresh_locked() {
    auto hlc = meta_int_locked("hlc");
    if (!hlc) return hlc.error();
    auto counter = meta_int_locked("change_counter");
    if (!counter) return counter.error();
    clock.restore(p::HlcTimestamp{static_cast<std::uint64_t>(hlc->value_or(0))});
    change_counter = std::max(change_counter, static_cast<std::uint64_t>(counter->value_or(0)));
    return {};
}

Result<std::optional<std::pair<p::RecordState, std::int64_t>>> detail::ReplicaImpl::load_locked(
    std::string_view collection, const RecordId& id) {
    using Out = std::optional<std::pair<p::RecordState, std::int64_t>>;
    auto s = db->prepare("SELECT state, acked FROM records WHERE collection = ?1 AND id = ?2");
    if (!s) return s.error();
    s->bind(1, collection).bind_blob(2, id_bytes(id));
    auto row = s->step();
    if (!row) return row.error();
    if (!*row) return Out{};
    const p::Bytes bytes = s->col_blob(0);
    const std::int64_t acked = s->col_int(1);
    auto state = p::decode_record(bytes);
    if (!state)
        return Error{protocol_errc::internal, "the stored state of " + record_name(collection, id) +
                                                  " in " + path.string() +
                                                  " does not decode: " + state.error().message};
    return Out{std::make_pair(std::move(*state), acked)};
}

Status detail::ReplicaImpl::put_record_locked(const p::RecordState& st, std::int64_t acked,
                                              std::optional<bool> seen) {
    std::string area;
    if (schema) {
        if (auto a = schema->area_of(st)) area = *a;
    }
    const p::Bytes bytes = p::encode_record(st);
    auto s = db->prepare(
        "INSERT INTO records(collection, id, area, deleted, conflicted, acked, seen, state) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, coalesce(?7, 1), ?8) "
        "ON CONFLICT(collection, id) DO UPDATE SET area = excluded.area, "
        "deleted = excluded.deleted, conflicted = excluded.conflicted, acked = excluded.acked, "
        "seen = coalesce(?7, records.seen), state = excluded.state");
    if (!s) return s.error();
    s->bind(1, st.collection)
        .bind_blob(2, id_bytes(st.id))
        .bind(3, area)
        .bind(4, st.is_deleted() ? 1 : 0)
        .bind(5, st.conflicts().empty() ? 0 : 1)
        .bind(6, acked)
        .bind_blob(8, bytes);
    if (seen)
        s->bind(7, *seen ? 1 : 0);
    else
        s->bind_null(7);
    return s->run();
}

// ---------------------------------------------------------------------------------------------
// Open

Replica::Replica(std::unique_ptr<detail::ReplicaImpl> impl) : m_impl(std::move(impl)) {}
Replica::~Replica() = default;

Result<std::shared_ptr<Replica>> Replica::open(const std::filesystem::path& path,
                                               ReplicaOptions options) {
    auto impl = std::make_unique<detail::ReplicaImpl>(std::move(options));
    impl->path = path;
    auto db = Db::open(path, impl->options.busy_timeout_ms);
    if (!db) return db.error();
    impl->db = std::move(*db);
    Db& d = *impl->db;

    // WAL lets readers (the UI) proceed while the engine commits a page; FULL makes every
    // commit durable before it returns (docs/sdk.md, "Durability", explains the choice).
    if (auto st = d.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"); !st)
        return st.error();

    // Migrations.
    int version = 0;
    {
        auto s = d.prepare("PRAGMA user_version");
        if (!s) return s.error();
        auto row = s->step();
        if (!row) return row.error();
        version = static_cast<int>(s->col_int(0));
    }
    if (version > latest_version) {
        return Error{protocol_errc::unsupported_version,
                     "the replica file " + path.string() + " has format version " +
                         std::to_string(version) +
                         ", written by a newer SDK; this SDK reads up to " +
                         std::to_string(latest_version) + ": update the app"};
    }
    for (; version < latest_version; ++version) {
        Transaction tx(d);
        if (!tx.begun()) return tx.begun().error();
        if (auto st = d.exec(migrations[version]); !st) return st.error();
        const std::string set = "PRAGMA user_version = " + std::to_string(version + 1);
        if (auto st = d.exec(set.c_str()); !st) return st.error();
        if (auto st = tx.commit(); !st) return st.error();
    }

    // Identity: made once, kept forever.
    {
        Transaction tx(d);
        if (!tx.begun()) return tx.begun().error();
        auto replica = impl->meta_blob_locked("replica_id");
        if (!replica) return replica.error();
        if (!*replica) {
            auto rid = random_id(impl->options);
            if (!rid) return rid.error();
            p::Id128 did;
            if (impl->options.device_id && !impl->options.device_id->is_nil()) {
                did = *impl->options.device_id;
            } else {
                auto r = random_id(impl->options);
                if (!r) return r.error();
                did = *r;
            }
            if (auto st = impl->set_meta_blob_locked("replica_id", id_bytes(*rid)); !st)
                return st.error();
            if (auto st = impl->set_meta_blob_locked("device_id", id_bytes(did)); !st)
                return st.error();
            if (auto st =
                    impl->set_meta_locked("created_ms", static_cast<std::int64_t>(impl->raw_now()));
                !st)
                return st.error();
            if (auto st = tx.commit(); !st) return st.error();
            impl->replica_id = *rid;
            impl->device_id = did;
        } else {
            auto device = impl->meta_blob_locked("device_id");
            if (!device) return device.error();
            impl->replica_id = id_from(**replica);
            impl->device_id = id_from(device->value_or(p::Bytes{}));
            if (impl->replica_id.is_nil() || impl->device_id.is_nil())
                return Error{protocol_errc::internal,
                             "the replica file " + path.string() + " has a damaged identity"};
        }
    }

    // Restore the clock, the session and the schema.
    auto hlc = impl->meta_int_locked("hlc");
    auto offset = impl->meta_int_locked("clock_offset_ms");
    auto counter = impl->meta_int_locked("change_counter");
    auto user = impl->meta_text_locked("user");
    auto scope = impl->meta_text_locked("scope");
    auto schema_json = impl->meta_text_locked("schema_json");
    if (!hlc || !offset || !counter || !user || !scope || !schema_json)
        return Error{protocol_errc::internal,
                     "cannot read the replica file's settings (" + path.string() + ")"};
    impl->clock.restore(p::HlcTimestamp{static_cast<std::uint64_t>(hlc->value_or(0))});
    impl->offset_ms.store(offset->value_or(0));
    impl->change_counter = static_cast<std::uint64_t>(counter->value_or(0));
    impl->user = user->value_or("");
    impl->scope = split_lines(scope->value_or(""));
    if (*schema_json) {
        auto loaded = p::Schema::load(**schema_json);
        if (!loaded)
            return Error{protocol_errc::internal, "the survey schema stored in " + path.string() +
                                                      " does not load: " + loaded.error().message};
        impl->schema = std::make_shared<const p::Schema>(std::move(*loaded));
    }
    return std::shared_ptr<Replica>(new Replica(std::move(impl)));
}

// ---------------------------------------------------------------------------------------------
// Identity and status

ReplicaId Replica::replica_id() const {
    return m_impl->replica_id;
}
p::Id128 Replica::device_id() const {
    return m_impl->device_id;
}
const std::filesystem::path& Replica::path() const noexcept {
    return m_impl->path;
}
std::uint64_t Replica::now_ms() const {
    return m_impl->corrected_now();
}

std::shared_ptr<const p::Schema> Replica::schema() const {
    std::lock_guard lock(m_impl->mutex);
    return m_impl->schema;
}

Result<SyncInfo> Replica::sync_info() const {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.mutex);
    SyncInfo info;
    info.device_id = m.device_id;
    info.replica_id = m.replica_id;
    info.user = m.user;
    info.scope = m.scope;
    info.schema_version = m.schema ? m.schema->version() : 0;
    info.clock_offset_ms = m.offset_ms.load();
    info.clock = m.clock.last();
    auto role = m.meta_text_locked("role");
    auto cursor = m.meta_int_locked("cursor");
    auto token = m.meta_text_locked("token");
    auto last_sync = m.meta_int_locked("last_sync_ms");
    auto code = m.meta_text_locked("last_error_code");
    auto message = m.meta_text_locked("last_error_message");
    auto error_ms = m.meta_int_locked("last_error_ms");
    if (!role || !cursor || !token || !last_sync || !code || !message || !error_ms)
        return m.db->error("cannot read the sync settings");
    info.role = role->value_or("");
    info.cursor = static_cast<std::uint64_t>(cursor->value_or(0));
    info.has_token = token->has_value() && !(*token)->empty();
    info.last_sync_ms = static_cast<std::uint64_t>(last_sync->value_or(0));
    if (*code) {
        auto errc = p::parse_errc(**code);
        info.last_error =
            Error{errc ? p::make_error_code(*errc) : p::make_error_code(protocol_errc::internal),
                  message->value_or("")};
        info.last_error_ms = static_cast<std::uint64_t>(error_ms->value_or(0));
    }
    auto s = m.db->prepare("SELECT status, count(*) FROM outbox GROUP BY status");
    if (!s) return s.error();
    for (;;) {
        auto row = s->step();
        if (!row) return row.error();
        if (!*row) break;
        (s->col_int(0) == 1 ? info.rejected : info.pending) +=
            static_cast<std::size_t>(s->col_int(1));
    }
    return info;
}

// ---------------------------------------------------------------------------------------------
// Writes

namespace {

/// The common write path (see the file comment). `make_ops` runs under the lock with the
/// collection's definition; `mode` decides the checks and no-op cases.
Result<RecordId> do_write(
    detail::ReplicaImpl& m, std::string_view collection, std::optional<RecordId> id_in, Mode mode,
    const std::function<Result<std::vector<Op>>(const p::CollectionDef&)>& make_ops) {
    ChangeNotice notice;
    RecordId id;
    {
        std::lock_guard lock(m.mutex);
        if (!m.schema) return no_schema_error();
        const p::Schema& schema = *m.schema;
        const p::CollectionDef* cdef = schema.find(collection);
        if (!cdef)
            return Error{protocol_errc::validation_failed,
                         "\"" + std::string(collection) + "\" is not a collection of survey " +
                             schema.name() + " v" + std::to_string(schema.version())};
        auto ops = make_ops(*cdef);
        if (!ops) return ops.error();
        if ((mode == Mode::create || mode == Mode::update) && ops->empty())
            return Error{protocol_errc::invalid_value,
                         std::string(collection) + ": no fields given to write"};

        // The write lock first: the state is read, changed and written back under it, so two
        // connections to one file (two Replica objects, or two processes) cannot draw the
        // same dot or lose each other's update.
        Transaction tx(*m.db);
        if (!tx.begun()) return tx.begun().error();
        if (auto st = m.refresh_locked(); !st) return st.error();

        p::RecordState state;
        std::int64_t acked = 0;
        if (mode == Mode::create) {
            std::array<std::uint8_t, 10> rnd{};
            if (auto st = random_bytes(m.options, rnd.data(), rnd.size()); !st) return st.error();
            id = p::make_uuid_v7(m.corrected_now(), rnd);
            state.collection = std::string(collection);
            state.id = id;
        } else {
            id = *id_in;
            auto loaded = m.load_locked(collection, id);
            if (!loaded) return loaded.error();
            if (!*loaded)
                return Error{protocol_errc::invalid_value,
                             record_name(collection, id) + ": no such record in this replica"};
            state = std::move((*loaded)->first);
            acked = (*loaded)->second;
        }

        // Checks against the current state, and writes that would change nothing.
        const bool deleted = state.is_deleted();
        const auto del_view = state.view(p::deleted_field);
        const bool delete_conflict = del_view && del_view->conflict;
        switch (mode) {
            case Mode::update:
            case Mode::element_add:
            case Mode::element_remove:
            case Mode::increment:
                if (deleted)
                    return Error{protocol_errc::invalid_value,
                                 record_name(collection, id) +
                                     " is deleted: restore() it before editing it"};
                break;
            case Mode::remove:
                if (deleted && !delete_conflict) return id;
                break;
            case Mode::restore:
                if (!deleted && !delete_conflict) return id;
                break;
            case Mode::create:
                break;
        }
        if (mode == Mode::element_add || mode == Mode::element_remove) {
            const Op& op = ops->front();
            std::vector<Value> present;
            if (auto v = state.view(op.def->name)) present = v->elements;
            const bool has = std::find(present.begin(), present.end(), op.value) != present.end();
            if (has == (mode == Mode::element_add)) return id;
        }

        const p::RecordState before = state;
        // The persistent write counter is the dot floor: this replica never issues a dot twice,
        // not even for a record it dropped (revoked) and received again later (L12).
        p::Update u(state, m.replica_id, m.clock.tick(), m.user, m.change_counter);
        bool area_written = mode == Mode::create;
        for (const Op& op : *ops) {
            if (auto st = apply_op(u, before, op); !st)
                return st.error().at(std::string(collection) + ": field " + op.def->name);
            if (op.def->name == cdef->area_field) area_written = true;
        }
        if (mode == Mode::remove) u.mark_deleted();

        if (mode == Mode::create) {
            if (auto st = schema.validate_record(state); !st) return st.error();
        }
        if (area_written) {
            auto area = schema.area_of(state);
            if (!area) return area.error();
            if (!in_scope(m.scope, *area))
                return Error{protocol_errc::forbidden,
                             record_name(collection, id) + ": area " + *area +
                                 " is outside your assigned areas (" + join_lines(m.scope) + ")"};
        }

        const std::uint64_t change = m.change_counter + 1;
        if (auto st = m.put_record_locked(state, acked, std::nullopt); !st) return st.error();
        auto s = m.db->prepare(
            "INSERT INTO outbox(collection, id, change, schema_version, status, code, reason) "
            "VALUES(?1, ?2, ?3, ?4, 0, '', '') ON CONFLICT(collection, id) DO UPDATE SET "
            "change = excluded.change, schema_version = excluded.schema_version, status = 0, "
            "code = '', reason = ''");
        if (!s) return s.error();
        s->bind(1, collection)
            .bind_blob(2, id_bytes(id))
            .bind(3, change)
            .bind(4, static_cast<std::int64_t>(schema.version()));
        if (auto st = s->run(); !st) return st.error();
        if (auto st = m.set_meta_locked("hlc", static_cast<std::int64_t>(m.clock.last().value));
            !st)
            return st.error();
        if (auto st = m.set_meta_locked("change_counter", static_cast<std::int64_t>(change)); !st)
            return st.error();
        if (auto st = tx.commit(); !st) return st.error();
        m.change_counter = change;
        notice.origin = ChangeOrigin::local_write;
        notice.records[std::string(collection)].push_back(id);
    }
    m.notify(notice);
    return id;
}

}  // namespace

Result<RecordId> Replica::create(std::string_view collection, const FieldValues& fields) {
    return do_write(*m_impl, collection, std::nullopt, Mode::create,
                    [&](const p::CollectionDef& c) { return ops_from_values(c, fields); });
}

Result<RecordId> Replica::create_json(std::string_view collection, const JsonFields& fields) {
    return do_write(*m_impl, collection, std::nullopt, Mode::create,
                    [&](const p::CollectionDef& c) { return ops_from_json(c, fields); });
}

Status Replica::update(std::string_view collection, const RecordId& id, const FieldValues& fields) {
    auto r = do_write(*m_impl, collection, id, Mode::update,
                      [&](const p::CollectionDef& c) { return ops_from_values(c, fields); });
    if (!r) return std::move(r).error();
    return {};
}

Status Replica::update_json(std::string_view collection, const RecordId& id,
                            const JsonFields& fields) {
    auto r = do_write(*m_impl, collection, id, Mode::update,
                      [&](const p::CollectionDef& c) { return ops_from_json(c, fields); });
    if (!r) return std::move(r).error();
    return {};
}

Status Replica::remove(std::string_view collection, const RecordId& id) {
    auto r = do_write(*m_impl, collection, id, Mode::remove, [](const p::CollectionDef&) {
        return Result<std::vector<Op>>(std::vector<Op>{});
    });
    if (!r) return std::move(r).error();
    return {};
}

Status Replica::restore(std::string_view collection, const RecordId& id) {
    auto r = do_write(*m_impl, collection, id, Mode::restore, [](const p::CollectionDef&) {
        return Result<std::vector<Op>>(std::vector<Op>{});
    });
    if (!r) return std::move(r).error();
    return {};
}

namespace {

Result<Op> field_op(const p::CollectionDef& c, std::string_view field, p::MergeRule rule,
                    const char* api, Op::Kind kind, const Value& v) {
    const p::FieldDef* def = c.find(field);
    if (!def)
        return Error{protocol_errc::validation_failed,
                     c.name + ": no field named \"" + std::string(field) + "\" in this collection"};
    if (def->rule != rule)
        return Error{protocol_errc::validation_failed,
                     c.name + ": field " + def->name + ": " + api + "() needs a " +
                         p::to_string(rule) + " field, but this one is " + p::to_string(def->type) +
                         " (merge " + p::to_string(def->rule) + ")"};
    if (kind == Op::Kind::increment && std::get<std::int64_t>(v) == 0)
        return Error{protocol_errc::validation_failed,
                     c.name + ": field " + def->name + ": increment() needs a non-zero delta"};
    if (auto st = c.validate_value(field, v); !st) return st.error();
    Op op;
    op.kind = kind;
    op.def = def;
    op.value = v;
    return op;
}

}  // namespace

Status Replica::add_to_set(std::string_view collection, const RecordId& id, std::string_view field,
                           const Value& element) {
    auto r = do_write(*m_impl, collection, id, Mode::element_add,
                      [&](const p::CollectionDef& c) -> Result<std::vector<Op>> {
                          auto op = field_op(c, field, p::MergeRule::set, "add_to_set",
                                             Op::Kind::add, element);
                          if (!op) return op.error();
                          return std::vector<Op>{std::move(*op)};
                      });
    if (!r) return std::move(r).error();
    return {};
}

Status Replica::remove_from_set(std::string_view collection, const RecordId& id,
                                std::string_view field, const Value& element) {
    auto r = do_write(*m_impl, collection, id, Mode::element_remove,
                      [&](const p::CollectionDef& c) -> Result<std::vector<Op>> {
                          auto op = field_op(c, field, p::MergeRule::set, "remove_from_set",
                                             Op::Kind::remove, element);
                          if (!op) return op.error();
                          return std::vector<Op>{std::move(*op)};
                      });
    if (!r) return std::move(r).error();
    return {};
}

Status Replica::increment(std::string_view collection, const RecordId& id, std::string_view field,
                          std::int64_t delta) {
    auto r = do_write(*m_impl, collection, id, Mode::increment,
                      [&](const p::CollectionDef& c) -> Result<std::vector<Op>> {
                          auto op = field_op(c, field, p::MergeRule::counter, "increment",
                                             Op::Kind::increment, Value{delta});
                          if (!op) return op.error();
                          return std::vector<Op>{std::move(*op)};
                      });
    if (!r) return std::move(r).error();
    return {};
}

// ---------------------------------------------------------------------------------------------
// Queries

namespace {

constexpr const char* list_sql =
    "SELECT r.state, r.area, o.status, o.code, o.reason, o.id IS NOT NULL "
    "FROM records r LEFT JOIN outbox o ON o.collection = r.collection AND o.id = r.id "
    "WHERE r.collection = ?1 "
    "AND (?2 = '' OR r.area = ?2 OR (r.area >= ?3 AND r.area < ?4)) "
    "AND (?5 OR r.deleted = 0) "
    "AND (?6 = 0 OR r.conflicted = 1) "
    "AND (?7 = 0 OR o.id IS NOT NULL) "
    "ORDER BY r.id LIMIT ?8 OFFSET ?9";

constexpr const char* count_sql =
    "SELECT count(*) "
    "FROM records r LEFT JOIN outbox o ON o.collection = r.collection AND o.id = r.id "
    "WHERE r.collection = ?1 "
    "AND (?2 = '' OR r.area = ?2 OR (r.area >= ?3 AND r.area < ?4)) "
    "AND (?5 OR r.deleted = 0) "
    "AND (?6 = 0 OR r.conflicted = 1) "
    "AND (?7 = 0 OR o.id IS NOT NULL)";

void bind_filter(sdk_detail::Stmt& s, std::string_view collection, const Filter& f) {
    // Area prefix as a range, so '_' in codes is not a LIKE wildcard: children of "a/b" are
    // exactly the codes in ["a/b/", "a/b0") ('0' follows '/' in ASCII).
    s.bind(1, collection)
        .bind(2, f.area_prefix)
        .bind(3, f.area_prefix + "/")
        .bind(4, f.area_prefix + "0")
        .bind(5, f.include_deleted ? 1 : 0)
        .bind(6, f.only_conflicts ? 1 : 0)
        .bind(7, f.only_unsynced ? 1 : 0);
}

}  // namespace

Result<std::optional<RecordView>> Replica::get(std::string_view collection,
                                               const RecordId& id) const {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.mutex);
    auto s = m.db->prepare(
        "SELECT r.state, r.area, o.status, o.code, o.reason, o.id IS NOT NULL "
        "FROM records r LEFT JOIN outbox o ON o.collection = r.collection AND o.id = r.id "
        "WHERE r.collection = ?1 AND r.id = ?2");
    if (!s) return s.error();
    s->bind(1, collection).bind_blob(2, id_bytes(id));
    auto row = s->step();
    if (!row) return row.error();
    if (!*row) return std::optional<RecordView>{};
    auto state = p::decode_record(s->col_blob(0));
    if (!state)
        return Error{protocol_errc::internal, "the stored state of " + record_name(collection, id) +
                                                  " does not decode: " + state.error().message};
    return std::optional<RecordView>{make_view(std::move(*state), s->col_text(1), s->col_int(2),
                                               s->col_text(3), s->col_text(4), s->col_int(5) != 0,
                                               m.schema.get())};
}

Result<std::vector<RecordView>> Replica::list(std::string_view collection,
                                              const Filter& filter) const {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.mutex);
    auto s = m.db->prepare(list_sql);
    if (!s) return s.error();
    bind_filter(*s, collection, filter);
    const bool post_filter = !filter.equals.empty();
    const std::int64_t sql_limit =
        post_filter || filter.limit == 0 ? -1 : static_cast<std::int64_t>(filter.limit);
    s->bind(8, sql_limit).bind(9, post_filter ? 0 : static_cast<std::int64_t>(filter.offset));
    std::vector<RecordView> out;
    std::size_t skipped = 0;
    for (;;) {
        auto row = s->step();
        if (!row) return row.error();
        if (!*row) break;
        auto state = p::decode_record(s->col_blob(0));
        if (!state)
            return Error{protocol_errc::internal, "a stored state in collection " +
                                                      std::string(collection) +
                                                      " does not decode: " + state.error().message};
        RecordView v = make_view(std::move(*state), s->col_text(1), s->col_int(2), s->col_text(3),
                                 s->col_text(4), s->col_int(5) != 0, m.schema.get());
        if (post_filter) {
            if (!matches_equals(v, filter.equals)) continue;
            if (skipped < filter.offset) {
                ++skipped;
                continue;
            }
        }
        out.push_back(std::move(v));
        if (filter.limit != 0 && out.size() >= filter.limit) break;
    }
    return out;
}

Result<std::size_t> Replica::count(std::string_view collection, const Filter& filter) const {
    if (!filter.equals.empty()) {
        Filter f = filter;
        f.limit = 0;
        f.offset = 0;
        auto all = list(collection, f);
        if (!all) return all.error();
        return all->size();
    }
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.mutex);
    auto s = m.db->prepare(count_sql);
    if (!s) return s.error();
    bind_filter(*s, collection, filter);
    auto row = s->step();
    if (!row) return row.error();
    return static_cast<std::size_t>(s->col_int(0));
}

Result<std::size_t> Replica::pending_count() const {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.mutex);
    auto s = m.db->prepare("SELECT count(*) FROM outbox WHERE status = 0");
    if (!s) return s.error();
    auto row = s->step();
    if (!row) return row.error();
    return static_cast<std::size_t>(s->col_int(0));
}

Result<std::vector<RejectedRecord>> Replica::rejected() const {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.mutex);
    auto s = m.db->prepare(
        "SELECT collection, id, code, reason FROM outbox WHERE status = 1 ORDER BY change");
    if (!s) return s.error();
    std::vector<RejectedRecord> out;
    for (;;) {
        auto row = s->step();
        if (!row) return row.error();
        if (!*row) break;
        out.push_back(RejectedRecord{s->col_text(0), id_from(s->col_blob(1)), s->col_text(2),
                                     s->col_text(3)});
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Observers

ObserverToken Replica::add_observer(ChangeObserver observer) {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.observers_mutex);
    const ObserverToken token = m.next_token++;
    m.observers.emplace(token, std::make_shared<ChangeObserver>(std::move(observer)));
    return token;
}

void Replica::remove_observer(ObserverToken token) {
    detail::ReplicaImpl& m = *m_impl;
    std::lock_guard lock(m.observers_mutex);
    m.observers.erase(token);
}

// ---------------------------------------------------------------------------------------------
// Engine-facing operations (replica_impl.hpp)

Result<HelloState> detail::ReplicaImpl::hello_state() {
    std::lock_guard lock(mutex);
    HelloState h;
    h.device = device_id;
    h.replica = replica_id;
    h.schema_version = schema ? schema->version() : 0;
    h.user = user;
    h.raw_clock = raw_now();
    auto cursor = meta_int_locked("cursor");
    auto token = meta_text_locked("token");
    auto rb = meta_int_locked("rebootstrap");
    if (!cursor || !token || !rb) return db->error("cannot read the sync settings");
    h.cursor = static_cast<std::uint64_t>(cursor->value_or(0));
    h.token = token->value_or("");
    h.rebootstrap = rb->value_or(0) != 0;
    auto s = db->prepare("SELECT count(*) FROM outbox");
    if (!s) return s.error();
    auto row = s->step();
    if (!row) return row.error();
    h.outbox = static_cast<std::size_t>(s->col_int(0));
    return h;
}

Result<SessionOutcome> detail::ReplicaImpl::begin_session(const p::Welcome& w) {
    std::lock_guard lock(mutex);
    SessionOutcome out;
    std::shared_ptr<const p::Schema> new_schema;
    if (w.schema) {
        auto loaded = p::Schema::load(*w.schema);
        if (!loaded) {
            out.schema_error = Error{protocol_errc::schema_invalid,
                                     "welcome.schema: the server's survey schema does not load: " +
                                         loaded.error().message};
        } else {
            new_schema = std::make_shared<const p::Schema>(std::move(*loaded));
        }
    }
    const std::int64_t offset =
        static_cast<std::int64_t>(w.server_time) - static_cast<std::int64_t>(raw_now());
    Transaction tx(*db);
    if (!tx.begun()) return tx.begun().error();
    if (auto st = set_meta_locked("user", w.user); !st) return st.error();
    if (auto st = set_meta_locked("role", w.role); !st) return st.error();
    if (auto st = set_meta_locked("scope", join_lines(w.scope)); !st) return st.error();
    if (auto st = set_meta_locked("clock_offset_ms", offset); !st) return st.error();
    if (w.token) {
        if (auto st = set_meta_locked("token", *w.token); !st) return st.error();
    }
    if (new_schema) {
        if (auto st = set_meta_locked("schema_json", new_schema->to_json()); !st) return st.error();
        if (auto st =
                set_meta_locked("schema_version", static_cast<std::int64_t>(new_schema->version()));
            !st)
            return st.error();
        // Items refused for a schema version the server did not know yet get another chance.
        auto s = db->prepare(
            "UPDATE outbox SET status = 0, code = '', reason = '' "
            "WHERE status = 1 AND code = 'unsupported_version'");
        if (!s) return s.error();
        if (auto st = s->run(); !st) return st.error();
        out.requeued = static_cast<std::size_t>(sqlite3_changes(db->handle()));
    }
    if (auto st = tx.commit(); !st) return st.error();
    user = w.user;
    scope = w.scope;
    offset_ms.store(offset);
    if (new_schema) {
        out.schema_updated = !schema || !(*schema == *new_schema);
        schema = std::move(new_schema);
    }
    return out;
}

void detail::ReplicaImpl::observe_server_time(std::uint64_t server_time) {
    std::lock_guard lock(mutex);
    const std::int64_t offset =
        static_cast<std::int64_t>(server_time) - static_cast<std::int64_t>(raw_now());
    offset_ms.store(offset);
    (void)set_meta_locked("clock_offset_ms", offset);
}

Status detail::ReplicaImpl::clear_token() {
    std::lock_guard lock(mutex);
    auto s = db->prepare("DELETE FROM meta WHERE key = 'token'");
    if (!s) return s.error();
    return s->run();
}

Result<std::size_t> detail::ReplicaImpl::restamp_locked(const std::vector<RecordKey>& keys,
                                                        bool all_pending, ChangeNotice& notice) {
    if (auto st = refresh_locked(); !st) return st.error();
    const std::uint64_t bound = corrected_now() + options.max_drift_ms;
    // Which entries to restamp: this replica's entries the server has not acknowledged (dot
    // counter above `acked`): all of them, or only those stamped beyond the bound.
    struct Work {
        RecordKey key;
        p::RecordState state;
        std::int64_t acked = 0;
        std::vector<std::uint64_t> counters;  // dots to restamp, ascending
    };
    std::vector<Work> work;
    for (const auto& key : keys) {
        auto loaded = load_locked(key.collection, key.id);
        if (!loaded) return loaded.error();
        if (!*loaded) continue;
        Work w{key, std::move((*loaded)->first), (*loaded)->second, {}};
        for_each_entry(w.state, [&](p::Entry& e) {
            if (e.dot.replica != replica_id) return;
            if (e.dot.counter <= static_cast<std::uint64_t>(w.acked)) return;
            if (!all_pending && e.ts.wall_ms() <= bound) return;
            w.counters.push_back(e.dot.counter);
        });
        std::sort(w.counters.begin(), w.counters.end());
        w.counters.erase(std::unique(w.counters.begin(), w.counters.end()), w.counters.end());
        if (!w.counters.empty()) work.push_back(std::move(w));
    }
    if (work.empty()) return std::size_t{0};

    // A clock running beyond the bound is reset to corrected time: nobody has seen the
    // timestamps it issued (they are exactly the entries being restamped). It restarts from
    // the newest timestamp the replica holds that is within the bound and is not being
    // restamped, so causality with everything already seen is kept.
    if (clock.last().wall_ms() > bound) {
        std::map<RecordKey, const Work*> by_key;
        for (const auto& w : work)
            by_key.emplace(w.key, &w);
        p::HlcTimestamp safe{};
        auto s = db->prepare("SELECT collection, id, state FROM records");
        if (!s) return s.error();
        for (;;) {
            auto row = s->step();
            if (!row) return row.error();
            if (!*row) break;
            auto st = p::decode_record(s->col_blob(2));
            if (!st) continue;
            RecordKey k{s->col_text(0), id_from(s->col_blob(1))};
            auto it = by_key.find(k);
            for_each_entry(*st, [&](p::Entry& e) {
                if (e.ts.wall_ms() > bound) return;
                if (it != by_key.end() && e.dot.replica == replica_id &&
                    std::binary_search(it->second->counters.begin(), it->second->counters.end(),
                                       e.dot.counter))
                    return;
                safe = std::max(safe, e.ts);
            });
        }
        clock = p::HybridClock([this] { return corrected_now(); }, options.max_drift_ms);
        clock.restore(safe);
    }

    std::size_t changed = 0;
    for (auto& w : work) {
        std::map<std::uint64_t, p::HlcTimestamp> fresh;
        for (auto c : w.counters)
            fresh[c] = clock.tick();
        for_each_entry(w.state, [&](p::Entry& e) {
            if (e.dot.replica != replica_id) return;
            auto it = fresh.find(e.dot.counter);
            if (it != fresh.end()) e.ts = it->second;
        });
        if (auto st = put_record_locked(w.state, w.acked, std::nullopt); !st) return st.error();
        const std::uint64_t change = ++change_counter;
        auto s = db->prepare("UPDATE outbox SET change = ?3 WHERE collection = ?1 AND id = ?2");
        if (!s) return s.error();
        s->bind(1, w.key.collection).bind_blob(2, id_bytes(w.key.id)).bind(3, change);
        if (auto st = s->run(); !st) return st.error();
        notice.records[w.key.collection].push_back(w.key.id);
        ++changed;
    }
    if (auto st = set_meta_locked("hlc", static_cast<std::int64_t>(clock.last().value)); !st)
        return st.error();
    if (auto st = set_meta_locked("change_counter", static_cast<std::int64_t>(change_counter)); !st)
        return st.error();
    return changed;
}

Result<std::size_t> detail::ReplicaImpl::restamp(const std::vector<RecordKey>& keys,
                                                 bool all_pending) {
    ChangeNotice notice;
    notice.origin = ChangeOrigin::sync_status;
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex);
        const std::uint64_t counter_before = change_counter;
        const p::HybridClock clock_before = clock;
        Transaction tx(*db);
        if (!tx.begun()) return tx.begun().error();
        auto r = restamp_locked(keys, all_pending, notice);
        Status st = r ? tx.commit() : Status(r.error());
        if (!st) {
            change_counter = counter_before;
            clock = clock_before;
            return st.error();
        }
        n = *r;
    }
    notify(notice);
    return n;
}

Result<PushSelection> detail::ReplicaImpl::select_push(
    std::size_t max_items, std::size_t max_bytes, const std::map<RecordKey, std::uint64_t>& skip) {
    PushSelection out;
    ChangeNotice notice;
    notice.origin = ChangeOrigin::sync_status;
    {
        std::lock_guard lock(mutex);
        struct Row {
            RecordKey key;
            std::uint64_t change;
            std::uint32_t sv;
        };
        std::vector<Row> rows;
        {
            auto s = db->prepare(
                "SELECT collection, id, change, schema_version FROM outbox WHERE status = 0 "
                "ORDER BY change");
            if (!s) return s.error();
            for (;;) {
                auto row = s->step();
                if (!row) return row.error();
                if (!*row || rows.size() >= max_items) break;
                Row r{{s->col_text(0), id_from(s->col_blob(1))},
                      static_cast<std::uint64_t>(s->col_int(2)),
                      static_cast<std::uint32_t>(s->col_int(3))};
                auto it = skip.find(r.key);
                if (it != skip.end() && r.change <= it->second) continue;
                rows.push_back(std::move(r));
            }
        }
        if (rows.empty()) return out;

        // Entries stamped too far ahead of corrected time are restamped before they leave
        // (SPEC.md §3.2); the server would refuse them with clock_drift.
        const std::uint64_t bound = corrected_now() + options.max_drift_ms;
        std::vector<RecordKey> ahead;
        for (const auto& r : rows) {
            auto loaded = load_locked(r.key.collection, r.key.id);
            if (!loaded) return loaded.error();
            if (!*loaded) continue;
            bool far = false;
            for_each_entry((*loaded)->first, [&](p::Entry& e) {
                if (e.dot.replica == replica_id &&
                    e.dot.counter > static_cast<std::uint64_t>((*loaded)->second) &&
                    e.ts.wall_ms() > bound)
                    far = true;
            });
            if (far) ahead.push_back(r.key);
        }
        if (!ahead.empty()) {
            const std::uint64_t counter_before = change_counter;
            const p::HybridClock clock_before = clock;
            Transaction tx(*db);
            if (!tx.begun()) return tx.begun().error();
            auto n = restamp_locked(ahead, false, notice);
            Status st = n ? tx.commit() : Status(n.error());
            if (!st) {
                change_counter = counter_before;
                clock = clock_before;
                return st.error();
            }
            out.restamped = *n;
        }

        std::size_t bytes = 64;
        for (const auto& r : rows) {
            auto loaded = load_locked(r.key.collection, r.key.id);
            if (!loaded) return loaded.error();
            if (!*loaded) continue;
            std::uint64_t change = r.change;
            if (!ahead.empty()) {
                auto s = db->prepare("SELECT change FROM outbox WHERE collection = ?1 AND id = ?2");
                if (!s) return s.error();
                s->bind(1, r.key.collection).bind_blob(2, id_bytes(r.key.id));
                auto row = s->step();
                if (!row) return row.error();
                if (*row) change = static_cast<std::uint64_t>(s->col_int(0));
            }
            const std::size_t size = p::encode_record((*loaded)->first).size() + 16;
            if (size + 64 > max_bytes) {
                out.too_large.push_back(r.key);
                auto s = db->prepare(
                    "UPDATE outbox SET status = 1, code = 'limit_exceeded', reason = ?3 "
                    "WHERE collection = ?1 AND id = ?2");
                if (!s) return s.error();
                s->bind(1, r.key.collection)
                    .bind_blob(2, id_bytes(r.key.id))
                    .bind(3, "the record's state is " + std::to_string(size) +
                                 " bytes, more than the server's frame limit of " +
                                 std::to_string(max_bytes) + " bytes");
                if (auto st = s->run(); !st) return st.error();
                notice.records[r.key.collection].push_back(r.key.id);
                continue;
            }
            if (bytes + size > max_bytes) break;
            bytes += size;
            PushCandidate c;
            c.key = r.key;
            c.change = change;
            c.own_counter = (*loaded)->first.context.get(replica_id);
            c.schema_version = r.sv;
            c.state = std::move((*loaded)->first);
            out.items.push_back(std::move(c));
        }
    }
    notify(notice);
    return out;
}

Result<AckOutcome> detail::ReplicaImpl::apply_push_results(
    const std::vector<PushCandidate>& items, const std::vector<p::ItemResult>& results) {
    AckOutcome out;
    ChangeNotice notice;
    notice.origin = ChangeOrigin::sync_status;
    {
        std::lock_guard lock(mutex);
        Transaction tx(*db);
        if (!tx.begun()) return tx.begun().error();
        for (std::size_t i = 0; i < items.size() && i < results.size(); ++i) {
            const PushCandidate& item = items[i];
            const p::ItemResult& res = results[i];
            const auto& key = item.key;
            if (res.ok) {
                auto s = db->prepare(
                    "UPDATE records SET acked = max(acked, ?3) WHERE collection = ?1 AND id = ?2");
                if (!s) return s.error();
                s->bind(1, key.collection).bind_blob(2, id_bytes(key.id)).bind(3, item.own_counter);
                if (auto st = s->run(); !st) return st.error();
                auto d = db->prepare(
                    "DELETE FROM outbox WHERE collection = ?1 AND id = ?2 AND change = ?3");
                if (!d) return d.error();
                d->bind(1, key.collection).bind_blob(2, id_bytes(key.id)).bind(3, item.change);
                if (auto st = d->run(); !st) return st.error();
                if (sqlite3_changes(db->handle()) == 1) {
                    ++out.acked;
                    notice.records[key.collection].push_back(key.id);
                } else {
                    ++out.still_pending;
                }
                continue;
            }
            const auto code = p::parse_errc(res.code);
            if (code == protocol_errc::clock_drift) {
                out.clock_drift.push_back(key);
                continue;
            }
            if (code == protocol_errc::busy || code == protocol_errc::internal) {
                out.retry_later.push_back(key);
                continue;
            }
            // Refused for good (validation_failed, forbidden, unsupported_version, or a code
            // this SDK does not know): kept, flagged, not uploaded again until written again.
            auto s = db->prepare(
                "UPDATE outbox SET status = 1, code = ?4, reason = ?5 "
                "WHERE collection = ?1 AND id = ?2 AND change = ?3");
            if (!s) return s.error();
            s->bind(1, key.collection)
                .bind_blob(2, id_bytes(key.id))
                .bind(3, item.change)
                .bind(4, res.code)
                .bind(5,
                      res.reason.empty() ? "refused by the server (" + res.code + ")" : res.reason);
            if (auto st = s->run(); !st) return st.error();
            if (sqlite3_changes(db->handle()) == 1) {
                if (out.rejected++ == 0)
                    out.first_reason = res.reason.empty() ? res.code : res.reason;
                notice.records[key.collection].push_back(key.id);
            } else {
                ++out.still_pending;  // written again since: the new write may fix it
            }
        }
        if (auto st = tx.commit(); !st) return st.error();
    }
    for (auto& [c, ids] : notice.records)
        std::sort(ids.begin(), ids.end());
    notify(notice);
    return out;
}

Result<ApplyOutcome> detail::ReplicaImpl::apply_remote(const std::vector<p::ChangeItem>& items,
                                                       std::uint64_t cursor) {
    ApplyOutcome out;
    ChangeNotice notice;
    notice.origin = ChangeOrigin::remote;
    {
        std::lock_guard lock(mutex);
        const p::HybridClock clock_before = clock;
        Transaction tx(*db);
        if (!tx.begun()) return tx.begun().error();
        auto fail = [&](Error e) -> Result<ApplyOutcome> {
            clock = clock_before;
            return e;
        };
        if (auto st = refresh_locked(); !st) return fail(st.error());
        // Nothing below adds to the outbox: when it is empty (always, in a first pull), the
        // two outbox statements per record have nothing to do.
        bool outbox_empty = false;
        {
            auto s = db->prepare("SELECT NOT EXISTS (SELECT 1 FROM outbox)");
            if (!s) return fail(s.error());
            auto row = s->step();
            if (!row) return fail(row.error());
            outbox_empty = *row && s->col_int(0) != 0;
        }
        for (const auto& item : items) {
            const p::RecordState& remote = item.record;
            auto loaded = load_locked(remote.collection, remote.id);
            if (!loaded) return fail(loaded.error());
            p::RecordState merged;
            std::int64_t acked = 0;
            bool changed = true;
            if (*loaded) {
                merged = std::move((*loaded)->first);
                acked = (*loaded)->second;
                const p::RecordState before = merged;
                if (auto st = merged.join(remote); !st) return fail(st.error());
                changed = !(merged == before);
            } else {
                merged = remote;
            }
            acked = std::max<std::int64_t>(
                acked, static_cast<std::int64_t>(remote.context.get(replica_id)));
            // The clock observes what it receives; a timestamp too far ahead is still joined
            // (data is never dropped) but does not drag the clock along (hlc.hpp).
            if (auto ts = newest_ts(remote); ts.value != 0) (void)clock.observe(ts);
            if (auto st = put_record_locked(merged, acked, true); !st) return fail(st.error());
            if (!outbox_empty && changed && !(merged == remote)) {
                // The server's copy moved on (a supervisor moved the household into this
                // user's areas, resolved a conflict, ...): a refusal may no longer hold, so a
                // rejected record becomes pending and is offered again at the next push.
                auto r = db->prepare(
                    "UPDATE outbox SET status = 0, code = '', reason = '' "
                    "WHERE collection = ?1 AND id = ?2 AND status = 1");
                if (!r) return fail(r.error());
                r->bind(1, remote.collection).bind_blob(2, id_bytes(remote.id));
                if (auto st = r->run(); !st) return fail(st.error());
            }
            if (!outbox_empty && merged == remote) {
                // The server holds everything this replica holds: nothing left to upload.
                auto d = db->prepare("DELETE FROM outbox WHERE collection = ?1 AND id = ?2");
                if (!d) return fail(d.error());
                d->bind(1, remote.collection).bind_blob(2, id_bytes(remote.id));
                if (auto st = d->run(); !st) return fail(st.error());
                if (sqlite3_changes(db->handle()) > 0) changed = true;
            }
            ++out.joined;
            if (changed) {
                ++out.changed;
                notice.records[remote.collection].push_back(remote.id);
            }
        }
        if (auto st = set_meta_locked("cursor", static_cast<std::int64_t>(cursor)); !st)
            return fail(st.error());
        if (auto st = set_meta_locked("hlc", static_cast<std::int64_t>(clock.last().value)); !st)
            return fail(st.error());
        if (auto st = tx.commit(); !st) return fail(st.error());
    }
    for (auto& [c, ids] : notice.records) {
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    }
    notify(notice);
    return out;
}

Result<RevokeOutcome> detail::ReplicaImpl::revoke(const std::vector<p::RecordRef>& records) {
    RevokeOutcome out;
    ChangeNotice notice;
    notice.origin = ChangeOrigin::revoked;
    {
        std::lock_guard lock(mutex);
        Transaction tx(*db);
        if (!tx.begun()) return tx.begun().error();
        for (const auto& ref : records) {
            auto s = db->prepare("DELETE FROM records WHERE collection = ?1 AND id = ?2");
            if (!s) return s.error();
            s->bind(1, ref.collection).bind_blob(2, id_bytes(ref.id));
            if (auto st = s->run(); !st) return st.error();
            const bool existed = sqlite3_changes(db->handle()) > 0;
            auto o = db->prepare("DELETE FROM outbox WHERE collection = ?1 AND id = ?2");
            if (!o) return o.error();
            o->bind(1, ref.collection).bind_blob(2, id_bytes(ref.id));
            if (auto st = o->run(); !st) return st.error();
            if (sqlite3_changes(db->handle()) > 0) ++out.had_pending;
            if (existed) {
                ++out.removed;
                notice.records[ref.collection].push_back(ref.id);
            }
        }
        if (auto st = tx.commit(); !st) return st.error();
    }
    notify(notice);
    return out;
}

Status detail::ReplicaImpl::request_rebootstrap() {
    std::lock_guard lock(mutex);
    return set_meta_locked("rebootstrap", std::int64_t{1});
}

Status detail::ReplicaImpl::begin_rebootstrap() {
    std::lock_guard lock(mutex);
    Transaction tx(*db);
    if (!tx.begun()) return tx.begun().error();
    if (auto st = set_meta_locked("rebootstrap", std::int64_t{1}); !st) return st;
    if (auto st = set_meta_locked("cursor", std::int64_t{0}); !st) return st;
    if (auto st = db->exec("UPDATE records SET seen = 0"); !st) return st;
    // The user's areas changed (or the server lost track): refusals such as "outside your
    // assigned areas" may no longer hold, so refused records are offered again.
    if (auto st = db->exec("UPDATE outbox SET status = 0, code = '', reason = '' WHERE status = 1");
        !st)
        return st;
    return tx.commit();
}

Result<std::size_t> detail::ReplicaImpl::finish_rebootstrap() {
    ChangeNotice notice;
    notice.origin = ChangeOrigin::revoked;
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex);
        Transaction tx(*db);
        if (!tx.begun()) return tx.begun().error();
        std::vector<RecordKey> drop;
        {
            auto s = db->prepare(
                "SELECT r.collection, r.id FROM records r WHERE r.seen = 0 AND NOT EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.collection = r.collection AND o.id = r.id)");
            if (!s) return s.error();
            for (;;) {
                auto row = s->step();
                if (!row) return row.error();
                if (!*row) break;
                drop.push_back(RecordKey{s->col_text(0), id_from(s->col_blob(1))});
            }
        }
        for (const auto& k : drop) {
            auto s = db->prepare("DELETE FROM records WHERE collection = ?1 AND id = ?2");
            if (!s) return s.error();
            s->bind(1, k.collection).bind_blob(2, id_bytes(k.id));
            if (auto st = s->run(); !st) return st.error();
            notice.records[k.collection].push_back(k.id);
        }
        // Refusals made while the re-bootstrap ran may have come from a session still under
        // the old scope (the areas can change again before the pull completes, and a resumed
        // re-bootstrap does not pass through begin_rebootstrap): the pull that just completed
        // is under the current scope, so every refused record is offered once more.
        if (auto st =
                db->exec("UPDATE outbox SET status = 0, code = '', reason = '' WHERE status = 1");
            !st)
            return st.error();
        if (auto st = set_meta_locked("rebootstrap", std::int64_t{0}); !st) return st.error();
        if (auto st = tx.commit(); !st) return st.error();
        n = drop.size();
    }
    notify(notice);
    return n;
}

Result<LocalDigest> detail::ReplicaImpl::local_digest() {
    std::lock_guard lock(mutex);
    LocalDigest out;
    p::ScopeDigest digest;
    auto s = db->prepare("SELECT state FROM records");
    if (!s) return s.error();
    for (;;) {
        auto row = s->step();
        if (!row) return row.error();
        if (!*row) break;
        // Stored states are canonical encodings, so their SHA-256 is record_digest().
        digest.add(p::sha256(s->col_blob(0)));
    }
    out.count = digest.count();
    out.digest = digest.value();
    auto cursor = meta_int_locked("cursor");
    if (!cursor) return cursor.error();
    out.cursor = static_cast<std::uint64_t>(cursor->value_or(0));
    auto c = db->prepare("SELECT count(*) FROM outbox");
    if (!c) return c.error();
    auto row = c->step();
    if (!row) return row.error();
    out.outbox = static_cast<std::size_t>(c->col_int(0));
    return out;
}

Result<std::size_t> detail::ReplicaImpl::outbox_count() {
    std::lock_guard lock(mutex);
    auto s = db->prepare("SELECT count(*) FROM outbox WHERE status = 0");
    if (!s) return s.error();
    auto row = s->step();
    if (!row) return row.error();
    return static_cast<std::size_t>(s->col_int(0));
}

void detail::ReplicaImpl::record_sync_completed() {
    std::lock_guard lock(mutex);
    Transaction tx(*db);
    if (!tx.begun()) return;
    (void)set_meta_locked("last_sync_ms", static_cast<std::int64_t>(corrected_now()));
    (void)db->exec(
        "DELETE FROM meta WHERE key IN ('last_error_code', 'last_error_message', 'last_error_ms')");
    (void)tx.commit();
}

void detail::ReplicaImpl::record_error(const Error& e) {
    std::lock_guard lock(mutex);
    Transaction tx(*db);
    if (!tx.begun()) return;
    const std::string code = e.code.category() == p::protocol_category()
                                 ? p::to_string(static_cast<protocol_errc>(e.code.value()))
                                 : "internal";
    (void)set_meta_locked("last_error_code", code);
    (void)set_meta_locked("last_error_message", e.message);
    (void)set_meta_locked("last_error_ms", static_cast<std::int64_t>(corrected_now()));
    (void)tx.commit();
}

}  // namespace fieldsync
