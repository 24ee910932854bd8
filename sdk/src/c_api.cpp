// The C API (fieldsync/fieldsync.h) over the C++ SDK.
//
// Handles are the C++ objects behind them: `struct fs_replica` and `struct fs_replicator` are
// defined here (global namespace, as the header names them) and own the C++ objects they wrap;
// there is no handle table. fs_replica holds a shared_ptr<Replica> because the replica's
// lifetime is shared with replicators (fs_replica_release may come first).
//
// Every exported function is noexcept and runs its body through guarded(), which turns any C++
// exception into an fs_error (FS_ERROR_UNEXPECTED, or FS_ERROR_INTERNAL for bad_alloc) and
// returns the function's failure value. Errors are written only on failure.
//
// Strings returned to the caller are malloc'ed copies (fs_string_free = free).
#include "fieldsync/fieldsync.h"

#include <boost/json.hpp>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/replicator.hpp"
#include "fieldsync/transport.hpp"

namespace p = fieldsync::protocol;
namespace json = boost::json;

namespace {

char* dup_string(std::string_view s) noexcept {
    auto* out = static_cast<char*>(std::malloc(s.size() + 1));
    if (!out) return nullptr;
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
    return out;
}

void set_error(fs_error* out, fs_error_code code, std::string_view message) noexcept {
    if (!out) return;
    std::free(out->message);
    out->code = code;
    out->message = dup_string(message);
}

fs_error_code code_of(const std::error_code& ec) noexcept {
    if (!ec) return FS_OK;
    if (ec.category() == p::protocol_category() || ec.category() == fieldsync::transport_category())
        return static_cast<fs_error_code>(ec.value());
    return FS_ERROR_INTERNAL;
}

void set_error(fs_error* out, const p::Error& e) noexcept {
    fs_error_code code = code_of(e.code);
    if (code == FS_OK) code = FS_ERROR_INTERNAL;
    set_error(out, code, e.message);
}

/// Runs `body`; on an exception writes the error and returns `failed`.
template <class T, class F>
T guarded(fs_error* out_error, T failed, F&& body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        set_error(out_error, FS_ERROR_INTERNAL, "out of memory");
    } catch (const std::exception& e) {
        set_error(out_error, FS_ERROR_UNEXPECTED,
                  std::string("unexpected C++ exception: ") + e.what());
    } catch (...) {
        set_error(out_error, FS_ERROR_UNEXPECTED, "unexpected C++ exception");
    }
    return failed;
}

template <class F>
void guarded_void(F&& body) noexcept {
    try {
        body();
    } catch (...) {
    }
}

bool require(fs_error* out, const void* ptr, const char* what) noexcept {
    if (ptr) return true;
    set_error(out, FS_ERROR_INVALID_ARGUMENT, std::string(what) + " must not be NULL");
    return false;
}

/// A C context plus its free function, freed exactly once when the last holder lets go.
class Context {
public:
    Context(void* context, fs_free_context free_context)
        : m_context(context), m_free(free_context) {}
    ~Context() {
        if (m_free) m_free(m_context);
    }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    void* get() const noexcept { return m_context; }

private:
    void* m_context;
    fs_free_context m_free;
};

// --- JSON text out (hand-written: values keep the exact form protocol::value_to_json gives) --

void append_quoted(std::string& out, std::string_view s) {
    out += json::serialize(json::string_view(s.data(), s.size()));
}

class JsonObject {
public:
    explicit JsonObject(std::string& out) : m_out(out) { m_out += '{'; }
    void key(std::string_view k) {
        if (!m_first) m_out += ',';
        m_first = false;
        append_quoted(m_out, k);
        m_out += ':';
    }
    void str(std::string_view k, std::string_view v) {
        key(k);
        append_quoted(m_out, v);
    }
    void raw(std::string_view k, std::string_view v) {
        key(k);
        m_out += v;
    }
    void boolean(std::string_view k, bool v) { raw(k, v ? "true" : "false"); }
    void number(std::string_view k, std::uint64_t v) { raw(k, std::to_string(v)); }
    void snumber(std::string_view k, std::int64_t v) { raw(k, std::to_string(v)); }
    void close() { m_out += '}'; }

private:
    std::string& m_out;
    bool m_first = true;
};

void append_competing(std::string& out, const std::vector<p::Entry>& entries) {
    out += '[';
    bool first = true;
    for (const auto& e : entries) {
        if (!first) out += ',';
        first = false;
        JsonObject o(out);
        o.raw("value", p::value_to_json(e.value));
        o.str("by", e.by);
        o.str("replica", e.dot.replica.to_string());
        o.str("at", p::iso8601_utc(e.ts.wall_ms()));
        o.str("ts", e.ts.to_string());
        o.close();
    }
    out += ']';
}

void append_record(std::string& out, const fieldsync::RecordView& v) {
    JsonObject o(out);
    o.str("collection", v.collection);
    o.str("id", v.id.to_string());
    o.str("area", v.area);
    o.boolean("deleted", v.deleted);
    o.boolean("delete_conflict", v.delete_conflict);
    o.str("sync", fieldsync::to_string(v.sync));
    if (v.sync == fieldsync::SyncStatus::rejected) {
        o.key("reject");
        JsonObject r(out);
        r.str("code", v.reject_code);
        r.str("reason", v.reject_reason);
        r.close();
    }
    o.key("fields");
    {
        JsonObject f(out);
        for (const auto& [name, reading] : v.fields) {
            if (reading.rule == p::MergeRule::set) {
                std::string arr = "[";
                for (std::size_t i = 0; i < reading.elements.size(); ++i) {
                    if (i) arr += ',';
                    arr += p::value_to_json(reading.elements[i]);
                }
                arr += ']';
                f.raw(name, arr);
            } else {
                f.raw(name, p::value_to_json(reading.value));
            }
        }
        f.close();
    }
    o.key("conflicts");
    {
        JsonObject c(out);
        for (const auto& name : v.conflicts) {
            auto view = v.state.view(name);
            if (!view) continue;
            c.key(name);
            append_competing(out, view->competing);
        }
        c.close();
    }
    o.close();
}

/// Parses a JSON object into field -> JSON text of the value.
std::optional<fieldsync::JsonFields> parse_fields(const char* text, fs_error* out_error) {
    json::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) {
        set_error(out_error, FS_ERROR_INVALID_ARGUMENT,
                  std::string("fields must be a JSON object {\"field\": value, ...}") +
                      (ec ? ": " + ec.message() : ""));
        return std::nullopt;
    }
    fieldsync::JsonFields out;
    for (const auto& [key, value] : v.as_object())
        out.emplace(std::string(key), json::serialize(value));
    return out;
}

std::optional<p::RecordId> parse_id(const char* id, fs_error* out_error) {
    auto parsed = p::RecordId::parse(id);
    if (!parsed) {
        set_error(out_error, FS_ERROR_INVALID_ARGUMENT,
                  "record id \"" + std::string(id) + "\": " + parsed.error().message);
        return std::nullopt;
    }
    return *parsed;
}

}  // namespace

// --- The handles ------------------------------------------------------------------------------

struct fs_replica {
    std::shared_ptr<fieldsync::Replica> replica;
    std::mutex mutex;
    std::set<fieldsync::ObserverToken> observers;  // guarded by mutex

    ~fs_replica() {
        for (auto token : observers)
            replica->remove_observer(token);
    }
};

struct fs_replicator_config {
    fieldsync::ReplicatorOptions options;
    std::shared_ptr<Context> status_context;
    fs_status_callback status_callback = nullptr;
    std::shared_ptr<Context> transport_context;
    std::optional<fs_transport> transport;
};

struct fs_replicator {
    std::unique_ptr<fieldsync::Replicator> replicator;
};

/// One connection of a C transport. Reference-counted: the app's reference (dropped by
/// fs_transport_connection_closed) and the bridge's (dropped when the C++ Transport is
/// destroyed). Events are forwarded to the delegate only while the bridge is attached.
struct fs_transport_connection {
    std::atomic<int> refs{2};
    std::mutex mutex;
    std::shared_ptr<fieldsync::TransportDelegate> delegate;  // guarded by mutex; null = detached

    void unref() {
        if (refs.fetch_sub(1) == 1) delete this;
    }
    std::shared_ptr<fieldsync::TransportDelegate> current() {
        std::lock_guard lock(mutex);
        return delegate;
    }
};

namespace {

/// fieldsync::Transport over an fs_transport struct.
class CTransport final : public fieldsync::Transport {
public:
    CTransport(const fs_transport& t, std::shared_ptr<Context> context)
        : m_transport(t), m_context(std::move(context)) {}
    ~CTransport() override {
        if (!m_connection) return;
        bool was_attached = false;
        {
            std::lock_guard lock(m_connection->mutex);
            was_attached = m_connection->delegate != nullptr;
            m_connection->delegate.reset();
        }
        if (was_attached && !m_closed_sent && m_transport.close)
            m_transport.close(m_context->get(), m_connection, 1001, "aborted");
        m_connection->unref();
    }
    void connect(const std::string& url, const fieldsync::TransportHeaders& headers,
                 std::shared_ptr<fieldsync::TransportDelegate> delegate) override {
        m_connection = new fs_transport_connection;
        m_connection->delegate = std::move(delegate);
        std::vector<fs_header> h;
        for (const auto& [name, value] : headers)
            h.push_back(fs_header{name.c_str(), value.c_str()});
        m_transport.connect(m_context->get(), m_connection, url.c_str(),
                            h.empty() ? nullptr : h.data(), h.size());
    }
    void send(p::Bytes frame) override {
        if (m_connection && !m_closed_sent)
            m_transport.send(m_context->get(), m_connection, frame.data(), frame.size());
    }
    void close(std::uint16_t code, std::string reason) override {
        if (!m_connection || m_closed_sent) return;
        m_closed_sent = true;
        m_transport.close(m_context->get(), m_connection, code, reason.c_str());
    }

private:
    fs_transport m_transport;
    std::shared_ptr<Context> m_context;
    fs_transport_connection* m_connection = nullptr;
    bool m_closed_sent = false;
};

}  // namespace

// --- Errors and strings -------------------------------------------------------------------

extern "C" {

FS_EXPORT void fs_error_clear(fs_error* error) noexcept {
    if (!error) return;
    std::free(error->message);
    error->message = nullptr;
    error->code = FS_OK;
}

FS_EXPORT void fs_string_free(char* string) noexcept {
    std::free(string);
}

FS_EXPORT const char* fs_version(void) noexcept {
    return "0.1.0";
}

// --- Replica ------------------------------------------------------------------------------

FS_EXPORT fs_replica* fs_replica_open(const char* path, const char* device_id,
                                      fs_error* out_error) noexcept {
    return guarded<fs_replica*>(out_error, nullptr, [&]() -> fs_replica* {
        if (!require(out_error, path, "path")) return nullptr;
        fieldsync::ReplicaOptions options;
        if (device_id) {
            auto id = p::Id128::parse(device_id);
            if (!id) {
                set_error(out_error, FS_ERROR_INVALID_ARGUMENT, "device id: " + id.error().message);
                return nullptr;
            }
            options.device_id = *id;
        }
        auto opened = fieldsync::Replica::open(path, std::move(options));
        if (!opened) {
            set_error(out_error, opened.error());
            return nullptr;
        }
        auto* handle = new fs_replica;
        handle->replica = std::move(*opened);
        return handle;
    });
}

FS_EXPORT void fs_replica_release(fs_replica* replica) noexcept {
    guarded_void([&] { delete replica; });
}

FS_EXPORT char* fs_replica_id(const fs_replica* replica) noexcept {
    if (!replica) return nullptr;
    return guarded<char*>(nullptr, nullptr,
                          [&] { return dup_string(replica->replica->replica_id().to_string()); });
}

FS_EXPORT char* fs_replica_device_id(const fs_replica* replica) noexcept {
    if (!replica) return nullptr;
    return guarded<char*>(nullptr, nullptr,
                          [&] { return dup_string(replica->replica->device_id().to_string()); });
}

FS_EXPORT char* fs_replica_create(fs_replica* replica, const char* collection,
                                  const char* fields_json, fs_error* out_error) noexcept {
    return guarded<char*>(out_error, nullptr, [&]() -> char* {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection") ||
            !require(out_error, fields_json, "fields_json"))
            return nullptr;
        auto fields = parse_fields(fields_json, out_error);
        if (!fields) return nullptr;
        auto id = replica->replica->create_json(collection, *fields);
        if (!id) {
            set_error(out_error, id.error());
            return nullptr;
        }
        return dup_string(id->to_string());
    });
}

FS_EXPORT bool fs_replica_update(fs_replica* replica, const char* collection, const char* id,
                                 const char* fields_json, fs_error* out_error) noexcept {
    return guarded(out_error, false, [&] {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection") || !require(out_error, id, "id") ||
            !require(out_error, fields_json, "fields_json"))
            return false;
        auto rid = parse_id(id, out_error);
        if (!rid) return false;
        auto fields = parse_fields(fields_json, out_error);
        if (!fields) return false;
        auto st = replica->replica->update_json(collection, *rid, *fields);
        if (!st) set_error(out_error, st.error());
        return st.ok();
    });
}

FS_EXPORT bool fs_replica_delete(fs_replica* replica, const char* collection, const char* id,
                                 fs_error* out_error) noexcept {
    return guarded(out_error, false, [&] {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection") || !require(out_error, id, "id"))
            return false;
        auto rid = parse_id(id, out_error);
        if (!rid) return false;
        auto st = replica->replica->remove(collection, *rid);
        if (!st) set_error(out_error, st.error());
        return st.ok();
    });
}

FS_EXPORT bool fs_replica_restore(fs_replica* replica, const char* collection, const char* id,
                                  fs_error* out_error) noexcept {
    return guarded(out_error, false, [&] {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection") || !require(out_error, id, "id"))
            return false;
        auto rid = parse_id(id, out_error);
        if (!rid) return false;
        auto st = replica->replica->restore(collection, *rid);
        if (!st) set_error(out_error, st.error());
        return st.ok();
    });
}

FS_EXPORT bool fs_replica_increment(fs_replica* replica, const char* collection, const char* id,
                                    const char* field, int64_t delta,
                                    fs_error* out_error) noexcept {
    return guarded(out_error, false, [&] {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection") || !require(out_error, id, "id") ||
            !require(out_error, field, "field"))
            return false;
        auto rid = parse_id(id, out_error);
        if (!rid) return false;
        auto st = replica->replica->increment(collection, *rid, field, delta);
        if (!st) set_error(out_error, st.error());
        return st.ok();
    });
}

FS_EXPORT char* fs_replica_get(const fs_replica* replica, const char* collection, const char* id,
                               fs_error* out_error) noexcept {
    return guarded<char*>(out_error, nullptr, [&]() -> char* {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection") || !require(out_error, id, "id"))
            return nullptr;
        auto rid = parse_id(id, out_error);
        if (!rid) return nullptr;
        auto view = replica->replica->get(collection, *rid);
        if (!view) {
            set_error(out_error, view.error());
            return nullptr;
        }
        if (!*view) {
            set_error(out_error, FS_ERROR_NOT_FOUND,
                      std::string(collection) + "/" + id + ": no such record in this replica");
            return nullptr;
        }
        std::string out;
        append_record(out, **view);
        return dup_string(out);
    });
}

FS_EXPORT char* fs_replica_list(const fs_replica* replica, const char* collection,
                                const char* filter_json, fs_error* out_error) noexcept {
    return guarded<char*>(out_error, nullptr, [&]() -> char* {
        if (!require(out_error, replica, "replica") ||
            !require(out_error, collection, "collection"))
            return nullptr;
        fieldsync::Filter filter;
        if (filter_json && *filter_json) {
            json::error_code ec;
            json::value v = json::parse(filter_json, ec);
            if (ec || !v.is_object()) {
                set_error(out_error, FS_ERROR_INVALID_ARGUMENT, "filter must be a JSON object");
                return nullptr;
            }
            auto bad = [&](const std::string& what) {
                set_error(out_error, FS_ERROR_INVALID_ARGUMENT, "filter: " + what);
                return nullptr;
            };
            auto schema = replica->replica->schema();
            for (const auto& [key, value] : v.as_object()) {
                if (key == "area") {
                    if (!value.is_string()) return bad("\"area\" must be a string");
                    filter.area_prefix = std::string(value.as_string());
                } else if (key == "where") {
                    if (!value.is_object()) return bad("\"where\" must be an object");
                    for (const auto& [field, fv] : value.as_object()) {
                        const p::FieldDef* def =
                            schema ? schema->find_field(collection, field) : nullptr;
                        if (!def) {
                            set_error(out_error, FS_ERROR_VALIDATION_FAILED,
                                      std::string(collection) + ": no field named " +
                                          std::string(field) +
                                          (schema ? "" : " (no schema yet: sync once first)"));
                            return nullptr;
                        }
                        auto typed = p::value_from_json(json::serialize(fv), *def);
                        if (!typed) {
                            set_error(out_error, typed.error());
                            return nullptr;
                        }
                        filter.equals.emplace(std::string(field), *typed);
                    }
                } else if (key == "include_deleted" || key == "only_conflicts" ||
                           key == "only_unsynced") {
                    if (!value.is_bool())
                        return bad("\"" + std::string(key) + "\" must be true or false");
                    bool b = value.as_bool();
                    if (key == "include_deleted") filter.include_deleted = b;
                    if (key == "only_conflicts") filter.only_conflicts = b;
                    if (key == "only_unsynced") filter.only_unsynced = b;
                } else if (key == "limit" || key == "offset") {
                    if (!value.is_int64() && !value.is_uint64())
                        return bad("\"" + std::string(key) + "\" must be an integer");
                    const auto n = value.to_number<std::int64_t>();
                    if (n < 0) return bad("\"" + std::string(key) + "\" must not be negative");
                    (key == "limit" ? filter.limit : filter.offset) = static_cast<std::size_t>(n);
                } else {
                    return bad("unknown key \"" + std::string(key) + "\"");
                }
            }
        }
        auto records = replica->replica->list(collection, filter);
        if (!records) {
            set_error(out_error, records.error());
            return nullptr;
        }
        std::string out = "[";
        bool first = true;
        for (const auto& r : *records) {
            if (!first) out += ',';
            first = false;
            append_record(out, r);
        }
        out += ']';
        return dup_string(out);
    });
}

FS_EXPORT int64_t fs_replica_pending_count(const fs_replica* replica,
                                           fs_error* out_error) noexcept {
    return guarded<int64_t>(out_error, -1, [&]() -> int64_t {
        if (!require(out_error, replica, "replica")) return -1;
        auto n = replica->replica->pending_count();
        if (!n) {
            set_error(out_error, n.error());
            return -1;
        }
        return static_cast<int64_t>(*n);
    });
}

FS_EXPORT char* fs_replica_sync_info(const fs_replica* replica, fs_error* out_error) noexcept {
    return guarded<char*>(out_error, nullptr, [&]() -> char* {
        if (!require(out_error, replica, "replica")) return nullptr;
        auto info = replica->replica->sync_info();
        if (!info) {
            set_error(out_error, info.error());
            return nullptr;
        }
        auto rejected = replica->replica->rejected();
        if (!rejected) {
            set_error(out_error, rejected.error());
            return nullptr;
        }
        std::string out;
        JsonObject o(out);
        o.str("device_id", info->device_id.to_string());
        o.str("replica_id", info->replica_id.to_string());
        o.str("user", info->user);
        o.str("role", info->role);
        o.key("scope");
        out += '[';
        for (std::size_t i = 0; i < info->scope.size(); ++i) {
            if (i) out += ',';
            append_quoted(out, info->scope[i]);
        }
        out += ']';
        o.number("schema_version", info->schema_version);
        o.number("cursor", info->cursor);
        o.snumber("clock_offset_ms", info->clock_offset_ms);
        o.boolean("has_token", info->has_token);
        o.number("last_sync_ms", info->last_sync_ms);
        if (info->last_sync_ms) {
            o.str("last_sync", p::iso8601_utc(info->last_sync_ms));
        } else {
            o.raw("last_sync", "null");
        }
        if (info->last_error) {
            o.key("last_error");
            JsonObject e(out);
            e.str("code",
                  info->last_error->code.category() == p::protocol_category()
                      ? p::to_string(static_cast<p::protocol_errc>(info->last_error->code.value()))
                      : info->last_error->code.message());
            e.str("message", info->last_error->message);
            e.number("at_ms", info->last_error_ms);
            e.close();
        } else {
            o.raw("last_error", "null");
        }
        o.number("pending", info->pending);
        o.number("rejected", info->rejected);
        o.key("rejected_records");
        out += '[';
        bool first = true;
        for (const auto& r : *rejected) {
            if (!first) out += ',';
            first = false;
            JsonObject ro(out);
            ro.str("collection", r.collection);
            ro.str("id", r.id.to_string());
            ro.str("code", r.code);
            ro.str("reason", r.reason);
            ro.close();
        }
        out += ']';
        o.close();
        return dup_string(out);
    });
}

FS_EXPORT char* fs_replica_schema(const fs_replica* replica, fs_error* out_error) noexcept {
    return guarded<char*>(out_error, nullptr, [&]() -> char* {
        if (!require(out_error, replica, "replica")) return nullptr;
        auto schema = replica->replica->schema();
        if (!schema) {
            set_error(out_error, FS_ERROR_NOT_FOUND, "no survey schema yet: sync once first");
            return nullptr;
        }
        return dup_string(schema->to_json());
    });
}

FS_EXPORT uint64_t fs_replica_add_observer(fs_replica* replica, fs_change_callback callback,
                                           void* context, fs_free_context free_context,
                                           fs_error* out_error) noexcept {
    // The context is owned from here on, even on failure.
    auto holder = guarded<std::shared_ptr<Context>>(
        out_error, nullptr, [&] { return std::make_shared<Context>(context, free_context); });
    if (!holder) return 0;
    return guarded<uint64_t>(out_error, 0, [&]() -> uint64_t {
        if (!require(out_error, replica, "replica")) return 0;
        if (!callback) {
            set_error(out_error, FS_ERROR_INVALID_ARGUMENT, "callback must not be NULL");
            return 0;
        }
        auto token =
            replica->replica->add_observer([callback, holder](const fieldsync::ChangeNotice& n) {
                guarded_void([&] {
                    std::string out;
                    JsonObject o(out);
                    for (const auto& [coll, ids] : n.records) {
                        o.key(coll);
                        out += '[';
                        for (std::size_t i = 0; i < ids.size(); ++i) {
                            if (i) out += ',';
                            append_quoted(out, ids[i].to_string());
                        }
                        out += ']';
                    }
                    o.close();
                    callback(holder->get(), static_cast<fs_change_origin>(n.origin), out.c_str());
                });
            });
        std::lock_guard lock(replica->mutex);
        replica->observers.insert(token);
        return token;
    });
}

FS_EXPORT void fs_replica_remove_observer(fs_replica* replica, uint64_t token) noexcept {
    guarded_void([&] {
        if (!replica) return;
        {
            std::lock_guard lock(replica->mutex);
            if (replica->observers.erase(token) == 0) return;
        }
        replica->replica->remove_observer(token);
    });
}

// --- Custom transport ---------------------------------------------------------------------

FS_EXPORT void fs_transport_connection_opened(fs_transport_connection* connection) noexcept {
    guarded_void([&] {
        if (auto d = connection ? connection->current() : nullptr) d->on_open();
    });
}

FS_EXPORT void fs_transport_connection_received(fs_transport_connection* connection,
                                                const uint8_t* data, size_t size) noexcept {
    guarded_void([&] {
        if (auto d = connection ? connection->current() : nullptr)
            d->on_frame(p::ByteView(data, data ? size : 0));
    });
}

FS_EXPORT void fs_transport_connection_closed(fs_transport_connection* connection, uint16_t code,
                                              const char* reason, fs_error_code error,
                                              const char* error_message) noexcept {
    if (!connection) return;
    guarded_void([&] {
        std::shared_ptr<fieldsync::TransportDelegate> d;
        {
            std::lock_guard lock(connection->mutex);
            d = std::move(connection->delegate);  // nothing is forwarded after closed
        }
        if (d) {
            fieldsync::TransportClose c;
            c.code = code;
            c.reason = reason ? reason : "";
            if (error != FS_OK) {
                const std::string msg =
                    error_message ? error_message : "the app's transport failed";
                if (error >= 100 && error < 200)
                    c.error = p::Error{static_cast<fieldsync::transport_errc>(error), msg};
                else if (error >= 1 && error <= 18)
                    c.error = p::Error{static_cast<p::protocol_errc>(error), msg};
                else
                    c.error = p::Error{fieldsync::transport_errc::network, msg};
            }
            d->on_closed(c);
        }
    });
    connection->unref();
}

// --- Replicator ---------------------------------------------------------------------------

FS_EXPORT fs_replicator_config* fs_replicator_config_new(const char* url) noexcept {
    return guarded<fs_replicator_config*>(nullptr, nullptr, [&] {
        auto* c = new fs_replicator_config;
        c->options.url = url ? url : "";
        return c;
    });
}

FS_EXPORT void fs_replicator_config_free(fs_replicator_config* config) noexcept {
    guarded_void([&] { delete config; });
}

FS_EXPORT void fs_replicator_config_set_credentials(fs_replicator_config* config, const char* user,
                                                    const char* password,
                                                    const char* token) noexcept {
    if (!config) return;
    guarded_void([&] {
        config->options.credentials.user = user ? user : "";
        config->options.credentials.password = password ? password : "";
        config->options.credentials.token = token ? token : "";
    });
}

FS_EXPORT void fs_replicator_config_set_app(fs_replicator_config* config,
                                            const char* app) noexcept {
    if (!config) return;
    guarded_void([&] { config->options.app = app ? app : ""; });
}

FS_EXPORT void fs_replicator_config_set_continuous(fs_replicator_config* config,
                                                   bool continuous) noexcept {
    if (!config) return;
    config->options.mode =
        continuous ? fieldsync::ReplicatorMode::continuous : fieldsync::ReplicatorMode::one_shot;
}

FS_EXPORT void fs_replicator_config_set_ca_file(fs_replicator_config* config,
                                                const char* path) noexcept {
    if (!config) return;
    guarded_void([&] { config->options.websocket.ca_file = path ? path : ""; });
}

FS_EXPORT bool fs_replicator_config_add_pin(fs_replicator_config* config, const char* pin,
                                            fs_error* out_error) noexcept {
    return guarded(out_error, false, [&] {
        if (!require(out_error, config, "config") || !require(out_error, pin, "pin")) return false;
        if (auto raw = fieldsync::parse_spki_pin(pin); !raw) {
            set_error(out_error, FS_ERROR_INVALID_ARGUMENT, raw.error().message);
            return false;
        }
        config->options.websocket.pins.emplace_back(pin);
        return true;
    });
}

FS_EXPORT void fs_replicator_config_set_timeouts(fs_replicator_config* config, uint32_t connect_ms,
                                                 uint32_t idle_ms) noexcept {
    if (!config) return;
    if (connect_ms) config->options.websocket.connect_timeout_ms = connect_ms;
    if (idle_ms) config->options.websocket.idle_timeout_ms = idle_ms;
}

FS_EXPORT void fs_replicator_config_set_backoff(fs_replicator_config* config, uint32_t initial_ms,
                                                uint32_t max_ms) noexcept {
    if (!config) return;
    if (initial_ms) config->options.backoff.initial_ms = initial_ms;
    if (max_ms) config->options.backoff.max_ms = max_ms;
}

FS_EXPORT void fs_replicator_config_add_header(fs_replicator_config* config, const char* name,
                                               const char* value) noexcept {
    if (!config) return;
    guarded_void([&] {
        if (name && value) config->options.headers.emplace_back(name, value);
    });
}

FS_EXPORT void fs_replicator_config_set_transport(fs_replicator_config* config,
                                                  const fs_transport* transport) noexcept {
    if (!config) return;
    guarded_void([&] {
        if (!transport) {
            config->transport.reset();
            config->transport_context.reset();
            return;
        }
        config->transport_context =
            std::make_shared<Context>(transport->context, transport->free_context);
        config->transport = *transport;
    });
}

FS_EXPORT void fs_replicator_config_set_status_callback(fs_replicator_config* config,
                                                        fs_status_callback callback, void* context,
                                                        fs_free_context free_context) noexcept {
    if (!config) return;
    guarded_void([&] {
        config->status_context = std::make_shared<Context>(context, free_context);
        config->status_callback = callback;
    });
}

namespace {

fs_replicator_status to_c(const fieldsync::ReplicatorStatus& s, const char* message) {
    fs_replicator_status c{};
    c.state = static_cast<fs_replicator_state>(s.state);
    c.up_to_date = s.up_to_date;
    c.attempt = s.attempt;
    c.retry_in_ms = s.retry_in_ms;
    c.pushed = s.pushed;
    c.push_total = s.push_total;
    c.rejected = s.rejected;
    c.pulled = s.pulled;
    c.pages = s.pages;
    c.cursor = s.cursor;
    c.pending = s.pending;
    c.error_code = s.last_error ? code_of(s.last_error->code) : FS_OK;
    if (s.last_error && c.error_code == FS_OK) c.error_code = FS_ERROR_INTERNAL;
    c.error_message = message;
    return c;
}

}  // namespace

FS_EXPORT fs_replicator* fs_replicator_new(fs_replica* replica, const fs_replicator_config* config,
                                           fs_error* out_error) noexcept {
    return guarded<fs_replicator*>(out_error, nullptr, [&]() -> fs_replicator* {
        if (!require(out_error, replica, "replica") || !require(out_error, config, "config"))
            return nullptr;
        if (auto url = fieldsync::parse_sync_url(config->options.url); !url) {
            set_error(out_error, FS_ERROR_INVALID_URL, url.error().message);
            return nullptr;
        }
        fieldsync::ReplicatorOptions options = config->options;
        if (config->status_callback) {
            options.on_status = [cb = config->status_callback, ctx = config->status_context](
                                    const fieldsync::ReplicatorStatus& s) {
                const std::string message = s.last_error ? s.last_error->message : std::string();
                const fs_replicator_status c = to_c(s, s.last_error ? message.c_str() : nullptr);
                cb(ctx->get(), &c);
            };
        }
        if (config->transport) {
            options.transport = [t = *config->transport, ctx = config->transport_context] {
                return std::unique_ptr<fieldsync::Transport>(std::make_unique<CTransport>(t, ctx));
            };
        }
        auto* handle = new fs_replicator;
        handle->replicator =
            std::make_unique<fieldsync::Replicator>(replica->replica, std::move(options));
        return handle;
    });
}

FS_EXPORT void fs_replicator_release(fs_replicator* replicator) noexcept {
    guarded_void([&] { delete replicator; });
}

FS_EXPORT void fs_replicator_start(fs_replicator* replicator) noexcept {
    if (!replicator) return;
    guarded_void([&] { replicator->replicator->start(); });
}

FS_EXPORT void fs_replicator_stop(fs_replicator* replicator) noexcept {
    if (!replicator) return;
    guarded_void([&] { replicator->replicator->stop(); });
}

FS_EXPORT bool fs_replicator_sync_once(fs_replicator* replicator, uint32_t timeout_ms,
                                       fs_error* out_error) noexcept {
    return guarded(out_error, false, [&] {
        if (!require(out_error, replicator, "replicator")) return false;
        auto st = replicator->replicator->sync_once(std::chrono::milliseconds(timeout_ms));
        if (!st) set_error(out_error, st.error());
        return st.ok();
    });
}

FS_EXPORT fs_replicator_status* fs_replicator_get_status(const fs_replicator* replicator) noexcept {
    if (!replicator) return nullptr;
    return guarded<fs_replicator_status*>(nullptr, nullptr, [&]() -> fs_replicator_status* {
        const auto s = replicator->replicator->status();
        const std::string message = s.last_error ? s.last_error->message : std::string();
        // One block: the struct, then its message (freed together by fs_replicator_status_free).
        void* block = std::malloc(sizeof(fs_replicator_status) + message.size() + 1);
        if (!block) return nullptr;
        char* text = static_cast<char*>(block) + sizeof(fs_replicator_status);
        std::memcpy(text, message.c_str(), message.size() + 1);
        auto* status = static_cast<fs_replicator_status*>(block);
        *status = to_c(s, s.last_error ? text : nullptr);
        return status;
    });
}

FS_EXPORT void fs_replicator_status_free(fs_replicator_status* status) noexcept {
    guarded_void([&] { std::free(status); });
}

}  // extern "C"
