// End to end against the real fieldsync-server process, speaking the sync protocol message by
// message (protocol/SPEC.md) over the SDK's public WebSocket transport on 127.0.0.1 (port 0).
//
// No test here goes through the SDK's replicator: each builds hello, push and pull itself with
// the protocol library, and checks what the server answers, frame by frame. The HTTP API
// (docs/api.md) plays the supervisor and the administrator; the server's SQLite file is read
// (read-only) only to count audit rows and change-feed entries.
//
// Every wait is bounded (wait_limit per message); a test that would hang fails instead.
#include <sqlite3.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <regex>
#include <set>

#include "e2e_support.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/transport.hpp"

using namespace e2e;
namespace p = fieldsync::protocol;

namespace {

const std::string longhuqu = "ordos/ejin-horo/altan-xire/longhuqu";
const std::string hashatu = "ordos/ejin-horo/altan-xire/hashatu";
const std::string shengli = "ordos/hanggin/xini/shengli";
const std::string bayan = "ordos/dalad/zhandanzhao/bayan";

/// The longest wait for any one message, connection or close.
constexpr std::chrono::milliseconds wait_limit = 20s;

std::uint64_t now_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

p::Id128 random_id() {
    static std::mt19937_64 rng{std::random_device{}()};
    p::Id128 id;
    for (auto& b : id.bytes)
        b = static_cast<std::uint8_t>(rng());
    return id;
}

std::string describe(const p::Message& m) {
    std::string s(p::message_type(m));
    if (const auto* e = std::get_if<p::ErrorMessage>(&m)) s += " " + e->code + ": " + e->message;
    if (const auto* c = std::get_if<p::Changes>(&m))
        s += " with " + std::to_string(c->items.size()) + " items";
    if (const auto* n = std::get_if<p::Notify>(&m))
        s += " with " + std::to_string(n->items.size()) + " items";
    return s;
}

bool same_bytes(const p::RecordState& a, const p::RecordState& b) {
    return p::encode_record(a) == p::encode_record(b);
}

// ---------------------------------------------------------------------------------------------
// One WebSocket connection through fieldsync::make_websocket_transport.

/// The transport's delegate: queues what arrives (decoded) for the test's thread.
struct Inbox final : fieldsync::TransportDelegate {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    std::deque<p::Message> messages;
    std::vector<std::string> undecodable;
    std::optional<fieldsync::TransportClose> closed;

    void on_open() override {
        std::lock_guard lock(mutex);
        open = true;
        cv.notify_all();
    }
    void on_frame(p::ByteView frame) override {
        auto m = p::decode_message(frame);
        std::lock_guard lock(mutex);
        if (m)
            messages.push_back(std::move(*m));
        else
            undecodable.push_back(m.error().message);
        cv.notify_all();
    }
    void on_closed(const fieldsync::TransportClose& c) override {
        std::lock_guard lock(mutex);
        closed = c;
        cv.notify_all();
    }
};

class Connection {
public:
    explicit Connection(const std::string& url) : m_inbox(std::make_shared<Inbox>()) {
        fieldsync::WebSocketOptions options;
        options.connect_timeout_ms = 10'000;
        m_transport = fieldsync::make_websocket_transport(options);
        m_transport->connect(url, {}, m_inbox);
        std::unique_lock lock(m_inbox->mutex);
        const bool done = m_inbox->cv.wait_for(lock, wait_limit,
                                               [&] { return m_inbox->open || m_inbox->closed; });
        REQUIRE_MESSAGE(done, "no WebSocket to " << url << " within the wait limit");
        REQUIRE_MESSAGE(m_inbox->open,
                        "cannot connect to " << url << ": " << m_inbox->closed->error.message);
    }

    void send(const p::Message& m) { m_transport->send(p::encode_message(m)); }

    /// The next message; nullopt when the connection closed (or nothing came within `timeout`).
    std::optional<p::Message> next(std::chrono::milliseconds timeout = wait_limit) {
        std::unique_lock lock(m_inbox->mutex);
        m_inbox->cv.wait_for(lock, timeout, [&] {
            return !m_inbox->messages.empty() || !m_inbox->undecodable.empty() || m_inbox->closed;
        });
        REQUIRE_MESSAGE(m_inbox->undecodable.empty(), "the server sent a frame we cannot decode: "
                                                          << m_inbox->undecodable.front());
        if (m_inbox->messages.empty()) return std::nullopt;
        p::Message m = std::move(m_inbox->messages.front());
        m_inbox->messages.pop_front();
        return m;
    }

    /// The next message, which must be a T.
    template <class T>
    T expect(const std::string& what) {
        auto m = next();
        REQUIRE_MESSAGE(m.has_value(), "expected " << what << ", but " << state());
        auto* t = std::get_if<T>(&*m);
        REQUIRE_MESSAGE(t != nullptr, "expected " << what << ", got " << describe(*m));
        return std::move(*t);
    }

    /// Waits for the end of the connection (messages still queued are left alone).
    fieldsync::TransportClose wait_closed() {
        std::unique_lock lock(m_inbox->mutex);
        const bool closed =
            m_inbox->cv.wait_for(lock, wait_limit, [&] { return m_inbox->closed.has_value(); });
        REQUIRE_MESSAGE(closed, "the connection did not close within the wait limit");
        return *m_inbox->closed;
    }

    /// An orderly close from our side.
    void close() {
        m_transport->close(1000, "done");
        (void)wait_closed();
    }

    std::string state() {
        std::lock_guard lock(m_inbox->mutex);
        if (!m_inbox->closed) return "nothing arrived within the wait limit";
        return "the connection closed with " + std::to_string(m_inbox->closed->code) + " \"" +
               m_inbox->closed->reason + "\" " + m_inbox->closed->error.message;
    }

private:
    std::shared_ptr<Inbox> m_inbox;
    std::unique_ptr<fieldsync::Transport> m_transport;
};

// ---------------------------------------------------------------------------------------------
// A tablet, as the protocol sees it: a device id, a replica id, a user, a token and a cursor.

/// A pull's reply: the revokes that preceded the page, and the page.
struct Page {
    std::vector<p::Revoke> revokes;
    p::Changes changes;
};

/// Everything a pull from a cursor to the end brought.
struct Pulled {
    std::vector<p::ChangeItem> items;   // of every page, in order
    std::vector<p::RecordRef> revoked;  // of every page, in order
    std::vector<Page> pages;
};

class Device {
public:
    Device(const Server& server, std::string user)
        : m_url(server.url()), m_user(std::move(user)), m_password(server.password(m_user)) {}
    Device(std::string url, std::string user, std::string password)
        : m_url(std::move(url)), m_user(std::move(user)), m_password(std::move(password)) {}

    std::string token;         ///< from the first welcome; used by every later connect()
    std::uint64_t cursor = 0;  ///< the pull cursor this device stored
    std::uint64_t schema = 0;  ///< the schema version it holds
    int pushes_sent = 0, pulls_sent = 0;

    const std::string& user() const { return m_user; }
    std::string device_id() const { return m_device.to_string(); }
    void set_url(std::string url) { m_url = std::move(url); }

    p::Hello hello(p::Auth auth) const {
        p::Hello h;
        h.device = m_device;
        h.replica = m_replica;
        h.app = "e2e-server-test/1";
        h.auth = std::move(auth);
        h.schema_version = schema;
        h.cursor = cursor;
        h.clock = now_ms();
        return h;
    }
    p::Auth password_auth() const { return p::PasswordAuth{m_user, m_password}; }

    /// A new connection and hello: with the token once the device has one, else the password.
    p::Welcome connect() {
        m_aside.clear();
        m_conn = std::make_unique<Connection>(m_url);
        m_conn->send(hello(token.empty() ? password_auth() : p::Auth{p::TokenAuth{token}}));
        auto w = m_conn->expect<p::Welcome>("welcome");
        if (w.token) token = *w.token;
        schema = w.schema_version;
        return w;
    }
    Connection& conn() {
        REQUIRE(m_conn);
        return *m_conn;
    }
    void disconnect() {
        if (m_conn) m_conn->close();
        m_conn.reset();
    }
    /// Drops the connection without a close handshake (the transport aborts).
    void drop() { m_conn.reset(); }

    p::Push make_push(const std::vector<p::RecordState>& records) {
        p::Push push;
        push.batch = m_next_batch++;
        for (const auto& r : records)
            push.items.push_back(p::PushItem{schema, r});
        return push;
    }
    /// The next reply of type T. A live session may be sent notify and revoke at any time (its
    /// own pushes come back as notify too): those that arrive first are set aside for
    /// expect_unasked(), in order.
    template <class T>
    T reply(const std::string& what) {
        for (int guard = 0; guard < 1000; ++guard) {
            auto m = conn().next();
            REQUIRE_MESSAGE(m.has_value(), "expected " << what << ", but " << conn().state());
            if (auto* t = std::get_if<T>(&*m)) return std::move(*t);
            REQUIRE_MESSAGE(
                (std::holds_alternative<p::Notify>(*m) || std::holds_alternative<p::Revoke>(*m)),
                "expected " << what << ", got " << describe(*m));
            m_aside.push_back(std::move(*m));
        }
        FAIL("more than 1000 messages before " << what);
        return T{};
    }
    /// The next message the server sent without being asked (notify, revoke), which must be a T.
    template <class T>
    T expect_unasked(const std::string& what) {
        if (m_aside.empty()) return conn().expect<T>(what);
        p::Message m = std::move(m_aside.front());
        m_aside.pop_front();
        auto* t = std::get_if<T>(&m);
        REQUIRE_MESSAGE(t != nullptr, "expected " << what << ", got " << describe(m));
        return std::move(*t);
    }

    /// Sends a push and returns its push_ack.
    p::PushAck push(const p::Push& push) {
        conn().send(push);
        ++pushes_sent;
        auto ack = reply<p::PushAck>("push_ack");
        CHECK(ack.batch == push.batch);
        REQUIRE(ack.results.size() == push.items.size());
        return ack;
    }
    p::PushAck push(const std::vector<p::RecordState>& records) { return push(make_push(records)); }

    /// One pull from `since`: the revokes before the page, then the page. Strict: a notify
    /// here (the session was live and something changed) fails the test.
    Page pull_page(std::uint64_t since, std::uint64_t limit) {
        conn().send(p::Pull{since, limit});
        ++pulls_sent;
        Page page;
        for (int guard = 0; guard < 100; ++guard) {
            auto m = conn().next();
            REQUIRE_MESSAGE(m.has_value(), "expected changes, but " << conn().state());
            if (auto* r = std::get_if<p::Revoke>(&*m)) {
                page.revokes.push_back(std::move(*r));
                continue;
            }
            auto* c = std::get_if<p::Changes>(&*m);
            REQUIRE_MESSAGE(c != nullptr, "expected changes, got " << describe(*m));
            CHECK(c->since == since);
            page.changes = std::move(*c);
            return page;
        }
        FAIL("more than 100 revokes before one page");
        return page;
    }
    /// Pulls from the stored cursor until `more` is false (the session is then live).
    Pulled pull_all(std::uint64_t limit = 100) {
        Pulled out;
        for (int guard = 0; guard < 1000; ++guard) {
            Page page = pull_page(cursor, limit);
            for (auto& r : page.revokes)
                out.revoked.insert(out.revoked.end(), r.records.begin(), r.records.end());
            out.items.insert(out.items.end(), page.changes.items.begin(), page.changes.items.end());
            cursor = page.changes.cursor;
            const bool more = page.changes.more;
            out.pages.push_back(std::move(page));
            if (!more) return out;
        }
        FAIL("more than 1000 pages");
        return out;
    }
    p::Digest digest() {
        conn().send(p::DigestRequest{});
        return reply<p::Digest>("digest");
    }

    /// A new household written by this device (one update: village, head_name, poverty_status).
    p::RecordState household(const std::string& village, const std::string& head,
                             const std::string& status = "national_line") {
        std::array<std::uint8_t, 10> random{};
        const auto extra = random_id();
        std::copy_n(extra.bytes.begin(), random.size(), random.begin());
        p::RecordState s;
        s.collection = "households";
        s.id = p::make_uuid_v7(now_ms(), random);
        edit(s, {{"village", village}, {"head_name", head}, {"poverty_status", status}});
        return s;
    }
    /// One local update of `s` by this device: every change under one dot.
    /// `by`: the author written into the entries (the user's name unless a test forges it).
    void edit(p::RecordState& s, const std::vector<std::pair<std::string, p::Value>>& changes,
              const std::string& by = "") {
        p::Update u(s, m_replica, m_clock.tick(), by.empty() ? m_user : by);
        for (const auto& [field, value] : changes) {
            // The demo survey's households: village is lww, the other fields used here review.
            const auto rule = field == "village" ? p::MergeRule::lww : p::MergeRule::review;
            REQUIRE(u.set(field, rule, value).ok());
        }
    }

private:
    std::string m_url, m_user, m_password;
    p::Id128 m_device = random_id();
    p::ReplicaId m_replica = random_id();
    p::HybridClock m_clock{[] { return now_ms(); }};
    std::uint64_t m_next_batch = 1;
    std::unique_ptr<Connection> m_conn;
    std::deque<p::Message> m_aside;  // notify and revoke that came before an awaited reply
};

std::set<p::RecordId> ids_of(const std::vector<p::ChangeItem>& items) {
    std::set<p::RecordId> ids;
    for (const auto& i : items)
        ids.insert(i.record.id);
    return ids;
}
std::set<p::RecordId> ids_of(const std::vector<p::RecordState>& records) {
    std::set<p::RecordId> ids;
    for (const auto& r : records)
        ids.insert(r.id);
    return ids;
}
const p::ChangeItem* find_item(const std::vector<p::ChangeItem>& items, const p::RecordId& id) {
    for (const auto& i : items)
        if (i.record.id == id) return &i;
    return nullptr;
}
std::string village_of(const p::RecordState& s) {
    auto v = s.view("village");
    REQUIRE(v.has_value());
    return std::get<std::string>(v->value);
}
/// The scope digest (SPEC.md §6.3) of a set of states.
p::ScopeDigest digest_of(const std::vector<p::ChangeItem>& items) {
    p::ScopeDigest d;
    for (const auto& i : items)
        d.add(i.record);
    return d;
}

/// Change feed and audit log, counted in the server's database (read-only, beside the server).
struct FeedCounts {
    std::int64_t last_seq = -1, audit_rows = -1, records = -1;
    bool operator==(const FeedCounts&) const = default;
};
std::ostream& operator<<(std::ostream& os, const FeedCounts& f) {
    return os << "{last_seq " << f.last_seq << ", audit rows " << f.audit_rows << ", records "
              << f.records << "}";
}
FeedCounts feed_counts(const Server& server) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(server.db_path().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    auto scalar = [db](const char* sql) {
        sqlite3_stmt* st = nullptr;
        std::int64_t v = -1;
        if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
    };
    FeedCounts f;
    f.last_seq = scalar("SELECT value FROM meta WHERE key = 'last_seq'");
    f.audit_rows = scalar("SELECT count(*) FROM audit");
    f.records = scalar("SELECT count(*) FROM records");
    sqlite3_close(db);
    REQUIRE_MESSAGE(f.last_seq >= 0, "cannot read " << server.db_path());
    return f;
}

/// Creates a user through the admin API.
void add_user(const Server& server, const std::string& name, const std::string& role,
              const std::string& area, const std::string& password) {
    const std::string admin = api_login(server.port(), "admin", server.password("admin"));
    json::object body{{"name", name},
                      {"role", role},
                      {"areas", json::array{json::value(area)}},
                      {"password", password}};
    auto r = http(server.port(), "POST", "/api/users", json::serialize(body), admin);
    REQUIRE_MESSAGE(r.status == 201, r.status << " " << r.body);
}

#define E2E_NEEDS_SERVER()                                  \
    if (!have_server()) {                                   \
        MESSAGE("fieldsync-server is not built; skipping"); \
        return;                                             \
    }

}  // namespace

// 1. Authentication over the wire: a good password gets welcome (role, scope, token, schema,
//    limits); a wrong password, an unknown user, a bogus token and a first message that is not
//    hello each get error `unauthenticated`, fatal, and the connection closes (1008); the token
//    from a password login works for the next hello; a disabled account is refused either way.
TEST_CASE("e2e server: hello with good and bad credentials, then a token login") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-hello");
    Server server(dir.path());
    Device a(server, "enumerator-longhuqu");

    const p::Welcome w = a.connect();
    CHECK(w.version == p::protocol_version);
    CHECK(w.user == "enumerator-longhuqu");
    CHECK(w.role == "enumerator");
    CHECK(w.scope == std::vector<std::string>{longhuqu});
    REQUIRE(w.token.has_value());
    CHECK(w.token->size() >= 20);
    CHECK(w.schema_version >= 1);
    CHECK(w.schema.has_value());  // the device held no schema (hello.schema 0)
    CHECK(w.limits.max_batch == 500);
    CHECK(w.limits.max_frame == 4u << 20);
    CHECK(w.server_time > 0);
    a.disconnect();

    auto refused = [&](const p::Hello& h, const char* what) {
        INFO(what);
        Connection c(server.url());
        c.send(h);
        auto e = c.expect<p::ErrorMessage>("error");
        CHECK(e.code == "unauthenticated");
        CHECK(e.fatal);
        CHECK(!e.message.empty());
        auto closed = c.wait_closed();
        CHECK(closed.code == 1008);
        CHECK(closed.reason == "unauthenticated");
    };
    refused(a.hello(p::PasswordAuth{"enumerator-longhuqu", "not-the-password"}), "wrong password");
    refused(a.hello(p::PasswordAuth{"nobody-of-that-name", "not-the-password"}), "unknown user");
    refused(a.hello(p::TokenAuth{"forged-token-0123456789abcdefghijklmnopqr"}), "unknown token");
    {
        INFO("a first message that is not hello");
        Connection c(server.url());
        c.send(p::Pull{0, 10});
        auto e = c.expect<p::ErrorMessage>("error");
        CHECK(e.code == "unauthenticated");
        CHECK(e.fatal);
        CHECK(c.wait_closed().code == 1008);
    }

    // The token of the password login logs in on its own; no new token is handed out.
    const p::Welcome again = a.connect();
    CHECK(again.user == "enumerator-longhuqu");
    CHECK(again.role == "enumerator");
    CHECK(again.scope == std::vector<std::string>{longhuqu});
    CHECK_FALSE(again.token.has_value());
    CHECK_FALSE(again.schema.has_value());  // the device now holds the server's version
    // The session works: a pull is answered.
    auto page = a.pull_page(0, 10);
    CHECK_FALSE(page.changes.more);
    // A second hello in an authenticated session is not accepted (not fatal).
    a.conn().send(a.hello(a.password_auth()));
    auto e = a.conn().expect<p::ErrorMessage>("error");
    CHECK(e.code == "unexpected_message");
    CHECK_FALSE(e.fatal);
    a.disconnect();

    // Disabled by an administrator: refused with the token and with the right password.
    const std::string admin = api_login(server.port(), "admin", server.password("admin"));
    auto disabled = http(server.port(), "PUT", "/api/users/enumerator-longhuqu",
                         R"({"disabled": true})", admin);
    REQUIRE_MESSAGE(disabled.status == 200, disabled.body);
    refused(a.hello(p::TokenAuth{a.token}), "the token of a disabled account");
    refused(a.hello(a.password_auth()), "the password of a disabled account");
}

// 2. A push from one device reaches a second device of another enumerator of the same village:
//    every record arrives, byte for byte the pushed canonical state, and the server's scope
//    digest for the second device equals the digest of what it received. (The demo has one
//    enumerator per village, so the second one is created through the admin API.)
TEST_CASE("e2e server: push from one device, pull from another enumerator's device") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-pushpull");
    Server server(dir.path());
    add_user(server, "enumerator-longhuqu-2", "enumerator", longhuqu, "second enumerator pw");
    Device a(server, "enumerator-longhuqu");
    Device b(server.url(), "enumerator-longhuqu-2", "second enumerator pw");
    a.connect();
    CHECK(b.connect().scope == std::vector<std::string>{longhuqu});

    std::vector<p::RecordState> records{a.household(longhuqu, "Bater", "dibao_line"),
                                        a.household(longhuqu, "Saran", "national_line"),
                                        a.household(longhuqu, "Altan", "marginal")};
    a.edit(records[1], {{"members_count", std::int64_t{5}}});  // a second update of one record
    const auto ack = a.push(records);
    for (const auto& r : ack.results)
        CHECK_MESSAGE(r.ok, r.code << ": " << r.reason);

    const Pulled got = b.pull_all();
    REQUIRE(got.items.size() == records.size());
    CHECK(got.revoked.empty());
    for (const auto& r : records) {
        const auto* item = find_item(got.items, r.id);
        REQUIRE_MESSAGE(item != nullptr, "record " << r.id.to_string() << " did not arrive");
        CHECK_MESSAGE(same_bytes(item->record, r),
                      "record " << r.id.to_string() << " differs from the pushed state");
        CHECK(item->schema_version == a.schema);
    }
    CHECK(b.cursor == ack.cursor);
    const auto d = b.digest();
    CHECK(d.cursor == b.cursor);
    CHECK(d.count == records.size());
    CHECK(d.digest == digest_of(got.items).value());

    // The second enumerator's edit goes back the other way.
    p::RecordState edited = got.items.front().record;
    b.edit(edited, {{"head_name", std::string("Bater Gerel")}});
    const auto ack2 = b.push({edited});
    CHECK(ack2.results[0].ok);
    a.cursor = 0;
    const Pulled back = a.pull_all();
    const auto* item = find_item(back.items, edited.id);
    REQUIRE(item != nullptr);
    CHECK(same_bytes(item->record, edited));
}

// 3. Pushing the same batch again (at once, pipelined twice, and after a reconnect), and pushing
//    a state older than the server's, changes nothing: the same acks and cursor, no new
//    change-feed entry, no new audit row, nothing new for a puller.
TEST_CASE("e2e server: a replayed or duplicated push changes nothing") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-replay");
    Server server(dir.path());
    Device a(server, "enumerator-longhuqu");
    Device watcher(server, "supervisor-ejin-horo");
    a.connect();
    watcher.connect();

    const std::vector<p::RecordState> records{a.household(longhuqu, "Bater"),
                                              a.household(longhuqu, "Saran"),
                                              a.household(longhuqu, "Altan")};
    const p::Push batch = a.make_push(records);
    const p::PushAck first = a.push(batch);
    for (const auto& r : first.results)
        CHECK(r.ok);
    const FeedCounts before = feed_counts(server);
    CHECK(before.last_seq == static_cast<std::int64_t>(first.cursor));
    CHECK(before.audit_rows == 3);
    watcher.pull_all();
    CHECK(watcher.cursor == first.cursor);

    auto same_ack = [&](const p::PushAck& ack) {
        CHECK(ack.batch == first.batch);
        CHECK(ack.results == first.results);
        CHECK(ack.cursor == first.cursor);
    };
    same_ack(a.push(batch));  // replayed once
    // Duplicated: the same frame twice before either reply.
    a.conn().send(batch);
    a.conn().send(batch);
    same_ack(a.conn().expect<p::PushAck>("push_ack"));
    same_ack(a.conn().expect<p::PushAck>("push_ack"));
    CHECK(feed_counts(server) == before);

    // A reconnect (the ack "was lost"), then the same batch again.
    a.drop();
    a.connect();
    same_ack(a.push(batch));
    CHECK(feed_counts(server) == before);

    // A newer state, then the old one again: the old one is already covered (L3, L9).
    p::RecordState newer = records[0];
    a.edit(newer, {{"poverty_status", std::string("dibao_line")}});
    const auto ack_newer = a.push({newer});
    CHECK(ack_newer.results[0].ok);
    const FeedCounts after_edit = feed_counts(server);
    CHECK(after_edit.last_seq == before.last_seq + 1);
    CHECK(after_edit.audit_rows == before.audit_rows + 1);
    const auto stale = a.push(batch);
    for (const auto& r : stale.results)
        CHECK(r.ok);
    CHECK(stale.cursor == ack_newer.cursor);
    CHECK(feed_counts(server) == after_edit);

    // The live watcher's next message is the notify of the edit alone: the replays sent it
    // nothing (they were answered before the edit was pushed, so their notifies would come first).
    const auto n = watcher.expect_unasked<p::Notify>("notify");
    CHECK(n.since == first.cursor);
    CHECK(n.cursor == ack_newer.cursor);
    REQUIRE(n.items.size() == 1);
    CHECK(same_bytes(n.items[0].record, newer));
    // The change feed holds exactly the one edit after the first push, with the newer state.
    Page page = watcher.pull_page(first.cursor, 100);
    CHECK(page.revokes.empty());
    REQUIRE(page.changes.items.size() == 1);
    CHECK(same_bytes(page.changes.items[0].record, newer));
    CHECK(page.changes.cursor == ack_newer.cursor);
    // And the audit log of each record, through the API, has one row per real change.
    const std::string token =
        api_login(server.port(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    for (std::size_t i = 0; i < records.size(); ++i) {
        auto r = http(server.port(), "GET", "/api/records/households/" + records[i].id.to_string(),
                      "", token);
        REQUIRE_MESSAGE(r.status == 200, r.body);
        CHECK(r.json().at("history").as_array().size() == (i == 0 ? 2u : 1u));
    }
    // The devices view counts the records the device brought in, not its replays.
    auto devices = http(server.port(), "GET", "/api/devices", "", token);
    REQUIRE_MESSAGE(devices.status == 200, devices.body);
    const json::value dv = devices.json();
    bool listed = false;
    for (const auto& d : dv.at("devices").as_array()) {
        if (d.at("id").as_string() != a.device_id()) continue;
        listed = true;
        CHECK(d.at("records_sent").as_int64() == 4);
    }
    CHECK(listed);
}

// 4. Paged pull: with a small limit the server sends pages of at most that many records, in
//    increasing seq, with `more`; a device that drops mid-way (a pull sent, its page never read)
//    resumes from the cursor it stored and ends with every record exactly once.
TEST_CASE("e2e server: paged pull resumed from a cursor after a drop") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-pages");
    Server server(dir.path());
    Device a(server, "enumerator-longhuqu");
    Device b(server, "supervisor-ejin-horo");
    a.connect();
    std::vector<p::RecordState> records;
    for (int i = 0; i < 7; ++i)
        records.push_back(a.household(longhuqu, "Head " + std::to_string(i)));
    const auto ack = a.push(records);
    for (const auto& r : ack.results)
        CHECK(r.ok);

    b.connect();
    std::vector<p::ChangeItem> seen;
    Page first = b.pull_page(0, 3);
    REQUIRE(first.changes.items.size() == 3);
    CHECK(first.changes.more);
    for (std::size_t i = 1; i < first.changes.items.size(); ++i)
        CHECK(first.changes.items[i - 1].seq < first.changes.items[i].seq);
    CHECK(first.changes.cursor >= first.changes.items.back().seq);
    seen = first.changes.items;
    b.cursor = first.changes.cursor;  // stored after the page was applied

    // The next pull goes out, and the connection drops before its page is read.
    b.conn().send(p::Pull{b.cursor, 3});
    b.drop();

    b.connect();  // token, hello.cursor = the stored cursor
    const Pulled rest = b.pull_all(3);
    CHECK(rest.pages.size() == 2);
    for (const auto& i : rest.items)
        CHECK(i.seq > first.changes.cursor);
    seen.insert(seen.end(), rest.items.begin(), rest.items.end());
    CHECK(seen.size() == records.size());  // each once
    CHECK(ids_of(seen) == ids_of(records));
    for (const auto& r : records) {
        const auto* item = find_item(seen, r.id);
        REQUIRE(item != nullptr);
        CHECK(same_bytes(item->record, r));
    }
    CHECK(b.cursor == ack.cursor);
    // Caught up: another pull is empty.
    Page last = b.pull_page(b.cursor, 3);
    CHECK(last.changes.items.empty());
    CHECK_FALSE(last.changes.more);
}

// 5. Live changes: a second device that has pulled to the end receives the first device's
//    committed change as notify, without asking, and notify.since is the cursor it holds.
TEST_CASE("e2e server: a live device receives another device's change as notify") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-notify");
    Server server(dir.path());
    Device a(server, "enumerator-longhuqu");
    Device b(server, "supervisor-ejin-horo");
    a.connect();
    b.connect();
    const auto initial = b.pull_all();
    CHECK(initial.items.empty());
    const std::uint64_t b_cursor = b.cursor;

    const p::RecordState h = a.household(longhuqu, "Bater", "dibao_line");
    const auto ack = a.push({h});
    REQUIRE(ack.results[0].ok);

    const auto n = b.expect_unasked<p::Notify>("notify");
    CHECK(n.since == b_cursor);
    CHECK(n.cursor == ack.cursor);
    REQUIRE(n.items.size() == 1);
    CHECK(same_bytes(n.items[0].record, h));
    CHECK(n.items[0].seq == ack.cursor);
    b.cursor = n.cursor;

    // A second change: the next notify follows on from the first.
    p::RecordState h2 = h;
    a.edit(h2, {{"members_count", std::int64_t{4}}});
    const auto ack2 = a.push({h2});
    REQUIRE(ack2.results[0].ok);
    const auto n2 = b.expect_unasked<p::Notify>("notify");
    CHECK(n2.since == b.cursor);
    CHECK(n2.cursor == ack2.cursor);
    REQUIRE(n2.items.size() == 1);
    CHECK(same_bytes(n2.items[0].record, h2));
}

// 6. Revocation: a supervisor moves a household (PUT /api/records, village changed) to a village
//    outside an enumerator's scope, and another writer (a supervisor's device, over the wire)
//    moves a second one out and back in. The enumerator's live device gets revoke at once for
//    each move out; an offline device of the same village, back with its old cursor, gets the
//    revoke before its page and ends without the moved household but with the one that came
//    back; the new village's enumerator receives the record; a stale push to it from the old
//    village is forbidden.
TEST_CASE("e2e server: a household moved out of a device's scope is revoked on that device") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-revoke");
    Server server(dir.path());
    add_user(server, "enumerator-longhuqu-2", "enumerator", longhuqu, "second enumerator pw");
    Device live(server, "enumerator-longhuqu");
    Device offline(server.url(), "enumerator-longhuqu-2", "second enumerator pw");
    Device other(server, "enumerator-hashatu");
    Device supervisor(server, "supervisor-ejin-horo");

    live.connect();
    const p::RecordState moved = live.household(longhuqu, "Bater");
    const p::RecordState stays = live.household(longhuqu, "Saran");
    const p::RecordState bounce = live.household(longhuqu, "Altan");
    for (const auto& r : live.push({moved, stays, bounce}).results)
        REQUIRE(r.ok);
    CHECK(live.pull_all().items.size() == 3);  // now live
    offline.connect();
    CHECK(offline.pull_all().items.size() == 3);
    offline.disconnect();

    // The supervisor, through the API.
    const std::string token =
        api_login(server.port(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    auto put = http(server.port(), "PUT", "/api/records/households/" + moved.id.to_string(),
                    R"({"fields": {"village": ")" + hashatu + R"("}})", token);
    REQUIRE_MESSAGE(put.status == 200, put.body);
    CHECK(put.json().at("area").as_string() == hashatu);

    // The live device: revoke without asking, then the notify that moves its cursor on.
    const auto rv = live.expect_unasked<p::Revoke>("revoke");
    REQUIRE(rv.records.size() == 1);
    CHECK(rv.records[0].collection == "households");
    CHECK(rv.records[0].id == moved.id);
    const auto n = live.expect_unasked<p::Notify>("notify");
    CHECK(n.since == live.cursor);
    CHECK(n.cursor == rv.cursor);
    CHECK(find_item(n.items, moved.id) == nullptr);
    live.cursor = n.cursor;

    // Another writer over the wire: the supervisor's device moves `bounce` out, then back in.
    supervisor.connect();
    p::RecordState away = bounce;
    supervisor.edit(away, {{"village", hashatu}});
    REQUIRE(supervisor.push({away}).results[0].ok);
    const auto rv2 = live.expect_unasked<p::Revoke>("revoke");
    REQUIRE(rv2.records.size() == 1);
    CHECK(rv2.records[0].id == bounce.id);
    const auto n2 = live.expect_unasked<p::Notify>("notify");
    CHECK(n2.since == live.cursor);
    CHECK(n2.items.empty());
    live.cursor = n2.cursor;
    p::RecordState back = away;
    supervisor.edit(back, {{"village", longhuqu}});
    REQUIRE(supervisor.push({back}).results[0].ok);
    const auto n3 = live.expect_unasked<p::Notify>("notify");  // no revoke: it is back in scope
    CHECK(n3.since == live.cursor);
    REQUIRE(n3.items.size() == 1);
    CHECK(same_bytes(n3.items[0].record, back));

    // The offline device, back with its old cursor, pulling one record per page: its local
    // replica, after applying each page's revokes and then the page, holds `stays` and `bounce`
    // (moved out and back), not `moved`.
    offline.connect();
    const Pulled o = offline.pull_all(1);
    CHECK(o.pages.size() >= 2);
    std::set<p::RecordId> held{moved.id, stays.id, bounce.id};
    for (const auto& page : o.pages) {
        for (const auto& r : page.revokes)
            for (const auto& ref : r.records)
                held.erase(ref.id);
        for (const auto& i : page.changes.items)
            held.insert(i.record.id);
    }
    CHECK(held == std::set<p::RecordId>{stays.id, bounce.id});
    CHECK(std::any_of(o.revoked.begin(), o.revoked.end(),
                      [&](const p::RecordRef& r) { return r.id == moved.id; }));
    CHECK(find_item(o.items, moved.id) == nullptr);
    const auto* returned = find_item(o.items, bounce.id);
    REQUIRE(returned != nullptr);
    CHECK(same_bytes(returned->record, back));
    CHECK(offline.digest().count == 2);

    // The household's new village has it.
    other.connect();
    const Pulled got = other.pull_all();
    const auto* item = find_item(got.items, moved.id);
    REQUIRE(item != nullptr);
    CHECK(village_of(item->record) == hashatu);
    CHECK(find_item(got.items, bounce.id) == nullptr);

    // A write the live device made to its (revoked) copy is refused.
    p::RecordState stale = moved;
    live.edit(stale, {{"head_name", std::string("Bater Gerel")}});
    const auto refused = live.push({stale});
    CHECK_FALSE(refused.results[0].ok);
    CHECK(refused.results[0].code == "forbidden");

    // The other way records leave a device: its user's areas change. The next hello is followed
    // by rebootstrap_required (not fatal); a pull from 0 then brings exactly the new scope, and
    // after it the notice is not repeated.
    offline.disconnect();
    const std::string admin = api_login(server.port(), "admin", server.password("admin"));
    auto reassigned = http(server.port(), "PUT", "/api/users/enumerator-longhuqu-2",
                           R"({"areas": [")" + hashatu + R"("]})", admin);
    REQUIRE_MESSAGE(reassigned.status == 200, reassigned.body);
    CHECK(offline.connect().scope == std::vector<std::string>{hashatu});
    const auto notice = offline.conn().expect<p::ErrorMessage>("error rebootstrap_required");
    CHECK(notice.code == "rebootstrap_required");
    CHECK_FALSE(notice.fatal);
    offline.cursor = 0;
    const Pulled full = offline.pull_all();
    CHECK(ids_of(full.items) == std::set<p::RecordId>{moved.id});
    offline.disconnect();
    offline.connect();
    CHECK(offline.pull_page(offline.cursor, 100).changes.items.empty());  // a page, not an error
}

// 7. Scope for every role over the wire: an enumerator's items outside their village are
//    refused one by one with `forbidden` (new records, edits of records elsewhere, moving a
//    record out) while the rest of the batch is accepted; a supervisor pulls exactly its banner's
//    records and cannot write outside it; the administrator sees and writes everything.
TEST_CASE("e2e server: scope enforcement for enumerator, supervisor and admin") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-scope");
    Server server(dir.path());
    Device admin(server, "admin");
    Device enumerator(server, "enumerator-longhuqu");
    Device hanggin(server, "supervisor-hanggin");
    Device ejin_horo(server, "supervisor-ejin-horo");

    // The administrator writes one household in each of four villages of three banners.
    const auto w = admin.connect();
    CHECK(w.role == "admin");
    CHECK(w.scope == std::vector<std::string>{"ordos"});
    const std::vector<p::RecordState> seeded{
        admin.household(longhuqu, "In Longhuqu"), admin.household(hashatu, "In Hashatu"),
        admin.household(shengli, "In Shengli"), admin.household(bayan, "In Bayan")};
    for (const auto& r : admin.push(seeded).results)
        CHECK_MESSAGE(r.ok, r.code << ": " << r.reason);

    // The enumerator: one item in scope, three outside, in one batch.
    enumerator.connect();
    const Pulled mine = enumerator.pull_all();
    CHECK(ids_of(mine.items) == std::set<p::RecordId>{seeded[0].id});
    const p::RecordState own = enumerator.household(longhuqu, "Own");
    const p::RecordState elsewhere = enumerator.household(hashatu, "Elsewhere");
    p::RecordState forged = seeded[1];  // a record of Hashatu, edited without having it
    enumerator.edit(forged, {{"head_name", std::string("Changed")}});
    p::RecordState move_out = mine.items.at(0).record;  // Longhuqu's record, moved to Hashatu
    enumerator.edit(move_out, {{"village", hashatu}});
    const auto ack = enumerator.push({elsewhere, own, forged, move_out});
    CHECK(ack.results[0].code == "forbidden");
    CHECK(ack.results[1].ok);
    CHECK(ack.results[2].code == "forbidden");
    CHECK(ack.results[3].code == "forbidden");
    for (const auto& r : ack.results) {
        CHECK(r.ok == r.code.empty());
        if (!r.ok) CHECK(!r.reason.empty());
    }
    // Inside its village too, a device may not sign a write with another user's name (§4.4).
    p::RecordState impostor = own;
    enumerator.edit(impostor, {{"head_name", std::string("Signed by someone else")}}, "admin");
    CHECK(enumerator.push({impostor}).results[0].code == "forbidden");

    // Supervisor of Hanggin: exactly the Shengli household; Ejin Horo is out of reach.
    hanggin.connect();
    const Pulled h = hanggin.pull_all();
    CHECK(ids_of(h.items) == std::set<p::RecordId>{seeded[2].id});
    CHECK(hanggin.digest().count == 1);
    p::RecordState shengli_edit = h.items.at(0).record;
    hanggin.edit(shengli_edit, {{"poverty_status", std::string("dibao_line")}});
    const auto hack = hanggin.push({shengli_edit, hanggin.household(longhuqu, "Not mine")});
    CHECK(hack.results[0].ok);
    CHECK(hack.results[1].code == "forbidden");

    // Live, the Hanggin supervisor is sent only its banner's changes: an administrator's edit in
    // Ejin Horo, then one in Shengli; every notify it gets up to the Shengli one stays in Hanggin
    // (an Ejin Horo notify would have been queued before the Shengli one).
    p::RecordState longhuqu_edit = seeded[0];
    admin.edit(longhuqu_edit, {{"members_count", std::int64_t{3}}});
    REQUIRE(admin.push({longhuqu_edit}).results[0].ok);
    p::RecordState shengli_again = shengli_edit;
    admin.edit(shengli_again, {{"members_count", std::int64_t{6}}});
    REQUIRE(admin.push({shengli_again}).results[0].ok);
    for (int guard = 0;; ++guard) {
        REQUIRE(guard < 10);
        const auto n = hanggin.expect_unasked<p::Notify>("notify");
        for (const auto& i : n.items)
            CHECK(p::area_contains("ordos/hanggin", village_of(i.record)));
        if (const auto* i = find_item(n.items, shengli_again.id);
            i && same_bytes(i->record, shengli_again))
            break;
    }

    // Supervisor of Ejin Horo: Longhuqu (seeded and the enumerator's) and Hashatu, unchanged.
    ejin_horo.connect();
    const Pulled e = ejin_horo.pull_all();
    CHECK(ids_of(e.items) == std::set<p::RecordId>{seeded[0].id, seeded[1].id, own.id});
    for (const auto& i : e.items)
        CHECK(i.record.view("village")->value != p::Value{shengli});
    CHECK(same_bytes(find_item(e.items, seeded[0].id)->record, longhuqu_edit));  // not moved
    CHECK(same_bytes(find_item(e.items, seeded[1].id)->record, seeded[1]));      // not edited

    // The administrator: everything, and its digest covers all of it.
    admin.cursor = 0;
    const Pulled all = admin.pull_all();
    CHECK(ids_of(all.items) ==
          std::set<p::RecordId>{seeded[0].id, seeded[1].id, seeded[2].id, seeded[3].id, own.id});
    CHECK(same_bytes(find_item(all.items, seeded[2].id)->record, shengli_again));
    const auto d = admin.digest();
    CHECK(d.count == 5);
    CHECK(d.digest == digest_of(all.items).value());
}

// 8. Durability across restarts. SIGTERM while pushes are in flight: the acknowledgements
//    already due still arrive, in order, then every connection closes with 1001 (going away) and
//    the server exits 0. Restarted on the same data folder, it holds every acknowledged record;
//    the device's token still works and it resumes from its cursor (only later changes, no
//    re-bootstrap). Then a SIGKILL with 20 pushes in flight loses no acknowledged push, and
//    pushing the rest again completes the set, each record once.
TEST_CASE("e2e server: restart after SIGTERM and after SIGKILL keeps every acknowledged push") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-restart");
    auto server = std::make_unique<Server>(dir.path());
    Device a(*server, "enumerator-longhuqu");
    Device b(*server, "supervisor-ejin-horo");
    a.connect();
    std::vector<p::RecordState> early;
    for (int i = 0; i < 5; ++i)
        early.push_back(a.household(longhuqu, "Before " + std::to_string(i)));
    for (const auto& r : a.push(early).results)
        REQUIRE(r.ok);
    b.connect();
    CHECK(b.pull_all().items.size() == early.size());
    b.disconnect();
    b.connect();  // connected, but not live: nothing arrives unasked
    const std::uint64_t b_cursor = b.cursor;
    Device watcher(*server, "admin");  // live: sees each commit as notify
    watcher.connect();
    watcher.pull_all();

    // Graceful shutdown with 10 pushes in flight.
    std::vector<p::Push> draining;
    for (int i = 0; i < 10; ++i) {
        draining.push_back(a.make_push({a.household(longhuqu, "Draining " + std::to_string(i))}));
        a.conn().send(draining.back());
    }
    REQUIRE(a.conn().expect<p::PushAck>("push_ack").batch == draining[0].batch);
    server->signal(SIGTERM);
    std::size_t drained = 1;
    for (int guard = 0; guard < 100; ++guard) {
        auto m = a.conn().next();
        if (!m) break;
        auto* ack = std::get_if<p::PushAck>(&*m);
        REQUIRE_MESSAGE(ack != nullptr, "expected push_ack, got " << describe(*m));
        REQUIRE(ack->results[0].ok);
        REQUIRE(drained < draining.size());
        CHECK(ack->batch == draining[drained].batch);  // in order
        ++drained;
    }
    MESSAGE(drained << " of 10 pushes in flight at SIGTERM were acknowledged");
    CHECK(a.conn().wait_closed().code == 1001);
    CHECK(b.conn().wait_closed().code == 1001);
    // The live device was sent the notify of every acknowledged push before its 1001: queued
    // frames are written before the close.
    std::set<p::RecordId> notified;
    for (int guard = 0; guard < 100; ++guard) {
        auto m = watcher.conn().next();
        if (!m) break;
        auto* n = std::get_if<p::Notify>(&*m);
        REQUIRE_MESSAGE(n != nullptr, "expected notify, got " << describe(*m));
        CHECK(n->since == watcher.cursor);
        watcher.cursor = n->cursor;
        for (const auto& i : n->items)
            notified.insert(i.record.id);
    }
    CHECK(watcher.conn().wait_closed().code == 1001);
    for (std::size_t i = 0; i < drained; ++i)
        CHECK_MESSAGE(notified.count(draining[i].items[0].record.id),
                      "no notify for acknowledged push " << draining[i].batch);
    watcher.drop();
    const auto rc = server->wait_exit(wait_limit);
    REQUIRE_MESSAGE(rc.has_value(), "the server did not exit after SIGTERM");
    CHECK(*rc == 0);
    a.drop();
    b.drop();
    server.reset();

    server = std::make_unique<Server>(dir.path());
    a.set_url(server->url());
    b.set_url(server->url());
    // b resumes with its token and cursor: the first reply to its pull is a page (no
    // rebootstrap_required) with the changes after its cursor only, every acknowledged one in it.
    b.connect();
    Page resumed = b.pull_page(b_cursor, 100);
    CHECK(resumed.revokes.empty());
    CHECK_FALSE(resumed.changes.more);
    for (const auto& r : early)
        CHECK(find_item(resumed.changes.items, r.id) == nullptr);
    for (std::size_t i = 0; i < drained; ++i) {
        const auto* item = find_item(resumed.changes.items, draining[i].items[0].record.id);
        CHECK_MESSAGE(item != nullptr,
                      "acknowledged push " << draining[i].batch << " is gone after SIGTERM");
        if (item) CHECK(same_bytes(item->record, draining[i].items[0].record));
    }
    b.cursor = resumed.changes.cursor;
    b.disconnect();

    // a sends what was not acknowledged again, and writes one more.
    a.connect();
    for (std::size_t i = drained; i < draining.size(); ++i)
        CHECK(a.push(draining[i]).results[0].ok);
    const p::RecordState after = a.household(longhuqu, "After restart");
    REQUIRE(a.push({after}).results[0].ok);
    b.connect();
    const Pulled later = b.pull_all();
    std::vector<p::ChangeItem> since_cursor = resumed.changes.items;
    since_cursor.insert(since_cursor.end(), later.items.begin(), later.items.end());
    std::set<p::RecordId> expected{after.id};
    for (const auto& push : draining)
        expected.insert(push.items[0].record.id);
    CHECK(ids_of(since_cursor) == expected);
    CHECK(since_cursor.size() == expected.size());  // each once
    b.disconnect();

    std::vector<p::RecordState> acked = early;
    for (const auto& push : draining)
        acked.push_back(push.items[0].record);
    acked.push_back(after);

    // Crash: 20 pushes in flight, SIGKILL as soon as the first is acknowledged.
    std::vector<p::Push> in_flight;
    for (int i = 0; i < 20; ++i) {
        in_flight.push_back(a.make_push({a.household(longhuqu, "In flight " + std::to_string(i))}));
        a.conn().send(in_flight.back());
    }
    std::set<std::uint64_t> acked_batches;
    auto first = a.conn().expect<p::PushAck>("push_ack");
    REQUIRE(first.results[0].ok);
    acked_batches.insert(first.batch);
    server->signal(SIGKILL);
    // Acks already on their way were sent after their commits: they count too.
    for (int guard = 0; guard < 100; ++guard) {
        auto m = a.conn().next();
        if (!m) break;
        if (auto* ack = std::get_if<p::PushAck>(&*m)) {
            REQUIRE(ack->results[0].ok);
            acked_batches.insert(ack->batch);
        }
    }
    const auto killed = server->wait_exit(wait_limit);
    REQUIRE(killed.has_value());
    CHECK(*killed == 128 + SIGKILL);
    a.drop();
    server.reset();
    MESSAGE(acked_batches.size() << " of 20 in-flight pushes were acknowledged before the SIGKILL");

    server = std::make_unique<Server>(dir.path());
    for (const auto& push : in_flight)
        if (acked_batches.count(push.batch)) acked.push_back(push.items[0].record);
    Device fresh(*server, "admin");
    fresh.connect();
    const Pulled all = fresh.pull_all();
    fresh.disconnect();  // not live while the writer pushes again
    for (const auto& r : acked) {
        const auto* item = find_item(all.items, r.id);
        CHECK_MESSAGE(item != nullptr, "acknowledged record " << r.id.to_string() << " is gone");
        if (item) CHECK(same_bytes(item->record, r));
    }
    // The writer reconnects and pushes every in-flight batch again: then all are there, once.
    a.set_url(server->url());
    a.connect();
    for (const auto& push : in_flight)
        CHECK(a.push(push).results[0].ok);
    fresh.connect();
    const Pulled more = fresh.pull_all();
    std::vector<p::ChangeItem> everything = all.items;
    everything.insert(everything.end(), more.items.begin(), more.items.end());
    CHECK(everything.size() == early.size() + draining.size() + 1 + in_flight.size());
    CHECK(ids_of(everything).size() == everything.size());
}

// 9. /healthz answers 200 {"status":"ok"}; /metrics is Prometheus text (0.0.4) whose counters
//    match what this test did over the wire: connections, sessions, pushes, pulls, accepted and
//    rejected items, merges, open conflicts, plus store commit time and queue depth.
TEST_CASE("e2e server: /healthz and /metrics") {
    E2E_NEEDS_SERVER();
    TempDir dir("srv-metrics");
    Server server(dir.path());

    auto health = http(server.port(), "GET", "/healthz");
    CHECK(health.status == 200);
    CHECK(health.json().at("status").as_string() == "ok");

    Device a(server, "enumerator-longhuqu");
    Device b(server, "supervisor-ejin-horo");
    a.connect();
    b.connect();
    p::RecordState h = a.household(longhuqu, "Bater", "national_line");
    const p::Push first = a.make_push({h});
    CHECK(a.push(first).results[0].ok);  // accepted, merged
    CHECK(a.push(first).results[0].ok);  // accepted, a replay
    CHECK(a.push({a.household(hashatu, "Outside")}).results[0].code == "forbidden");  // rejected
    p::RecordState hb = b.pull_all().items.at(0).record;  // b is live from now on
    // Concurrent edits of a review field (b edits the state it had before a's edit reached it):
    // a conflict for the supervisor.
    a.edit(h, {{"poverty_status", std::string("dibao_line")}});
    b.edit(hb, {{"poverty_status", std::string("not_poor")}});
    CHECK(a.push({h}).results[0].ok);
    CHECK(b.expect_unasked<p::Notify>("notify").items.size() == 1);  // a's edit
    CHECK(b.push({hb}).results[0].ok);
    a.pull_all();
    const int pushes = a.pushes_sent + b.pushes_sent;
    CHECK(pushes == 5);
    const int pulls = a.pulls_sent + b.pulls_sent;

    auto r = http(server.port(), "GET", "/metrics");
    REQUIRE(r.status == 200);
    CHECK(r.head.find("content-type: text/plain; version=0.0.4") != std::string::npos);

    // Parse the exposition: every sample line is `name{labels} value` with a # TYPE before it.
    const std::regex sample(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? ([0-9]+(\.[0-9]+)?)$)");
    std::map<std::string, double> values;  // name with labels -> value
    std::map<std::string, std::string> types;
    std::istringstream in(r.body);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        if (line.rfind("# TYPE ", 0) == 0) {
            std::istringstream words(line.substr(7));
            std::string name, type;
            words >> name >> type;
            types[name] = type;
            continue;
        }
        if (line.rfind("# HELP ", 0) == 0) continue;
        std::smatch m;
        REQUIRE_MESSAGE(std::regex_match(line, m, sample),
                        "not a Prometheus sample line: " << line);
        CHECK_MESSAGE(types.count(m[1].str()), "no # TYPE before " << line);
        values[m[1].str() + m[2].str()] = std::stod(m[4].str());
    }
    auto value = [&](const std::string& key) {
        auto it = values.find(key);
        REQUIRE_MESSAGE(it != values.end(), "/metrics has no " << key << ":\n" << r.body);
        return it->second;
    };
    auto type = [&](const std::string& name) { return types.count(name) ? types[name] : "(none)"; };

    CHECK(value("fieldsync_connections{kind=\"ws\"}") == 2);
    CHECK(value("fieldsync_connections{kind=\"http\"}") >= 1);  // this request
    CHECK(type("fieldsync_connections") == "gauge");
    CHECK(value("fieldsync_connections_refused_total") == 0);
    CHECK(value("fieldsync_sync_sessions") == 2);
    CHECK(value("fieldsync_pushes_total") == pushes);
    CHECK(type("fieldsync_pushes_total") == "counter");
    CHECK(value("fieldsync_pulls_total") == pulls);
    CHECK(type("fieldsync_pulls_total") == "counter");
    CHECK(value("fieldsync_items_accepted_total") == 4);
    CHECK(value("fieldsync_items_rejected_total") == 1);
    CHECK(value("fieldsync_merges_total") == 3);  // the replay merged nothing
    CHECK(type("fieldsync_merges_total") == "counter");
    CHECK(value("fieldsync_open_conflicts") == 1);
    CHECK(type("fieldsync_open_conflicts") == "gauge");
    CHECK(value("fieldsync_store_commit_seconds_total") >= 0);
    CHECK(type("fieldsync_store_commit_seconds_total") == "counter");
    for (const char* name :
         {"fieldsync_store_busy_seconds_total", "fieldsync_store_busy_cpu_seconds_total",
          "fieldsync_store_sync_seconds_total", "fieldsync_store_syncs_total",
          "fieldsync_store_syncs_failed_total"}) {
        CHECK_MESSAGE(value(name) >= 0, name);
        CHECK_MESSAGE(type(name) == "counter", name);
    }
    // The worker's CPU time is measured over its busy spans, so it cannot exceed them (a
    // microsecond of rounding per group aside).
    CHECK(value("fieldsync_store_busy_cpu_seconds_total") > 0);
    CHECK(value("fieldsync_store_busy_cpu_seconds_total") <=
          value("fieldsync_store_busy_seconds_total") + 0.01);
    CHECK(value("fieldsync_store_syncs_failed_total") == 0);
    CHECK(value("fieldsync_store_syncs_total") >= 1);  // the pushes were synced
    CHECK(value("fieldsync_store_groups_total") >= 1);
    CHECK(value("fieldsync_store_jobs_total") >= pushes + pulls);
    CHECK(value("fieldsync_store_commits_failed_total") == 0);
    CHECK(value("fieldsync_queue_depth") >= 0);
    CHECK(type("fieldsync_queue_depth") == "gauge");
    CHECK(value("fieldsync_ws_pending_bytes") >= 0);

    // The conflict the gauge counts is the one the API lists.
    const std::string token =
        api_login(server.port(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    auto conflicts = http(server.port(), "GET", "/api/conflicts?status=open", "", token);
    REQUIRE(conflicts.status == 200);
    CHECK(conflicts.json().at("total").as_int64() == 1);
}
