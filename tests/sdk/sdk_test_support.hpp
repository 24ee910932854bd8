// Shared fixtures of the SDK tests: temporary replicas on a manual clock, the demo survey, and
// a scripted fake peer (the test plays the server: it reads the engine's frames and feeds it
// hand-made replies).
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/sync_engine.hpp"

namespace fstest {

namespace p = fieldsync::protocol;
namespace fs = std::filesystem;
using fieldsync::EngineOutput;
using fieldsync::Replica;
using fieldsync::SyncEngine;
using fieldsync::Value;

inline constexpr std::uint64_t t0 = 1'700'000'000'000;  // "now" of the fake clocks
inline const std::string village_a = "ordos/ejin-horo/altan-xire/longhuqu";
inline const std::string village_b = "ordos/ejin-horo/altan-xire/hashatu";
inline const std::string other_banner = "ordos/hanggin/xini/shengli";

inline std::string read_file(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline const std::string& demo_schema_json() {
    static const std::string json =
        read_file(fs::path(FIELDSYNC_SOURCE_DIR) / "protocol/schemas/household-survey.json");
    return json;
}

inline const p::Schema& demo_schema() {
    static const p::Schema schema = p::Schema::load(demo_schema_json()).value();
    return schema;
}

/// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
public:
    TempDir() {
        std::random_device rd;
        m_path = fs::temp_directory_path() /
                 ("fieldsync-sdk-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
        fs::create_directories(m_path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const noexcept { return m_path; }

private:
    fs::path m_path;
};

inline p::Message decode(const p::Bytes& frame) {
    auto m = p::decode_message(frame);
    REQUIRE_MESSAGE(m.ok(), (m.ok() ? "" : m.error().message));
    return std::move(*m);
}

/// The i-th outgoing frame, decoded, which must be a T.
template <class T>
T frame_as(const EngineOutput& out, std::size_t i = 0) {
    REQUIRE_MESSAGE(out.frames.size() > i, "the engine sent " << out.frames.size() << " frames");
    p::Message m = decode(out.frames[i]);
    if constexpr (!std::is_same_v<T, p::ErrorMessage>) {
        if (const auto* e = std::get_if<p::ErrorMessage>(&m))
            FAIL("expected another message, the engine sent error " << e->code << ": "
                                                                    << e->message);
    }
    REQUIRE_MESSAGE(std::holds_alternative<T>(m),
                    "the engine sent " << std::string(p::message_type(m)));
    return std::get<T>(std::move(m));
}

/// The only outgoing frame, which must be a T.
template <class T>
T single(const EngineOutput& out) {
    REQUIRE(out.frames.size() == 1);
    return frame_as<T>(out, 0);
}

inline bool has_event(const EngineOutput& out, fieldsync::SyncEventKind kind) {
    for (const auto& e : out.events)
        if (e.kind == kind) return true;
    return false;
}

inline const fieldsync::SyncEvent* find_event(const EngineOutput& out,
                                              fieldsync::SyncEventKind kind) {
    for (const auto& e : out.events)
        if (e.kind == kind) return &e;
    return nullptr;
}

inline p::Welcome make_welcome(const std::string& user = "enum-a",
                               std::vector<std::string> scope = {village_a},
                               bool with_schema = true, std::uint64_t server_time = t0,
                               std::uint64_t max_batch = 100) {
    p::Welcome w;
    w.user = user;
    w.role = "enumerator";
    w.scope = std::move(scope);
    w.schema_version = demo_schema().version();
    if (with_schema) w.schema = demo_schema_json();
    w.server_time = server_time;
    w.token = "token-" + user;
    w.limits.max_frame = 4u << 20;
    w.limits.max_batch = max_batch;
    return w;
}

/// Feeds `m` to the engine as a frame from the server.
inline EngineOutput feed(SyncEngine& e, const p::Message& m) {
    return e.on_frame(p::encode_message(m));
}

/// An empty last page answering `pull`.
inline p::Changes last_page(const p::Pull& pull, std::uint64_t cursor,
                            std::vector<p::ChangeItem> items = {}) {
    p::Changes c;
    c.since = pull.since;
    c.cursor = cursor;
    c.more = false;
    c.items = std::move(items);
    return c;
}

/// An ack accepting every item of `push`.
inline p::PushAck ack_all(const p::Push& push, std::uint64_t cursor = 0,
                          std::uint64_t server_time = t0) {
    p::PushAck a;
    a.batch = push.batch;
    a.results.assign(push.items.size(), p::ItemResult{true, {}, {}});
    a.cursor = cursor;
    a.server_time = server_time;
    return a;
}

/// A replica on a manual clock in a temporary directory.
struct ReplicaFixture {
    TempDir dir;
    p::ManualClock clock{t0};
    std::shared_ptr<Replica> replica;

    explicit ReplicaFixture(bool open_now = true) {
        if (open_now) open();
    }
    fs::path file() const { return dir.path() / "replica.db"; }
    fieldsync::ReplicaOptions options() const {
        fieldsync::ReplicaOptions o;
        o.clock = clock.source();
        return o;
    }
    void open() {
        auto r = Replica::open(file(), options());
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
        replica = std::move(*r);
    }
    void reopen() {
        replica.reset();
        open();
    }

    /// One scripted session: welcome (with the demo schema), every push acknowledged, then one
    /// last page with `items` at `cursor`. Leaves the replica signed in as `user`.
    void sync(std::vector<p::ChangeItem> items = {}, std::uint64_t cursor = 0,
              const std::string& user = "enum-a", std::vector<std::string> scope = {village_a}) {
        SyncEngine engine(replica);
        EngineOutput out = engine.start({user, "pw", ""}, "sdk-test/1");
        frame_as<p::Hello>(out);
        out = feed(engine, make_welcome(user, scope, true, clock.now()));
        for (int guard = 0; guard < 100; ++guard) {
            REQUIRE(out.frames.size() == 1);
            p::Message m = decode(out.frames[0]);
            if (auto* push = std::get_if<p::Push>(&m)) {
                out = feed(engine, ack_all(*push, 0, clock.now()));
                continue;
            }
            REQUIRE(std::holds_alternative<p::Pull>(m));
            const auto& pull = std::get<p::Pull>(m);
            out = feed(engine, last_page(pull, std::max(cursor, pull.since), std::move(items)));
            break;
        }
        CHECK(out.frames.empty());
        CHECK(engine.phase() == fieldsync::SyncPhase::live);
        (void)engine.on_disconnected();
    }

    /// Creates a household in `village` and returns its id.
    p::RecordId household(const std::string& head, const std::string& village = village_a,
                          const std::string& status = "national_line") {
        auto id = replica->create(
            "households", {{"village", village}, {"head_name", head}, {"poverty_status", status}});
        REQUIRE_MESSAGE(id.ok(), (id.ok() ? "" : id.error().message));
        return *id;
    }

    fieldsync::RecordView view(const std::string& collection, const p::RecordId& id) {
        auto v = replica->get(collection, id);
        REQUIRE(v.ok());
        REQUIRE(v->has_value());
        return **v;
    }
};

/// The error code of a failed Status/Result.
template <class R>
p::protocol_errc errc_of(const R& r) {
    REQUIRE_FALSE(r.ok());
    return static_cast<p::protocol_errc>(r.error().code.value());
}

/// An id with recognisable bytes, for states made by fake replicas.
inline p::Id128 test_id(std::uint8_t kind, std::uint32_t n) {
    p::Id128 id;
    id.bytes[0] = kind;
    id.bytes[6] = 0x40;
    id.bytes[8] = 0x80;
    id.bytes[12] = static_cast<std::uint8_t>(n >> 24);
    id.bytes[13] = static_cast<std::uint8_t>(n >> 16);
    id.bytes[14] = static_cast<std::uint8_t>(n >> 8);
    id.bytes[15] = static_cast<std::uint8_t>(n);
    return id;
}

/// A household state written by another replica (as the server would send it).
inline p::RecordState remote_household(const p::ReplicaId& replica, std::uint32_t n,
                                       const std::string& village, const std::string& by,
                                       std::uint64_t at = t0) {
    p::RecordState s;
    s.collection = "households";
    s.id = test_id(0x01, n);
    p::Update u(s, replica, p::HlcTimestamp::from_parts(at, 0), by);
    REQUIRE(u.set("village", p::MergeRule::lww, village));
    REQUIRE(u.set("head_name", p::MergeRule::review, "Remote " + std::to_string(n)));
    REQUIRE(u.set("poverty_status", p::MergeRule::review, std::string("dibao_line")));
    return s;
}

}  // namespace fstest
