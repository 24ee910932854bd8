// One device session of the sync service. Contract: sync_session.hpp; protocol: SPEC.md §4-§7.
#include "fieldsync/server/sync_session.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/server/store_worker.hpp"
#include "record_writes.hpp"

namespace fieldsync::server {

namespace p = fieldsync::protocol;
namespace json = boost::json;

namespace {

// WebSocket close codes (RFC 6455 §7.4.1).
constexpr std::uint16_t close_protocol_error = 1002;
constexpr std::uint16_t close_policy = 1008;
constexpr std::uint16_t close_internal = 1011;

SyncOutput reply(const p::Message& m) {
    SyncOutput out;
    out.frames.push_back(p::encode_message(m));
    return out;
}

SyncOutput error_reply(p::protocol_errc code, std::string message, bool fatal,
                       std::optional<std::uint64_t> ref = {}) {
    SyncOutput out = reply(p::make_error_message(p::Error{code, std::move(message)}, fatal, ref));
    if (fatal) {
        out.close = true;
        out.close_code = code == p::protocol_errc::unsupported_version ||
                                 code == p::protocol_errc::malformed ||
                                 code == p::protocol_errc::unexpected_message
                             ? close_protocol_error
                         : code == p::protocol_errc::internal ? close_internal
                                                              : close_policy;
        out.close_reason = p::to_string(code);
    }
    return out;
}

// Scope: assigned areas; administrators see every root of the area tree.
Result<Scope> scope_of(Store& store, const User& user) {
    Scope scope;
    if (user.role == Role::admin) {
        auto areas = store.list_areas();
        if (!areas) return areas.error();
        for (const auto& a : *areas)
            if (a.parent.empty()) scope.areas.push_back(a.code);
    } else {
        scope.areas = user.areas;
    }
    return scope;
}

SyncOutput store_failure(const p::Error& e) {
    return error_reply(p::protocol_errc::internal, "the server's store failed: " + e.message, true);
}

std::string scope_signature(const Scope& s) {
    std::vector<std::string> a = s.areas;
    std::sort(a.begin(), a.end());
    std::string out;
    for (const auto& x : a)
        out += x + "\n";
    return out;
}

// Entries (lww and review) whose dots the server has not seen: the writes this push introduces.
template <class F>
void for_each_new_entry(const p::RecordState& pushed, const p::VersionVector& known, F&& fn) {
    for (const auto& [name, state] : pushed.fields) {
        if (p::rule_of(state) == p::MergeRule::lww) {
            const auto& e = std::get<p::LwwState>(state).entry;
            if (!known.covers(e.dot)) fn(name, e);
        } else if (p::rule_of(state) == p::MergeRule::review) {
            for (const auto& e : std::get<p::ReviewState>(state).entries)
                if (!known.covers(e.dot)) fn(name, e);
        }
    }
}

// What a push may not do to writes the server already holds (SPEC.md §4.4): the authorship and
// clock checks look only at entries whose dots the server has not seen, so every entry of the
// joined state whose dot the server had seen must be the entry the server holds, every set dot
// it had seen must be one it holds for that element, and only the session's replica may raise a
// counter slot. Otherwise a device could rewrite an existing write under its old dot (another
// value, author or a far-future timestamp): the join prefers the greater timestamp, so the
// rewrite would win everywhere. One change is allowed: the session's own replica re-stamping its
// own entry (same dot, author and value; a timestamp within the clock bound), which a client
// does after a lost push_ack (SPEC.md §3.2 "Restamping"). Returns the problem, or nullopt.
std::optional<std::string> rewritten_write(const p::RecordState* before,
                                           const p::RecordState& joined,
                                           const p::VersionVector& known, const p::ReplicaId& own,
                                           const std::string& user, std::uint64_t max_wall_ms) {
    for (const auto& kv : joined.fields) {
        const std::string& name = kv.first;
        const p::FieldState& state = kv.second;
        const p::FieldState* old = nullptr;
        if (before) {
            auto it = before->fields.find(name);
            if (it != before->fields.end()) old = &it->second;
        }
        auto held = [&](const p::Entry& e) {
            if (!old) return false;
            if (const auto* l = std::get_if<p::LwwState>(old)) return l->entry == e;
            if (const auto* r = std::get_if<p::ReviewState>(old))
                return std::find(r->entries.begin(), r->entries.end(), e) != r->entries.end();
            return false;
        };
        auto restamped = [&](const p::Entry& e) {
            if (!old || e.dot.replica != own || e.by != user || e.ts.wall_ms() > max_wall_ms)
                return false;
            auto same_write = [&](const p::Entry& h) {
                return h.dot == e.dot && h.by == e.by && h.value == e.value;
            };
            if (const auto* l = std::get_if<p::LwwState>(old)) return same_write(l->entry);
            if (const auto* r = std::get_if<p::ReviewState>(old))
                return std::any_of(r->entries.begin(), r->entries.end(), same_write);
            return false;
        };
        auto rewritten = [&](const p::Dot& d) {
            return "field " + name + ": the state changes the write " + std::to_string(d.counter) +
                   "@" + d.replica.to_string() +
                   " that the server already holds; a push may add writes, never alter one";
        };
        switch (p::rule_of(state)) {
            case p::MergeRule::lww: {
                const auto& e = std::get<p::LwwState>(state).entry;
                if (known.covers(e.dot) && !held(e) && !restamped(e)) return rewritten(e.dot);
                break;
            }
            case p::MergeRule::review:
                for (const auto& e : std::get<p::ReviewState>(state).entries)
                    if (known.covers(e.dot) && !held(e) && !restamped(e)) return rewritten(e.dot);
                break;
            case p::MergeRule::set: {
                const auto* os = old ? std::get_if<p::SetState>(old) : nullptr;
                for (const auto& [element, dots] : std::get<p::SetState>(state).elements) {
                    for (const auto& d : dots) {
                        if (!known.covers(d)) continue;
                        bool ok = false;
                        if (os) {
                            auto it = os->elements.find(element);
                            ok = it != os->elements.end() &&
                                 std::find(it->second.begin(), it->second.end(), d) !=
                                     it->second.end();
                        }
                        if (!ok) return rewritten(d);
                    }
                }
                break;
            }
            case p::MergeRule::counter: {
                const auto* oc = old ? std::get_if<p::CounterState>(old) : nullptr;
                for (const auto& [replica, slot] : std::get<p::CounterState>(state).slots) {
                    if (replica == own) continue;
                    p::CounterState::Slot prev;
                    if (oc) {
                        if (auto it = oc->slots.find(replica); it != oc->slots.end())
                            prev = it->second;
                    }
                    if (slot.inc > prev.inc || slot.dec > prev.dec)
                        return "field " + name + ": the state raises the count of replica " +
                               replica.to_string() +
                               "; a device may only change its own replica's count";
                }
                break;
            }
        }
    }
    return std::nullopt;
}

}  // namespace

bool Scope::covers(std::string_view area) const noexcept {
    for (const auto& a : areas)
        if (p::area_contains(a, area)) return true;
    return false;
}

SyncSession::SyncSession(SyncContext& ctx, std::string peer)
    : m_ctx(ctx), m_peer(std::move(peer)) {}

p::Result<p::Message> SyncSession::decode(p::ByteView frame, const SyncLimits& session) {
    p::MessageLimits limits;
    limits.max_frame_bytes = session.max_frame_bytes;
    return p::decode_message(frame, limits);
}

SyncOutput SyncSession::handle(p::ByteView frame) {
    return handle(decode(frame, m_ctx.limits));
}

PreparedPush SyncSession::prepare(const p::Message& message, std::size_t max_batch,
                                  const p::Schema* schema, std::uint64_t schema_generation) {
    PreparedPush out;
    const auto* push = std::get_if<p::Push>(&message);
    // Nothing for a batch the session will refuse anyway (over max_batch): no work for it.
    if (!push || push->items.size() > max_batch) return out;
    out.items.reserve(push->items.size());
    for (const auto& item : push->items) {
        PreparedItem prepared{
            p::encode_record(item.record), change_summary_json(nullptr, item.record), {}, {}};
        if (schema && schema_generation != 0) {
            if (auto st = schema->validate_record(item.record); !st) {
                prepared.invalid = st.error().message;
            } else if (auto area = schema->area_of(item.record); !area) {
                prepared.invalid = area.error().message;
            } else {
                prepared.area = std::move(*area);
            }
        }
        out.items.push_back(std::move(prepared));
    }
    if (schema) out.schema_generation = schema_generation;
    return out;
}

SyncOutput SyncSession::handle(p::Result<p::Message>&& decoded, PreparedPush&& prepared) {
    if (!decoded) {
        // Before hello nothing is trusted: a bad first frame ends the connection.
        return error_reply(decoded.error().code == p::protocol_errc::limit_exceeded
                               ? p::protocol_errc::limit_exceeded
                               : static_cast<p::protocol_errc>(decoded.error().code.value()),
                           decoded.error().message, !authenticated());
    }
    p::Message& m = *decoded;
    if (auto* h = std::get_if<p::Hello>(&m)) {
        if (authenticated())
            return error_reply(p::protocol_errc::unexpected_message,
                               "hello: this session is already authenticated", false);
        return on_hello(*h);
    }
    if (!authenticated()) {
        return error_reply(
            p::protocol_errc::unauthenticated,
            std::string(p::message_type(m)) + ": the first message of a session must be hello",
            true);
    }
    if (auto* push = std::get_if<p::Push>(&m)) {
        SyncOutput out = on_push(*push, prepared);
        // New records' states are still in the message, their encodings and summaries in
        // `prepared`: freed by whoever delivers `out` (see SyncOutput::retired).
        out.retired = std::move(m);
        out.retired_prepared = std::move(prepared);
        return out;
    }
    if (auto* pull = std::get_if<p::Pull>(&m)) return on_pull(*pull);
    if (std::holds_alternative<p::DigestRequest>(m)) return on_digest();
    if (std::holds_alternative<p::ErrorMessage>(m))
        return {};  // the device's complaint: logged by net
    return error_reply(p::protocol_errc::unexpected_message,
                       std::string(p::message_type(m)) + ": a client does not send this message",
                       false);
}

SyncOutput SyncSession::on_hello(const p::Hello& h) {
    Store& store = *m_ctx.store;
    const std::uint64_t now = m_ctx.now_ms();
    auto version = p::negotiate_version(h);  // SPEC.md §8.1
    if (!version)
        return error_reply(p::protocol_errc::unsupported_version,
                           "hello: " + version.error().message, true);
    // Authenticate.
    std::optional<User> user;
    std::optional<std::string> new_token;
    bool password_login = false;
    if (const auto* pw = std::get_if<p::PasswordAuth>(&h.auth)) {
        const std::string key = "user:" + pw->user;
        const std::string peer_key = "peer:" + m_peer;
        if (m_ctx.throttle && (!m_ctx.throttle->allow(key, static_cast<std::int64_t>(now)) ||
                               !m_ctx.throttle->allow(peer_key, static_cast<std::int64_t>(now)))) {
            return error_reply(p::protocol_errc::busy,
                               "hello.auth: too many failed logins; wait a few minutes and retry",
                               true);
        }
        auto u = store.user_by_name(pw->user);
        if (!u) return store_failure(u.error());
        // An unknown user costs the same PBKDF2 work as a wrong password, so response times
        // do not tell which user names exist.
        static const std::string dummy_hash = hash_password("fieldsync-dummy-password");
        const bool valid = *u ? verify_password(pw->password, (*u)->password_hash)
                              : (verify_password(pw->password, dummy_hash), false);
        if (!valid) {
            if (m_ctx.throttle) {
                m_ctx.throttle->record_failure(key, static_cast<std::int64_t>(now));
                m_ctx.throttle->record_failure(peer_key, static_cast<std::int64_t>(now));
            }
            return error_reply(p::protocol_errc::unauthenticated,
                               "hello.auth: wrong user name or password", true);
        }
        if (m_ctx.throttle) m_ctx.throttle->record_success(key);
        user = **u;
        password_login = true;  // a session token is issued below, once nothing refuses the hello
    } else {
        const auto& tk = std::get<p::TokenAuth>(h.auth);
        auto t = store.token(token_hash(tk.token));
        if (!t) return store_failure(t.error());
        if (!*t || (*t)->revoked || (*t)->expires_at_ms <= static_cast<std::int64_t>(now)) {
            return error_reply(p::protocol_errc::unauthenticated,
                               "hello.auth.token: the token is unknown, expired or revoked; "
                               "log in with user name and password",
                               true);
        }
        auto u = store.user_by_id((*t)->user_id);
        if (!u) return store_failure(u.error());
        if (!*u)
            return error_reply(p::protocol_errc::unauthenticated,
                               "hello.auth.token: the token's user no longer exists", true);
        user = **u;
    }
    if (user->disabled) {
        return error_reply(
            p::protocol_errc::unauthenticated,
            "hello.auth: the account " + user->name + " is disabled; ask an administrator", true);
    }
    // Bind the device to its replica id.
    const std::string device_id = h.device.to_string();
    if (h.device.is_nil() || h.replica.is_nil()) {
        return error_reply(p::protocol_errc::invalid_value,
                           "hello: device and replica ids must not be all zeros", true);
    }
    if (h.replica == store.server_replica()) {
        return error_reply(p::protocol_errc::replica_conflict,
                           "hello.replica: " + h.replica.to_string() +
                               " is the server's own replica id; a device must use its own "
                               "(reset the app's database to get a new one)",
                           true);
    }
    auto by_replica = store.device_by_replica(h.replica);
    if (!by_replica) return store_failure(by_replica.error());
    if (*by_replica && (*by_replica)->id != device_id) {
        return error_reply(p::protocol_errc::replica_conflict,
                           "hello.replica: replica " + h.replica.to_string() +
                               " belongs to another device; a replica id must never be copied "
                               "between devices (reset the app's database to get a new one)",
                           true);
    }
    auto existing = store.device(device_id);
    if (!existing) return store_failure(existing.error());
    Device dev = existing->value_or(Device{});
    const std::string previous_signature = dev.scope_signature;
    dev.id = device_id;
    dev.replica = h.replica;
    dev.user_id = user->id;
    dev.app_version = h.app;
    dev.last_seen_ms = static_cast<std::int64_t>(now);

    auto scope_or = scope_of(store, *user);
    if (!scope_or) return store_failure(scope_or.error());
    const Scope scope = std::move(*scope_or);
    // The device's recorded scope changes only when it finishes a pull under the new one
    // (on_pull): a replayed or interrupted hello must not swallow the re-bootstrap notice.
    m_scope_signature = scope_signature(scope);
    if (dev.scope_signature.empty()) dev.scope_signature = m_scope_signature;  // first session
    if (auto st = store.put_device(dev); !st) return store_failure(st.error());
    if (password_login) {
        // Only now: a refused hello (disabled account, bad or stolen replica id) stores nothing.
        Token t;
        std::string token = fieldsync::server::new_token();
        t.token_hash = token_hash(token);
        t.user_id = user->id;
        t.created_at_ms = static_cast<std::int64_t>(now);
        t.expires_at_ms = static_cast<std::int64_t>(now) + m_ctx.limits.token_lifetime_ms;
        if (auto st = store.put_token(t); !st) return store_failure(st.error());
        new_token = token;
    }

    m_user = user;
    m_scope = scope;
    m_device_id = device_id;
    m_replica = h.replica;
    m_cursor = h.cursor;

    p::Welcome w;
    w.version = *version;
    w.user = user->name;
    w.role = to_string(user->role);
    w.scope = scope.areas;
    w.schema_version = m_ctx.schema->version();
    if (h.schema_version != m_ctx.schema->version()) w.schema = m_ctx.schema->to_json();
    w.server_time = now;
    w.token = new_token;
    w.limits.max_frame = m_ctx.limits.max_frame_bytes;
    w.limits.max_batch = m_ctx.limits.max_batch;
    SyncOutput out = reply(w);
    out.wrote = true;

    // A device whose cursor predates the tombstone purge, or is ahead of this server (restored
    // from a backup), or whose areas shrank, must re-bootstrap (SPEC.md §6.2).
    auto purge = store.purge_seq();
    auto last = store.last_seq();
    if (!purge || !last) return store_failure(!purge ? purge.error() : last.error());
    std::string why;
    if (h.cursor != 0 && h.cursor < *purge)
        why = "your cursor " + std::to_string(h.cursor) +
              " is older than the tombstone purge point " + std::to_string(*purge);
    else if (h.cursor > *last)
        why = "your cursor " + std::to_string(h.cursor) + " is ahead of this server's sequence " +
              std::to_string(*last) + " (was the server restored from a backup?)";
    else if (!previous_signature.empty() && previous_signature != m_scope_signature)
        why = "your assigned areas changed";
    m_scope_settled = why.empty();
    if (!why.empty()) {
        m_cursor = 0;
        out.frames.push_back(p::encode_message(p::make_error_message(
            p::Error{p::protocol_errc::rebootstrap_required,
                     why + ": push pending changes, then pull your scope again from cursor 0"},
            false)));
    }
    return out;
}

SyncOutput SyncSession::on_push(p::Push& push, PreparedPush& prepared) {
    Store& store = *m_ctx.store;
    const std::uint64_t now = m_ctx.now_ms();
    if (push.items.size() > m_ctx.limits.max_batch) {
        return error_reply(p::protocol_errc::limit_exceeded,
                           "push.items: " + std::to_string(push.items.size()) +
                               " items exceed this server's max_batch of " +
                               std::to_string(m_ctx.limits.max_batch) + "; split the batch",
                           false, push.batch);
    }
    if (m_ctx.stats) m_ctx.stats->pushes++;
    p::PushAck ack;
    ack.batch = push.batch;
    SyncOutput out;
    std::uint64_t applied = 0;  // accepted items that changed the store (replays do not count)
    for (std::size_t i = 0; i < push.items.size(); ++i) {
        const std::string where = "push.items[" + std::to_string(i) + "]";
        if (auto st = store.savepoint(); !st) return store_failure(st.error());
        auto result =
            apply_item(push.items[i],
                       prepared.items.size() == push.items.size() ? &prepared.items[i] : nullptr,
                       prepared.schema_generation, where, now);
        if (!result) {
            store.rollback_savepoint();
            if (result.error().code == p::protocol_errc::internal)
                return store_failure(result.error());
            ack.results.push_back(p::ItemResult{
                false, p::to_string(static_cast<p::protocol_errc>(result.error().code.value())),
                result.error().message});
            if (m_ctx.stats) m_ctx.stats->items_rejected++;
            continue;
        }
        if (auto st = store.release_savepoint(); !st) {
            store.rollback_savepoint();  // no savepoint may outlive the item (store.hpp)
            return store_failure(st.error());
        }
        out.wrote = out.wrote || *result;
        if (*result) ++applied;
        ack.results.push_back(p::ItemResult{true, {}, {}});
        if (m_ctx.stats) m_ctx.stats->items_accepted++;
    }
    // The devices view counts the records each device brought in; it commits with the items.
    if (applied > 0) {
        if (auto st = store.note_device_push(m_device_id, applied, static_cast<std::int64_t>(now));
            !st)
            return store_failure(st.error());
    }
    auto last = store.last_seq();
    if (!last) return store_failure(last.error());
    ack.cursor = *last;
    ack.server_time = now;
    out.frames.push_back(p::encode_message(ack));
    return out;
}

Status SyncSession::append_audit(std::uint64_t seq, std::uint64_t now, const p::RecordState& rec,
                                 std::string& summary) {
    AuditEntry a;
    a.seq = seq;
    a.at_ms = static_cast<std::int64_t>(now);
    a.user = m_user->name;
    a.device = m_device_id;
    a.collection = rec.collection;
    a.id = rec.id;
    a.summary = std::move(summary);
    auto appended = m_ctx.store->append_audit(a);
    summary = std::move(a.summary);  // back to its owner (a prepared one: its I/O thread)
    return appended;
}

std::optional<p::Error> SyncSession::check_introduced(const p::RecordState& rec,
                                                      const p::VersionVector& known,
                                                      std::uint64_t now) {
    // A device introduces only its own writes (SPEC.md §4.4): every dot the server has not seen
    // must be the session's replica's, and carry the session's user as author.
    for (const auto& [replica, counter] : rec.context.entries()) {
        if (counter > known.get(replica) && replica != m_replica) {
            return p::Error{p::protocol_errc::forbidden,
                            "the state carries writes of replica " + replica.to_string() +
                                " that the server has not seen; a device may only introduce "
                                "writes of its own replica " +
                                m_replica.to_string()};
        }
    }
    std::optional<p::Error> bad;
    std::uint64_t newest = 0;
    for_each_new_entry(rec, known, [&](const std::string& field, const p::Entry& e) {
        if (bad) return;
        if (e.by != m_user->name) {
            bad = p::Error{p::protocol_errc::forbidden,
                           "field " + field + ": a new write is signed by \"" + e.by +
                               "\", but this session is " + m_user->name};
        }
        newest = std::max(newest, e.ts.wall_ms());
    });
    if (bad) return bad;
    if (newest > now + m_ctx.limits.max_clock_ahead_ms) {
        return p::Error{p::protocol_errc::clock_drift,
                        "a write is stamped " + std::to_string(newest - now) +
                            " ms ahead of the server's clock (server time " + std::to_string(now) +
                            " ms); correct the device clock and restamp pending writes"};
    }
    if (newest > 0) (void)m_ctx.clock->observe(p::HlcTimestamp::from_parts(newest, 0));
    return std::nullopt;
}

Result<bool> SyncSession::apply_item(const p::PushItem& item, PreparedItem* prepared,
                                     std::uint64_t prepared_generation, const std::string& where,
                                     std::uint64_t now) {
    Store& store = *m_ctx.store;
    const p::Schema& schema = *m_ctx.schema;
    const p::RecordState& rec = item.record;
    // Spelled out only for an error: this runs for every pushed record.
    auto name = [&rec] { return rec.collection + "/" + rec.id.to_string(); };
    auto reject = [&](p::protocol_errc code, const std::string& msg) -> Result<bool> {
        return Error{code, where + " (" + name() + "): " + msg};
    };
    if (item.schema_version == 0 || item.schema_version > schema.version()) {
        return reject(p::protocol_errc::unsupported_version,
                      "written under schema version " + std::to_string(item.schema_version) +
                          ", but this server knows versions up to " +
                          std::to_string(schema.version()) + "; sync after the server is updated");
    }
    if (item.schema_version < m_ctx.limits.oldest_schema_version) {
        return reject(p::protocol_errc::unsupported_version,
                      "schema version " + std::to_string(item.schema_version) +
                          " is no longer accepted (oldest: " +
                          std::to_string(m_ctx.limits.oldest_schema_version) + "); update the app");
    }
    // Validated on the I/O thread when it had this very schema (prepare); else here.
    std::string area;
    if (prepared && prepared_generation != 0 && prepared_generation == m_ctx.schema_generation) {
        if (!prepared->invalid.empty())
            return reject(p::protocol_errc::validation_failed, prepared->invalid);
        area = prepared->area;  // a copy: the I/O thread's string is freed there (retired)
    } else {
        if (auto st = schema.validate_record(rec); !st)
            return reject(p::protocol_errc::validation_failed, st.error().message);
        auto a = schema.area_of(rec);
        if (!a) return reject(p::protocol_errc::validation_failed, a.error().message);
        area = std::move(*a);
    }

    // Most pushed records are new. One that passes every check a new record must pass is
    // inserted without reading first (insert_record takes nothing when the id exists); when
    // the id exists, or a check fails, the general path below reads the stored record and
    // decides with it. (A new record without competing values has no conflicts to reconcile:
    // see below.) The price: a device's edit of a record it created itself passes these
    // checks too, and pays one insert that finds the id before the read.
    if (prepared && !prepared->encoded.empty() && m_scope.covers(area) && rec.conflicts().empty() &&
        !check_introduced(rec, p::VersionVector{}, now) &&
        !rewritten_write(nullptr, rec, p::VersionVector{}, m_replica, m_user->name,
                         now + m_ctx.limits.max_clock_ahead_ms)) {
        RecordWrite w;
        w.collection = rec.collection;
        w.id = rec.id;
        w.area = area;
        w.schema_version = static_cast<std::uint32_t>(item.schema_version);
        w.deleted = rec.is_deleted();
        w.at_ms = static_cast<std::int64_t>(now);
        w.state = std::move(prepared->encoded);
        auto seq = store.insert_record(w);
        prepared->encoded = std::move(w.state);  // freed by the I/O thread that made it
        if (!seq) return Error{p::protocol_errc::internal, seq.error().message};
        if (*seq != 0) {
            if (auto st = append_audit(*seq, now, rec, prepared->created_summary); !st)
                return Error{p::protocol_errc::internal, st.error().message};
            m_ctx.touched_areas.push_back(std::move(area));
            if (m_ctx.stats) m_ctx.stats->merges++;
            return true;
        }
    }

    auto stored = store.get_record(rec.collection, rec.id);
    if (!stored) return Error{p::protocol_errc::internal, stored.error().message};
    std::optional<p::RecordState> before;
    // Scope (SPEC.md §6.1): a new record must lie in the user's areas; an existing one must lie
    // there before and after the merge. The pushed state's own area is not what counts: the
    // device may hold a stale copy of a record that a supervisor moved into its areas.
    if (!*stored && !m_scope.covers(area))
        return reject(p::protocol_errc::forbidden,
                      "area " + area + " is outside your assigned areas");
    if (*stored) {
        if (!m_scope.covers((*stored)->area))
            return reject(
                p::protocol_errc::forbidden,
                "the record belongs to area " + (*stored)->area + ", outside your assigned areas");
        auto decoded = p::decode_record((*stored)->state);
        if (!decoded)
            return Error{p::protocol_errc::internal,
                         "stored state of " + name() + " is corrupt: " + decoded.error().message};
        before = std::move(*decoded);
    }
    const p::VersionVector known = before ? before->context : p::VersionVector{};
    if (auto bad = check_introduced(rec, known, now))
        return reject(static_cast<p::protocol_errc>(bad->code.value()), bad->message);

    // A new record is the pushed state itself, neither copied nor moved: it stays in the push,
    // which the I/O thread frees (SyncOutput::retired), not this one.
    p::RecordState merged;
    if (before) {
        merged = *before;
        if (auto st = merged.join(rec); !st)
            return reject(p::protocol_errc::invalid_value, st.error().message);
    }
    const p::RecordState& joined = before ? merged : rec;
    if (auto why = rewritten_write(before ? &*before : nullptr, joined, known, m_replica,
                                   m_user->name, now + m_ctx.limits.max_clock_ahead_ms))
        return reject(p::protocol_errc::forbidden, *why);
    // A new record is the pushed state: its encoding was made before the worker got it.
    p::Bytes bytes = !before && prepared ? std::move(prepared->encoded) : p::encode_record(joined);
    if (*stored && (*stored)->state == bytes) return false;  // replay: nothing new (L3)

    // A new record's area is the pushed state's, found above.
    auto new_area = before ? schema.area_of(joined) : Result<std::string>(std::move(area));
    if (!new_area) return reject(p::protocol_errc::validation_failed, new_area.error().message);
    if (!m_scope.covers(*new_area))
        return reject(p::protocol_errc::forbidden, "after merging, the record's area is " +
                                                       *new_area + ", outside your assigned areas");
    RecordWrite w;
    w.collection = joined.collection;
    w.id = joined.id;
    w.area = *new_area;
    w.schema_version = static_cast<std::uint32_t>(item.schema_version);
    w.deleted = joined.is_deleted();
    w.at_ms = static_cast<std::int64_t>(now);
    w.state = std::move(bytes);
    w.current_area = *stored ? (*stored)->area : std::string();  // read above, same transaction
    auto seq = store.put_record(w);
    // The encoding goes back to `prepared`, to be freed by the I/O thread that made it.
    if (!before && prepared) prepared->encoded = std::move(w.state);
    if (!seq) return Error{p::protocol_errc::internal, seq.error().message};

    std::string changed;
    std::string& summary =
        !before && prepared ? prepared->created_summary
                            : (changed = change_summary_json(before ? &*before : nullptr, joined));
    if (auto st = append_audit(*seq, now, joined, summary); !st)
        return Error{p::protocol_errc::internal, st.error().message};

    // A record that did not exist has no open conflicts (Store::purge_tombstones closes a
    // purged tombstone's), so a new record without competing values has nothing to reconcile.
    if (*stored || !joined.conflicts().empty()) {
        if (auto st = reconcile(joined, *new_area, m_user->name, now); !st)
            return Error{p::protocol_errc::internal, st.error().message};
    }
    m_ctx.touched_areas.push_back(*new_area);
    if (*stored && (*stored)->area != *new_area) m_ctx.touched_areas.push_back((*stored)->area);
    if (m_ctx.stats) m_ctx.stats->merges++;
    return true;
}

Status SyncSession::reconcile(const p::RecordState& joined, const std::string& area,
                              const std::string& by, std::uint64_t now) {
    std::vector<Store::OpenField> open;
    for (const auto& field : joined.conflicts()) {
        auto v = joined.view(field);
        open.push_back({field, competing_values_json(*v)});
    }
    auto r = m_ctx.store->reconcile_conflicts(joined.collection, joined.id, area, open, by,
                                              "resolved by a later write from a device",
                                              static_cast<std::int64_t>(now), "");
    if (!r) return r.error();
    return {};
}

SyncOutput SyncSession::on_pull(const p::Pull& pull) {
    Store& store = *m_ctx.store;
    if (m_ctx.stats) m_ctx.stats->pulls++;
    auto purge = store.purge_seq();
    if (!purge) return store_failure(purge.error());
    if (pull.since != 0 && pull.since < *purge) {
        return error_reply(p::protocol_errc::rebootstrap_required,
                           "pull.since: cursor " + std::to_string(pull.since) +
                               " is older than the tombstone purge point " +
                               std::to_string(*purge) +
                               ": push pending changes, then pull again from cursor 0",
                           false);
    }
    if (pull.since == 0) m_scope_settled = true;  // a full pull: the re-bootstrap is under way
    const std::size_t limit =
        static_cast<std::size_t>(std::clamp<std::uint64_t>(pull.limit, 1, m_ctx.limits.max_page));
    SyncOutput out;
    auto page = page_since(pull.since, limit, out, /*live=*/false);
    if (!page) return store_failure(page.error());
    m_cursor = page->first;
    m_live = !page->second;
    // Remember how far the device was served, for the devices view.
    auto dev = store.device(m_device_id);
    if (dev && *dev) {
        Device d = **dev;
        d.last_cursor = m_cursor;
        // Caught up under this scope, and (if it changed) after a pull from cursor 0.
        if (m_live && m_scope_settled) d.scope_signature = m_scope_signature;
        d.last_seen_ms = static_cast<std::int64_t>(m_ctx.now_ms());
        if (store.put_device(d)) out.wrote = true;
    }
    return out;
}

// Appends revoke (first: a record that moved out and back in must end present) and then
// changes/notify frames for one page after `since`. Returns (next cursor, more).
Result<std::pair<std::uint64_t, bool>> SyncSession::page_since(std::uint64_t since,
                                                               std::size_t limit, SyncOutput& out,
                                                               bool live) {
    auto page = m_ctx.store->changes(since, m_scope, limit);
    if (!page) return page.error();
    if (!page->moves_out.empty()) {
        p::Revoke rv;
        rv.cursor = page->next_cursor;
        for (const auto& mv : page->moves_out)
            rv.records.push_back({mv.collection, mv.id});
        out.frames.push_back(p::encode_message(rv));
    }
    std::vector<p::ChangeItem> items;
    items.reserve(page->records.size());
    for (auto& r : page->records) {
        // Stored states are canonical encodings (put_record stores encode_record's bytes):
        // they go out as they are, without a decode and an encode per record.
        // A cheap check that the bytes are one whole CBOR item (a full decode per record is
        // what this path saves): a damaged row fails here, named, not on every tablet.
        p::CborReader check(r.state);
        if (r.state.empty() || !check.skip() || !check.at_end())
            return Error{p::protocol_errc::internal, "stored state of " + r.collection + "/" +
                                                         r.id.to_string() +
                                                         " is corrupt (not one CBOR item); "
                                                         "restore the store from a backup "
                                                         "(docs/operations.md, \"Backups\")"};
        p::ChangeItem item;
        item.seq = r.seq;
        item.schema_version = r.schema_version;
        item.encoded_record = std::move(r.state);
        items.push_back(std::move(item));
    }
    if (live) {
        if (!items.empty() || page->next_cursor != since) {
            p::Notify n;
            n.since = since;
            n.cursor = page->next_cursor;
            n.items = std::move(items);
            out.frames.push_back(p::encode_message(n));
        }
    } else {
        p::Changes c;
        c.since = since;
        c.cursor = page->next_cursor;
        c.more = page->more;
        c.items = std::move(items);
        out.frames.push_back(p::encode_message(c));
    }
    return std::make_pair(page->next_cursor, page->more);
}

SyncOutput SyncSession::recheck_user() {
    if (!m_user) return {};
    Store& store = *m_ctx.store;
    const std::string name = m_user->name;
    auto fresh = store.user_by_name(name);
    if (!fresh) return store_failure(fresh.error());
    if (!*fresh || (*fresh)->disabled) {
        m_live = false;
        return error_reply(p::protocol_errc::unauthenticated,
                           "the account " + name +
                               " was disabled while this session was open; ask an administrator",
                           true);
    }
    if ((*fresh)->password_hash != m_user->password_hash) {
        m_live = false;
        return error_reply(p::protocol_errc::unauthenticated,
                           "the password of " + name +
                               " was changed, which ended its sessions; sign in again with the "
                               "new password",
                           true);
    }
    auto scope = scope_of(store, **fresh);
    if (!scope) return store_failure(scope.error());
    m_user = *fresh;
    if (scope_signature(*scope) == scope_signature(m_scope)) return {};
    m_live = false;
    return error_reply(p::protocol_errc::rebootstrap_required,
                       "the assigned areas of " + name +
                           " changed while this session was open: reconnect, push pending "
                           "changes, then pull your scope again from cursor 0",
                       true);
}

SyncOutput SyncSession::catch_up() {
    SyncOutput out;
    if (!m_live) return out;
    for (int guard = 0; guard < 1000; ++guard) {
        auto page = page_since(m_cursor, m_ctx.limits.max_page, out, /*live=*/true);
        if (!page) return store_failure(page.error());
        m_cursor = page->first;
        if (!page->second) break;
    }
    return out;
}

SyncOutput SyncSession::on_digest() {
    p::ScopeDigest digest;
    Store& store = *m_ctx.store;
    auto last = store.last_seq();
    if (!last) return store_failure(last.error());
    auto st = store.for_each_record(m_scope, "", [&](const StoredRecord& r) {
        digest.add(p::sha256(r.state));
        return true;
    });
    if (!st) return store_failure(st.error());
    p::Digest d;
    d.cursor = *last;
    d.count = digest.count();
    d.digest = digest.value();
    return reply(d);
}

}  // namespace fieldsync::server
