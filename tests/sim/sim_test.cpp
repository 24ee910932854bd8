// Deterministic simulation of the whole sync system in one thread (issue: reliability).
//
// Many tablets (the SDK's Replica + SyncEngine over real SQLite files) and the server (the
// sans-I/O SyncSession over the real SQLite store, with this file playing the StoreWorker's
// role: one transaction per frame, replies only after the commit) are joined by a simulated
// network. Every choice comes from one seeded generator, so a failing seed replays exactly.
//
// Faults injected while the run is "stormy":
//   - delays and reordering across connections (each connection delivers in order, as a
//     WebSocket over TCP does; anything that breaks order within a connection is a cut);
//   - cuts: a connection drops with messages in flight in both directions (they are lost);
//   - duplicates: frames a tablet sent earlier (hello + push) are replayed on a ghost
//     connection whose replies nobody reads;
//   - server crashes: the transaction of the frame being handled is rolled back, its replies
//     are lost, every connection drops, the store file is closed and reopened;
//   - tablet crashes: the engine and the Replica object vanish mid-session, the file reopens;
//   - clocks: tablets run minutes to a year fast or slow;
//   - area changes: an enumerator is reassigned to another village;
//   - supervisors resolve conflicts and move households between villages mid-run.
// Then the storm stops, everyone syncs to quiescence, and the checks run:
//   1. every tablet holds exactly the server's records for its user's scope (canonical bytes),
//      except records the server refused, which stay visible on the tablet with their reason;
//   2. every write the server acknowledged is covered by the server's state (present or
//      superseded), and the audit log has an entry for its record;
//   3. the open conflicts are exactly the review registers holding more than one value;
//   4. (in 1) no record outside a tablet's scope remains on it.
//
// Run more:  FIELDSYNC_SIM_SEED=$RANDOM FIELDSYNC_SIM_SEEDS=5000 build/debug/bin/sim_tests
// Trace:     FIELDSYNC_SIM_TRACE=<user or *> FIELDSYNC_SIM_VERBOSE=1 (frames, wakes, rejections)
// Replay:    FIELDSYNC_SIM_SEED=<seed> FIELDSYNC_SIM_SEEDS=1 build/debug/bin/sim_tests
#include <doctest/doctest.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/sync_session.hpp"
#include "fieldsync/sync_engine.hpp"

namespace p = fieldsync::protocol;
namespace srv = fieldsync::server;
namespace fs = std::filesystem;
using fieldsync::Replica;
using fieldsync::SyncEngine;

namespace {

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

const std::string& schema_json() {
    static const std::string s =
        read_file(fs::path(FIELDSYNC_SOURCE_DIR) / "protocol/schemas/household-survey.json");
    return s;
}

constexpr std::uint64_t t_start = 1'700'000'000'000;
const std::vector<std::string> villages = {"ordos/ejin-horo/altan-xire/longhuqu",
                                           "ordos/ejin-horo/altan-xire/hashatu",
                                           "ordos/ejin-horo/altan-xire/nalinxili"};
const char* statuses[] = {"national_line", "dibao_line", "marginal", "not_poor", "exited"};
const char* modes[] = {"land_adoption", "entrusted_breeding", "lambs_for_ewes", "tourism_jobs"};

struct Stats {
    std::uint64_t steps = 0, writes = 0, cuts = 0, lost_frames = 0, duplicates = 0,
                  server_crashes = 0, tablet_crashes = 0, reassignments = 0, resolutions = 0,
                  moves = 0, acked_items = 0, rejected_at_end = 0;
};

struct Conn {
    int tablet = -1;  // -1: a ghost connection replaying duplicates
    std::unique_ptr<srv::SyncSession> session;
    std::deque<p::Bytes> to_server;
    std::deque<p::Bytes> to_tablet;
    std::map<std::uint64_t, p::Push> pushes;  // batch -> what was pushed (for check 2)
    bool closing = false;                     // the server asked to close after the queued frames
};

struct Tablet {
    std::string user;
    fs::path file;
    std::int64_t skew_ms = 0;
    std::shared_ptr<Replica> replica;
    std::unique_ptr<SyncEngine> engine;
    std::shared_ptr<Conn> conn;
    std::vector<p::Bytes> sent;  // hello and push frames, for duplicates
    bool supervisor = false;
    std::shared_ptr<std::mt19937_64> ids;  // the tablet's "random" ids, from the seed
};

class Simulation {
public:
    Simulation(std::uint64_t seed, fs::path dir) : m_rng(seed), m_dir(std::move(dir)) {
        m_schema = std::make_unique<p::Schema>(p::Schema::load(schema_json()).value());
        open_server(/*fresh=*/true);
        // Users: 2-4 enumerators spread over the villages, one banner supervisor.
        const int enumerators = pick(2, 4);
        with_server_txn([&](srv::Store& s) {
            for (const auto& code : {std::string("ordos"), std::string("ordos/ejin-horo"),
                                     std::string("ordos/ejin-horo/altan-xire")}) {
                put_area(s, code);
            }
            for (const auto& v : villages)
                put_area(s, v);
            for (int i = 0; i < enumerators; ++i)
                add_user(s, "enum-" + std::to_string(i), srv::Role::enumerator,
                         {villages[static_cast<std::size_t>(i) % villages.size()]});
            add_user(s, "sup", srv::Role::supervisor, {"ordos/ejin-horo"});
        });
        // Tablets: one or two per enumerator, one for the supervisor.
        int n = 0;
        for (int i = 0; i < enumerators; ++i) {
            const int copies = pick(1, 2);
            for (int c = 0; c < copies; ++c)
                add_tablet("enum-" + std::to_string(i), n++);
        }
        add_tablet("sup", n++);
        m_tablets.back().supervisor = true;
    }

    ~Simulation() {
        for (auto& t : m_tablets) {
            t.engine.reset();
            t.replica.reset();
        }
        m_conns.clear();
        m_store.reset();
    }

    Stats stats;

    void run(int steps) {
        for (int i = 0; i < steps; ++i) {
            stats.steps++;
            storm_step();
        }
        quiesce();
        check();
    }

private:
    // --- helpers ------------------------------------------------------------------------------
    int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(m_rng); }
    bool chance(int per_mille) { return pick(1, 1000) <= per_mille; }
    std::uint64_t now() const { return m_now; }

    void put_area(srv::Store& s, const std::string& code) {
        srv::Area a;
        a.code = code;
        a.parent = code.find('/') == std::string::npos ? "" : code.substr(0, code.rfind('/'));
        a.level = "area";
        a.name_en = code;
        REQUIRE(s.put_area(a));
    }
    void add_user(srv::Store& s, const std::string& name, srv::Role role,
                  std::vector<std::string> areas) {
        srv::User u;
        u.name = name;
        u.display_name = name;
        u.role = role;
        u.areas = std::move(areas);
        u.password_hash = srv::hash_password(name + "-pw", 1000);
        REQUIRE(s.add_user(u).ok());
    }

    void add_tablet(const std::string& user, int n) {
        Tablet t;
        t.user = user;
        t.file = m_dir / ("tablet-" + std::to_string(n) + ".db");
        // Clock skew: most tablets are close, some are minutes, hours or a year off.
        const int kind = pick(0, 9);
        const std::int64_t minute = 60'000;
        t.skew_ms = kind < 5   ? pick(-30, 30) * 1000
                    : kind < 7 ? pick(-90, 90) * minute
                    : kind < 9 ? pick(-12, 12) * 60 * minute
                               : (pick(0, 1) ? 1 : -1) * 365 * 24 * 60 * minute;
        t.ids = std::make_shared<std::mt19937_64>(m_rng());
        m_tablets.push_back(std::move(t));
        open_replica(m_tablets.back());
    }

    void open_replica(Tablet& t) {
        fieldsync::ReplicaOptions o;
        const std::int64_t skew = t.skew_ms;
        o.clock = [this, skew] {
            return static_cast<std::uint64_t>(static_cast<std::int64_t>(m_now) + skew);
        };
        o.random = [ids = t.ids](std::uint8_t* out, std::size_t n) {
            for (std::size_t i = 0; i < n; ++i)
                out[i] = static_cast<std::uint8_t>((*ids)());
        };
        auto r = Replica::open(t.file, o);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
        t.replica = std::move(*r);
    }

    void open_server(bool fresh) {
        auto store = srv::open_sqlite_store(m_dir / "server.db");
        REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
        m_store = std::move(*store);
        if (fresh) REQUIRE(m_store->put_schema(m_schema->version(), schema_json()));
        m_clock = std::make_unique<p::HybridClock>([this] { return m_now; });
        m_ctx = srv::SyncContext{};
        m_ctx.store = m_store.get();
        m_ctx.schema = m_schema.get();
        m_ctx.now_ms = [this] { return m_now; };
        m_ctx.clock = m_clock.get();
        m_ctx.throttle = nullptr;
        m_ctx.limits.max_page = 7;   // several pages even for small scopes
        m_ctx.limits.max_batch = 5;  // several batches too
    }

    template <class F>
    void with_server_txn(F&& fn) {
        REQUIRE(m_store->begin());
        fn(*m_store);
        REQUIRE(m_store->commit());
    }

    void trace(const Tablet& t, const char* dir, const p::Bytes& f) {
        static const char* who = std::getenv("FIELDSYNC_SIM_TRACE");
        if (!who || (t.user != who && std::string(who) != "*")) return;
        auto m = p::decode_message(f);
        std::string extra;
        if (m) {
            if (auto* e = std::get_if<p::ErrorMessage>(&*m)) extra = e->code + " " + e->message;
            if (auto* h = std::get_if<p::Hello>(&*m)) extra = "cursor " + std::to_string(h->cursor);
            if (auto* c = std::get_if<p::Changes>(&*m)) {
                extra = "since " + std::to_string(c->since) +
                        " n=" + std::to_string(c->items.size()) + (c->more ? " more" : "");
                for (auto& it : c->items)
                    extra += " " + it.record.id.to_string().substr(9, 9);
            }
            if (auto* n = std::get_if<p::Notify>(&*m))
                for (auto& it : n->items)
                    extra += " " + it.record.id.to_string().substr(9, 9);
            if (auto* pu = std::get_if<p::Push>(&*m))
                for (auto& it : pu->items)
                    extra += " " + it.record.id.to_string().substr(9, 9);
            if (auto* a = std::get_if<p::PushAck>(&*m))
                for (auto& r : a->results)
                    extra += r.ok ? " ok" : " " + r.code;
            if (auto* r = std::get_if<p::Revoke>(&*m))
                extra = "n=" + std::to_string(r->records.size());
            if (auto* w = std::get_if<p::Welcome>(&*m)) extra = w->scope.empty() ? "" : w->scope[0];
        }
        MESSAGE("step " << stats.steps << " " << t.file.filename().string() << " " << dir << " "
                        << (m ? std::string(p::message_type(*m)) : "?") << " " << extra);
    }

    // --- connections --------------------------------------------------------------------------
    void connect(int ti) {
        Tablet& t = m_tablets[static_cast<std::size_t>(ti)];
        if (t.conn) return;
        auto c = std::make_shared<Conn>();
        c->tablet = ti;
        c->session = std::make_unique<srv::SyncSession>(m_ctx, "tablet-" + std::to_string(ti));
        t.conn = c;
        m_conns.push_back(c);
        // Half the tablets pipeline their pulls, as the Replicator does (apply_deferred).
        fieldsync::EngineOptions eo;
        eo.pipeline_pulls = ti % 2 == 0;
        t.engine = std::make_unique<SyncEngine>(t.replica, eo);
        from_engine(t, t.engine->start({t.user, t.user + "-pw", ""}, "sim/1"));
    }

    void from_engine(Tablet& t, const fieldsync::EngineOutput& out) {
        if (!t.conn) return;
        for (const auto& f : out.frames) {
            auto m = p::decode_message(f);
            REQUIRE(m.ok());
            if (std::holds_alternative<p::Hello>(*m) || std::holds_alternative<p::Push>(*m))
                t.sent.push_back(f);
            trace(t, "->", f);
            t.conn->to_server.push_back(f);
        }
        if (out.close) cut(t.conn);
    }

    void cut(std::shared_ptr<Conn> c) {  // by value: callers pass t.conn, which this resets
        stats.lost_frames += c->to_server.size() + c->to_tablet.size();
        if (c->tablet >= 0) {
            Tablet& t = m_tablets[static_cast<std::size_t>(c->tablet)];
            if (t.conn == c) {
                if (t.engine) (void)t.engine->on_disconnected();
                t.engine.reset();
                t.conn.reset();
            }
        }
        std::erase(m_conns, c);
    }

    // Handles one frame on the server: one transaction, replies only after the commit.
    void server_deliver(const std::shared_ptr<Conn>& c, bool may_crash) {
        p::Bytes frame = std::move(c->to_server.front());
        c->to_server.pop_front();
        auto decoded = p::decode_message(frame);
        REQUIRE(m_store->begin());
        m_ctx.touched_areas.clear();
        srv::SyncOutput out = c->session->handle(frame);
        if (may_crash && chance(15)) {
            // Crash before the commit: nothing of this frame survives, every connection drops.
            m_store->rollback();
            stats.server_crashes++;
            server_crash();
            return;
        }
        REQUIRE(m_store->commit());
        // Remember acknowledged items (check 2).
        if (decoded && std::holds_alternative<p::Push>(*decoded)) {
            const auto& push = std::get<p::Push>(*decoded);
            for (const auto& f : out.frames) {
                auto m = p::decode_message(f);
                if (!m || !std::holds_alternative<p::PushAck>(*m)) continue;
                const auto& ack = std::get<p::PushAck>(*m);
                for (std::size_t i = 0; i < ack.results.size() && i < push.items.size(); ++i)
                    if (ack.results[i].ok) m_acked.push_back(push.items[i].record);
            }
        }
        for (auto& f : out.frames)
            c->to_tablet.push_back(std::move(f));
        if (out.close) c->closing = true;
        if (out.wrote) wake_live_sessions(c.get());
        m_ctx.touched_areas.clear();
    }

    void wake_live_sessions(Conn* except) {
        const auto touched = m_ctx.touched_areas;
        for (auto& other : m_conns) {
            if (other.get() == except || !other->session->live()) continue;
            bool hit = false;
            for (const auto& a : touched)
                hit = hit || other->session->scope().covers(a);
            if (!hit) continue;
            if (std::getenv("FIELDSYNC_SIM_TRACE")) {
                std::string ta;
                for (const auto& a : touched)
                    ta += a + " ";
                MESSAGE("wake tablet " << other->tablet << " scope "
                                       << (other->session->scope().areas.empty()
                                               ? ""
                                               : other->session->scope().areas[0])
                                       << " touched " << ta);
            }
            srv::SyncOutput out = other->session->catch_up();
            for (auto& f : out.frames)
                other->to_tablet.push_back(std::move(f));
        }
    }

    void server_crash() {
        auto conns = m_conns;
        for (auto& c : conns)
            cut(c);
        m_store.reset();
        open_server(/*fresh=*/false);
    }

    void tablet_deliver(const std::shared_ptr<Conn>& c) {
        p::Bytes frame = std::move(c->to_tablet.front());
        c->to_tablet.pop_front();
        if (c->tablet < 0) return;  // ghost: nobody listens
        Tablet& t = m_tablets[static_cast<std::size_t>(c->tablet)];
        if (!t.engine) return;
        trace(t, "<-", frame);
        from_engine(t, t.engine->on_frame(frame));
        // A kept page is applied now, or by whatever reaches the engine next (both must hold).
        if (t.engine && t.conn == c && t.engine->has_deferred() && chance(500))
            from_engine(t, t.engine->apply_deferred());
        if (c->closing && c->to_tablet.empty() && t.conn == c) cut(c);
    }

    // --- local work ---------------------------------------------------------------------------
    std::vector<fieldsync::RecordView> households(Tablet& t) {
        fieldsync::Filter f;
        auto r = t.replica->list("households", f);
        REQUIRE(r.ok());
        return std::move(*r);
    }

    void local_write(int ti) {
        Tablet& t = m_tablets[static_cast<std::size_t>(ti)];
        if (!t.replica->schema()) return;  // never synced: writes are refused
        auto held = households(t);
        const int kind = pick(0, 9);
        fieldsync::Status st;
        if (t.supervisor) {
            if (held.empty()) return;
            const auto& h =
                held[static_cast<std::size_t>(pick(0, static_cast<int>(held.size()) - 1))];
            if (!h.conflicts.empty() && kind < 7) {
                // Resolve: choose one of the competing values of the first conflicted field.
                const std::string field = h.conflicts.front();
                if (field == std::string(p::deleted_field)) {
                    st = chance(500) ? t.replica->remove("households", h.id)
                                     : t.replica->restore("households", h.id);
                } else {
                    const auto& comp = h.fields.at(field).competing;
                    if (comp.empty()) return;
                    st = t.replica->update(
                        "households", h.id,
                        {{field,
                          comp[static_cast<std::size_t>(pick(0, static_cast<int>(comp.size()) - 1))]
                              .value}});
                }
                stats.resolutions++;
            } else {
                st = t.replica->update(
                    "households", h.id,
                    {{"village", villages[static_cast<std::size_t>(pick(0, 2))]}});
                stats.moves++;
            }
        } else if (held.empty() || kind < 2) {
            const auto& area = t.replica->sync_info();
            REQUIRE(area.ok());
            // Create in one of the user's villages (the scope from welcome).
            std::string village = villages[0];
            auto scope = scope_of(t.user);
            if (!scope.empty()) village = scope.front();
            auto id = t.replica->create(
                "households", {{"village", village},
                               {"head_name", std::string("Bater ") + std::to_string(pick(1, 999))},
                               {"poverty_status", std::string(statuses[pick(0, 4)])}});
            if (!id.ok()) st = id.error();
        } else {
            const auto& h =
                held[static_cast<std::size_t>(pick(0, static_cast<int>(held.size()) - 1))];
            if (kind < 5) {
                st = t.replica->update("households", h.id,
                                       {{"poverty_status", std::string(statuses[pick(0, 4)])}});
            } else if (kind < 6) {
                st = t.replica->update(
                    "households", h.id,
                    {{"notes", std::string("visit ") + std::to_string(pick(1, 99))}});
            } else if (kind < 7) {
                st = t.replica->add_to_set("households", h.id, "assistance",
                                           std::string(modes[pick(0, 3)]));
            } else if (kind < 8) {
                st = t.replica->remove_from_set("households", h.id, "assistance",
                                                std::string(modes[pick(0, 3)]));
            } else if (kind < 9) {
                st = t.replica->increment("households", h.id, "visit_count", pick(1, 3));
            } else {
                st = t.replica->remove("households", h.id);
            }
        }
        // A refused local write (invalid, or outside the scope the tablet last received: its
        // user was reassigned) changes nothing;
        // anything else must succeed.
        if (!st.ok()) {
            REQUIRE_MESSAGE((st.error().code == p::protocol_errc::validation_failed ||
                             st.error().code == p::protocol_errc::forbidden),
                            st.error().message);
            return;
        }
        stats.writes++;
        if (t.engine) from_engine(t, t.engine->push_pending());
    }

    std::vector<std::string> scope_of(const std::string& user) {
        auto u = m_store->user_by_name(user);
        REQUIRE(u.ok());
        return (*u) ? (*u)->areas : std::vector<std::string>{};
    }

    void reassign() {
        // An enumerator moves to another village.
        const int i = pick(0, static_cast<int>(m_tablets.size()) - 2);
        const std::string user = m_tablets[static_cast<std::size_t>(i)].user;
        with_server_txn([&](srv::Store& s) {
            auto u = s.user_by_name(user).value();
            REQUIRE(u.has_value());
            u->areas = {villages[static_cast<std::size_t>(pick(0, 2))]};
            if (std::getenv("FIELDSYNC_SIM_VERBOSE"))
                MESSAGE("step " << stats.steps << ": " << user << " reassigned to " << u->areas[0]);
            REQUIRE(s.update_user(*u));
        });
        stats.reassignments++;
    }

    // --- the storm ----------------------------------------------------------------------------
    void storm_step() {
        m_now += static_cast<std::uint64_t>(pick(0, 20'000));
        const int ti = pick(0, static_cast<int>(m_tablets.size()) - 1);
        const int action = pick(0, 999);
        if (action < 220) {
            local_write(ti);
        } else if (action < 300) {
            connect(ti);
        } else if (action < 700) {
            deliver_some(/*may_crash=*/true);
        } else if (action < 760) {
            if (!m_conns.empty()) {
                stats.cuts++;
                cut(m_conns[static_cast<std::size_t>(
                    pick(0, static_cast<int>(m_conns.size()) - 1))]);
            }
        } else if (action < 790) {
            duplicate(ti);
        } else if (action < 805) {
            Tablet& t = m_tablets[static_cast<std::size_t>(ti)];
            // Crash: the process vanishes (no on_disconnected), the file reopens.
            if (t.conn) {
                stats.lost_frames += t.conn->to_server.size() + t.conn->to_tablet.size();
                std::erase(m_conns, t.conn);
            }
            t.conn.reset();
            t.engine.reset();
            t.replica.reset();
            open_replica(t);
            stats.tablet_crashes++;
        } else if (action < 810) {
            reassign();
        } else {
            deliver_some(/*may_crash=*/true);
        }
    }

    void duplicate(int ti) {
        Tablet& t = m_tablets[static_cast<std::size_t>(ti)];
        if (t.sent.size() < 2) return;
        auto ghost = std::make_shared<Conn>();
        ghost->session = std::make_unique<srv::SyncSession>(m_ctx, "ghost");
        // The first hello it sent, then one of its pushes (or the same batch twice).
        for (const auto& f : t.sent) {
            auto m = p::decode_message(f);
            if (m && std::holds_alternative<p::Hello>(*m)) {
                ghost->to_server.push_back(f);
                break;
            }
        }
        const auto& again =
            t.sent[static_cast<std::size_t>(pick(0, static_cast<int>(t.sent.size()) - 1))];
        ghost->to_server.push_back(again);
        if (chance(300)) ghost->to_server.push_back(again);
        m_conns.push_back(ghost);
        stats.duplicates++;
    }

    // Delivers one frame somewhere (random connection, random direction).
    bool deliver_some(bool may_crash) {
        std::vector<std::pair<std::shared_ptr<Conn>, bool>> ready;  // (conn, to_server)
        for (auto& c : m_conns) {
            if (!c->to_server.empty()) ready.emplace_back(c, true);
            if (!c->to_tablet.empty()) ready.emplace_back(c, false);
        }
        if (ready.empty()) return false;
        auto [c, up] = ready[static_cast<std::size_t>(pick(0, static_cast<int>(ready.size()) - 1))];
        if (up)
            server_deliver(c, may_crash);
        else
            tablet_deliver(c);
        if (c->tablet < 0 && c->to_server.empty() && c->to_tablet.empty()) std::erase(m_conns, c);
        return true;
    }

    // --- calm: sync to quiescence --------------------------------------------------------------
    void drain() {
        for (int guard = 0; guard < 200000; ++guard)
            if (!deliver_some(/*may_crash=*/false)) return;
        FAIL("the network did not drain");
    }

    void quiesce() {
        // Ghosts finish; every tablet connects, pushes, pulls, goes live; repeat so that what
        // one tablet pushes reaches the others, and so that rejected-then-restamped items land.
        for (int round = 0; round < 4; ++round) {
            for (std::size_t i = 0; i < m_tablets.size(); ++i) {
                Tablet& t = m_tablets[i];
                if (t.conn) cut(t.conn);  // fresh sessions: every pending write is pushed
                connect(static_cast<int>(i));
                drain();
            }
            m_now += 1000;
        }
        drain();
        for (auto& t : m_tablets) {
            REQUIRE_MESSAGE(t.engine != nullptr, t.user << ": no session at the end");
            INFO(t.user << " phase " << fieldsync::to_string(t.engine->phase()));
            const auto progress = t.engine->progress();
            if (progress.last_error) INFO("last error: " << progress.last_error->message);
            REQUIRE(t.engine->phase() == fieldsync::SyncPhase::live);
        }
    }

    // --- the checks -----------------------------------------------------------------------------
    std::map<std::string, p::Bytes> server_scope(const std::vector<std::string>& areas) {
        srv::Scope scope;
        scope.areas = areas;
        std::map<std::string, p::Bytes> out;
        REQUIRE(m_store->for_each_record(scope, "", [&](const srv::StoredRecord& r) {
            out[r.collection + "/" + r.id.to_string()] = r.state;
            return true;
        }));
        return out;
    }

    void check() {
        // 1 and 4: each tablet holds exactly its scope (rejected records aside).
        for (auto& t : m_tablets) {
            std::vector<std::string> areas = scope_of(t.user);
            auto expected = server_scope(areas);
            std::map<std::string, p::Bytes> held;
            for (const char* coll : {"households", "members", "visits"}) {
                fieldsync::Filter f;
                f.include_deleted = true;
                auto list = t.replica->list(coll, f);
                REQUIRE(list.ok());
                for (const auto& v : *list) {
                    if (v.sync == fieldsync::SyncStatus::rejected) {
                        stats.rejected_at_end++;
                        if (std::getenv("FIELDSYNC_SIM_VERBOSE"))
                            MESSAGE(t.user << ": " << v.id.to_string() << " rejected: "
                                           << v.reject_code << ": " << v.reject_reason
                                           << "\n  local: " << p::record_to_json(v.state) << " ctx "
                                           << v.state.context.to_string());
                        continue;
                    }
                    CHECK_MESSAGE(v.sync == fieldsync::SyncStatus::synced,
                                  t.user << ": " << v.id.to_string() << " still pending");
                    held[std::string(coll) + "/" + v.id.to_string()] = p::encode_record(v.state);
                }
            }
            for (const auto& [key, bytes] : expected) {
                auto it = held.find(key);
                if (it == held.end()) {
                    // Only a rejected local copy may stand in for it.
                    CHECK_MESSAGE(false, t.user << " lacks " << key);
                } else {
                    CHECK_MESSAGE(it->second == bytes, t.user << " diverges on " << key);
                }
            }
            for (const auto& [key, bytes] : held) {
                std::string where = "?";
                if (auto st = p::decode_record(bytes); st.ok()) {
                    where = m_schema->area_of(*st).ok() ? m_schema->area_of(*st).value() : "?";
                    auto sr = m_store->get_record(st->collection, st->id);
                    if (sr.ok() && sr->has_value())
                        where += " (server: " + (*sr)->area + ", seq " +
                                 std::to_string((*sr)->seq) +
                                 (p::encode_record(*st) == (*sr)->state ? ", same state)"
                                                                        : ", other state)");
                    else
                        where += " (not on the server)";
                }
                CHECK_MESSAGE(expected.count(key) == 1,
                              t.file.filename().string()
                                  << " " << t.user << " (scope " << (areas.empty() ? "" : areas[0])
                                  << ") holds " << key << " in " << where << ", outside its scope");
            }
        }
        // 2: every acknowledged write is covered by the server's state; the audit log has it.
        stats.acked_items = m_acked.size();
        for (const auto& rec : m_acked) {
            auto stored = m_store->get_record(rec.collection, rec.id);
            REQUIRE(stored.ok());
            REQUIRE_MESSAGE(stored->has_value(),
                            "acknowledged record " << rec.id.to_string() << " is missing");
            auto state = p::decode_record((*stored)->state).value();
            CHECK_MESSAGE(state.context.dominates(rec.context),
                          "acknowledged writes to " << rec.id.to_string() << " were lost");
            auto audit = m_store->audit_for(rec.collection, rec.id, 1);
            REQUIRE(audit.ok());
            CHECK(!audit->empty());
        }
        // 3: open conflicts are exactly the review registers holding several values.
        std::set<std::string> expected_conflicts;
        srv::Scope all;
        all.areas = {"ordos"};
        REQUIRE(m_store->for_each_record(all, "", [&](const srv::StoredRecord& r) {
            auto s = p::decode_record(r.state).value();
            for (const auto& f : s.conflicts())
                expected_conflicts.insert(r.collection + "/" + r.id.to_string() + "/" + f);
            return true;
        }));
        std::set<std::string> open;
        srv::ConflictFilter filter;
        filter.open = true;
        filter.limit = 100000;
        for (const auto& c : m_store->list_conflicts(filter).value())
            open.insert(c.collection + "/" + c.record.to_string() + "/" + c.field);
        CHECK(open == expected_conflicts);
    }

    std::mt19937_64 m_rng;
    fs::path m_dir;
    std::uint64_t m_now = t_start;
    std::unique_ptr<p::Schema> m_schema;
    std::unique_ptr<srv::Store> m_store;
    std::unique_ptr<p::HybridClock> m_clock;
    srv::SyncContext m_ctx;
    std::vector<Tablet> m_tablets;
    std::vector<std::shared_ptr<Conn>> m_conns;
    std::vector<p::RecordState> m_acked;
};

fs::path sim_root() {
    // /dev/shm keeps the many fsyncs of the SQLite files off the disk when it exists.
    std::error_code ec;
    fs::path base = fs::exists("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    return base / ("fieldsync-sim-" + std::to_string(::getpid()));
}

}  // namespace

namespace {

// Runs seeds base .. base+count-1 (each checked by Simulation::run) and prints the totals.
void run_seeds(std::uint64_t base, std::uint64_t seeds, int steps) {
    Stats total;
    const fs::path root = sim_root();
    for (std::uint64_t k = 0; k < seeds; ++k) {
        const std::uint64_t seed = base + k;
        INFO("replay with FIELDSYNC_SIM_SEED=" << seed << " FIELDSYNC_SIM_SEEDS=1");
        const fs::path dir = root / std::to_string(seed);
        fs::remove_all(dir);
        fs::create_directories(dir);
        {
            Simulation sim(seed, dir);
            sim.run(steps);
            const Stats& s = sim.stats;
            total.steps += s.steps;
            total.writes += s.writes;
            total.cuts += s.cuts;
            total.lost_frames += s.lost_frames;
            total.duplicates += s.duplicates;
            total.server_crashes += s.server_crashes;
            total.tablet_crashes += s.tablet_crashes;
            total.reassignments += s.reassignments;
            total.resolutions += s.resolutions;
            total.moves += s.moves;
            total.acked_items += s.acked_items;
            total.rejected_at_end += s.rejected_at_end;
        }
        fs::remove_all(dir);
    }
    fs::remove_all(root);
    MESSAGE("simulation: base seed "
            << base << ", " << seeds << " seeds, " << total.steps << " steps, " << total.writes
            << " writes, " << total.acked_items << " acknowledged items, faults: " << total.cuts
            << " cuts (" << total.lost_frames << " frames lost), " << total.duplicates
            << " duplicate replays, " << total.server_crashes << " server crashes, "
            << total.tablet_crashes << " tablet crashes, " << total.reassignments
            << " reassignments, " << total.moves << " moves, " << total.resolutions
            << " resolutions; " << total.rejected_at_end << " records rejected at the end");
}

}  // namespace

TEST_CASE("Simulation: every replica converges and no acknowledged write is lost") {
    // CI runs a fixed range (seeds 1000-1199) so that it is reproducible; explore new seeds with
    // FIELDSYNC_SIM_SEED=<any> FIELDSYNC_SIM_SEEDS=<n>.
    run_seeds(env_u64("FIELDSYNC_SIM_SEED", 1000), env_u64("FIELDSYNC_SIM_SEEDS", 200),
              static_cast<int>(env_u64("FIELDSYNC_SIM_STEPS", 300)));
}

TEST_CASE("Simulation: seeds that once found a bug stay fixed") {
    // 107: an enumerator moved to another village and back. The server's "re-bootstrap" notice
    // came under the temporary scope, the session was cut before the tablet began it, and the
    // server did not ask again (the tablet had never settled under the temporary scope), so a
    // household refused under that scope stayed refused. Fixed: the engine persists the notice
    // at once (ReplicaImpl::request_rebootstrap), and a finished re-bootstrap offers refused
    // records again (ReplicaImpl::finish_rebootstrap).
    for (std::uint64_t seed : {107})
        run_seeds(seed, 1, 300);
}
