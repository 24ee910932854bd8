// End to end under faults: the real fieldsync-server and several fieldsync-tablet processes
// syncing at the same time through a fault-injecting TCP proxy on loopback, while the server is
// killed with SIGKILL at random instants and restarted on the same data folder.
//
// The proxy (below) forwards bytes between each tablet and the server and, per connection,
// after a random number of bytes: cuts the connection mid-frame, stalls it for up to 1.5 s,
// or drops a chunk of bytes and carries on (the WebSocket stream is then corrupt; both ends
// must notice and close). Tablets write offline between rounds and sync concurrently in each
// round; a sync may fail, which is the point.
//
// After the faults stop, every tablet syncs to quiescence, and then:
//  - every record any tablet created is on the server (nothing recorded is lost);
//  - every record that a tablet saw acknowledged ("synced") during the faulty rounds is on the
//    server with the tablet's last written values or later ones;
//  - each tablet holds exactly the server's records of its village, with equal field values;
//  - no tablet has pending or refused changes.
// Bounded: FIELDSYNC_FAULT_ROUNDS rounds (default 6; the server is
// killed in about three rounds of four, and at least once), each sync at most 10 s, every wait
// timed. The seed (FIELDSYNC_FAULT_SEED, default 7) drives the writes, the proxy and the kills;
// thread timing still varies between runs, so the same seed explores nearby schedules, not one.
#include <poll.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>

#include "e2e_support.hpp"

using namespace e2e;

namespace {

const std::string longhuqu = "ordos/ejin-horo/altan-xire/longhuqu";
const std::string hashatu = "ordos/ejin-horo/altan-xire/hashatu";

std::uint64_t env_or(const char* name, std::uint64_t def) {
    const char* v = std::getenv(name);
    return v && *v ? std::strtoull(v, nullptr, 10) : def;
}

/// A TCP proxy on 127.0.0.1 that injects faults into the connections it carries.
class FaultProxy {
public:
    struct Counts {
        std::atomic<std::uint64_t> connections{0}, cuts{0}, stalls{0}, drops{0}, refused{0},
            bytes{0};
    };

    explicit FaultProxy(std::uint64_t seed) : m_seed(seed) {
        m_listen = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(m_listen >= 0);
        int one = 1;
        ::setsockopt(m_listen, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        REQUIRE(::bind(m_listen, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(m_listen, 64) == 0);
        socklen_t len = sizeof a;
        REQUIRE(::getsockname(m_listen, reinterpret_cast<sockaddr*>(&a), &len) == 0);
        m_port = ntohs(a.sin_port);
        m_acceptor = std::thread([this] { accept_loop(); });
    }
    ~FaultProxy() {
        m_stop = true;
        if (m_acceptor.joinable()) m_acceptor.join();
        std::vector<std::thread> pumps;
        {
            std::lock_guard lock(m_mutex);
            pumps.swap(m_pumps);
        }
        for (auto& t : pumps)
            t.join();
        ::close(m_listen);
    }
    FaultProxy(const FaultProxy&) = delete;
    FaultProxy& operator=(const FaultProxy&) = delete;

    std::uint16_t port() const { return m_port; }
    std::string url() const { return "ws://127.0.0.1:" + std::to_string(m_port) + "/sync"; }
    void set_upstream(std::uint16_t port) { m_upstream = port; }
    void set_faults(bool on) { m_faults = on; }
    const Counts& counts() const { return m_counts; }

private:
    void accept_loop() {
        std::uint64_t n = 0;
        while (!m_stop) {
            pollfd p{m_listen, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            const int client = ::accept(m_listen, nullptr, nullptr);
            if (client < 0) continue;
            const int server = connect_upstream();
            if (server < 0) {  // the server is down (killed, restarting): refuse
                m_counts.refused++;
                ::close(client);
                continue;
            }
            m_counts.connections++;
            std::lock_guard lock(m_mutex);
            m_pumps.emplace_back([this, client, server, seed = m_seed * 1000003 + ++n] {
                pump(client, server, seed);
            });
        }
    }

    int connect_upstream() const {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) return -1;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(m_upstream.load());
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(fd);
            return -1;
        }
        return fd;
    }

    static bool write_all(int fd, const char* data, std::size_t n) {
        while (n > 0) {
            const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
            if (w <= 0) return false;
            data += w;
            n -= static_cast<std::size_t>(w);
        }
        return true;
    }

    // Forwards both ways until either side closes, the proxy stops, or a fault cuts it.
    void pump(int a, int b, std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        auto budget = [&] { return std::uniform_int_distribution<std::size_t>(16, 6000)(rng); };
        std::size_t until_fault = budget();
        char buf[4096];
        while (!m_stop) {
            pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
            if (::poll(p, 2, 50) < 0) break;
            bool closed = false;
            for (int i = 0; i < 2 && !closed; ++i) {
                if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                const int from = p[i].fd, to = p[1 - i].fd;
                const ssize_t r = ::recv(from, buf, sizeof buf, 0);
                if (r <= 0) {
                    closed = true;
                    break;
                }
                std::size_t n = static_cast<std::size_t>(r);
                if (!m_faults || n < until_fault) {
                    if (m_faults) until_fault -= n;
                    m_counts.bytes += n;
                    closed = !write_all(to, buf, n);
                    continue;
                }
                // A fault, somewhere inside this chunk.
                const std::size_t at = until_fault;
                until_fault = budget();
                const int kind = std::uniform_int_distribution<int>(0, 9)(rng);
                if (kind < 4) {  // cut mid-frame: forward a prefix, then close both ends
                    m_counts.cuts++;
                    (void)write_all(to, buf, at);
                    closed = true;
                } else if (kind < 7) {  // stall, then deliver everything
                    m_counts.stalls++;
                    std::this_thread::sleep_for(std::chrono::milliseconds(
                        std::uniform_int_distribution<int>(100, 1500)(rng)));
                    closed = !write_all(to, buf, n);
                } else if (kind < 8) {  // drop the rest of the chunk and carry on
                    m_counts.drops++;
                    closed = !write_all(to, buf, at);
                } else {
                    closed = !write_all(to, buf, n);
                }
                m_counts.bytes += n;
            }
            if (closed) break;
        }
        ::shutdown(a, SHUT_RDWR);
        ::shutdown(b, SHUT_RDWR);
        ::close(a);
        ::close(b);
    }

    std::uint64_t m_seed;
    int m_listen = -1;
    std::uint16_t m_port = 0;
    std::atomic<std::uint16_t> m_upstream{0};
    std::atomic<bool> m_faults{false};
    std::atomic<bool> m_stop{false};
    Counts m_counts;
    std::thread m_acceptor;
    std::mutex m_mutex;
    std::vector<std::thread> m_pumps;
};

struct Device {
    std::string user;
    std::string village;
    std::unique_ptr<Tablet> tablet;
    std::vector<std::string> created;  // household ids this tablet added
};

/// The tablet's households (not deleted) by id: (sync status, fields).
std::map<std::string, std::pair<std::string, json::object>> tablet_households(Tablet& t) {
    std::map<std::string, std::pair<std::string, json::object>> out;
    const json::value list = t.ok({"list", "households"});
    for (const auto& r : list.as_array()) {
        const auto& o = r.as_object();
        if (o.at("deleted").as_bool()) continue;
        out[std::string(o.at("id").as_string())] = {std::string(o.at("sync").as_string()),
                                                    o.at("fields").as_object()};
    }
    return out;
}

/// The server's households of `village` (not deleted), by id: fields.
std::map<std::string, json::object> server_households(std::uint16_t port, const std::string& token,
                                                      const std::string& village) {
    std::map<std::string, json::object> out;
    std::string after;
    for (int page = 0; page < 100; ++page) {
        std::string target = "/api/records?collection=households&limit=500&area=";
        for (char c : village)
            target += c == '/' ? std::string("%2F") : std::string(1, c);
        if (!after.empty()) target += "&after=" + after;
        auto r = http(port, "GET", target, "", token);
        REQUIRE_MESSAGE(r.status == 200, r.body);
        const json::value body = r.json();
        for (const auto& rec : body.at("records").as_array())
            out[std::string(rec.at("id").as_string())] = rec.at("fields").as_object();
        if (body.at("next").is_null()) break;
        after = std::to_string(body.at("next").to_number<std::int64_t>());
    }
    return out;
}

/// The fields both sides must agree on (the tablet tool and the API print values alike for
/// text, enum and integer fields).
std::string essentials(const json::object& fields) {
    std::string s;
    for (const char* name : {"head_name", "poverty_status", "members_count", "village"}) {
        s += name;
        s += '=';
        if (const auto* v = fields.if_contains(name)) s += json::serialize(*v);
        s += ';';
    }
    return s;
}

}  // namespace

TEST_CASE(
    "e2e: tablets sync through a faulty network while the server is SIGKILLed; nothing is lost") {
    if (!have_server()) {
        MESSAGE("fieldsync-server is not built; skipping");
        return;
    }
    const std::uint64_t seed = env_or("FIELDSYNC_FAULT_SEED", 7);
    const int rounds = static_cast<int>(env_or("FIELDSYNC_FAULT_ROUNDS", 6));
    INFO("replay with FIELDSYNC_FAULT_SEED=" << seed);
    std::mt19937_64 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

    TempDir dir("fault");
    auto server = std::make_unique<Server>(dir.path());
    FaultProxy proxy(seed);
    proxy.set_upstream(server->port());

    // Two tablets of the Longhuqu enumerator (two devices of one user) and one of Hashatu's.
    std::vector<Device> devices;
    devices.push_back({"enumerator-longhuqu", longhuqu, nullptr, {}});
    devices.push_back({"enumerator-longhuqu", longhuqu, nullptr, {}});
    devices.push_back({"enumerator-hashatu", hashatu, nullptr, {}});
    for (std::size_t i = 0; i < devices.size(); ++i) {
        auto& d = devices[i];
        d.tablet = std::make_unique<Tablet>(dir.path(), "tablet" + std::to_string(i));
        d.tablet->init(proxy.url(), d.user, server->password(d.user));  // faults off: log in
    }

    std::map<std::string, std::string> acked;  // household id -> essentials when seen synced
    int kills = 0, failed_syncs = 0, writes = 0;
    static const char* const statuses[] = {"national_line", "dibao_line", "marginal", "not_poor"};
    for (int round = 0; round < rounds; ++round) {
        // Offline writes: two new households per tablet, and an edit of an earlier one.
        for (auto& d : devices) {
            for (int k = 0; k < 2; ++k) {
                auto added = d.tablet->ok(
                    {"add", "household", "village=" + d.village,
                     "head_name=Round" + std::to_string(round) + " " + std::to_string(writes),
                     std::string("poverty_status=") + statuses[pick(0, 3)],
                     "members_count=" + std::to_string(pick(1, 9))});
                d.created.emplace_back(added.at("id").as_string());
                ++writes;
            }
            if (d.created.size() > 2) {
                const auto& id = d.created[static_cast<std::size_t>(
                    pick(0, static_cast<int>(d.created.size()) - 3))];
                d.tablet->ok(
                    {"edit", "households", id, "members_count=" + std::to_string(pick(1, 9))});
                ++writes;
            }
        }

        // Every tablet syncs at once through the faulty proxy; maybe the server dies meanwhile.
        proxy.set_faults(true);
        std::vector<std::unique_ptr<Process>> syncs;
        for (std::size_t i = 0; i < devices.size(); ++i) {
            const auto tag = "sync-r" + std::to_string(round) + "-t" + std::to_string(i);
            syncs.push_back(std::make_unique<Process>(
                bin("fieldsync-tablet"),
                std::vector<std::string>{"--db", devices[i].tablet->db().string(), "--json", "sync",
                                         "--timeout", "10"},
                dir.path() / (tag + ".out"), dir.path() / (tag + ".err")));
        }
        if (pick(0, 3) != 0 || (round == rounds - 1 && kills == 0)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(pick(0, 1500)));
            server->signal(SIGKILL);
            REQUIRE(server->wait_exit(10s).has_value());
            server.reset();
            ++kills;
            server = std::make_unique<Server>(dir.path());  // same data folder, a new port
            proxy.set_upstream(server->port());
        }
        for (auto& s : syncs) {
            auto rc = s->wait(60s);
            if (!rc) {
                s->kill_now();
                FAIL_CHECK("a tablet sync did not end within 60 s (its --timeout is 10 s)");
            } else if (*rc != 0) {
                ++failed_syncs;
            }
        }
        proxy.set_faults(false);

        // What each tablet now reports as acknowledged must survive whatever happens next.
        for (auto& d : devices)
            for (const auto& [id, entry] : tablet_households(*d.tablet))
                if (entry.first == "synced") acked[id] = essentials(entry.second);
    }

    // The faults stop: everyone syncs to quiescence (twice, so each sees the others' last
    // uploads).
    for (int pass = 0; pass < 2; ++pass)
        for (auto& d : devices)
            d.tablet->sync();

    const std::string token = api_login(server->port(), "admin", server->password("admin"));
    std::map<std::string, json::object> on_server;
    for (const auto& village : {longhuqu, hashatu})
        for (auto& [id, fields] : server_households(server->port(), token, village))
            on_server[id] = fields;

    // Nothing any tablet recorded is lost.
    std::size_t created = 0;
    for (const auto& d : devices)
        for (const auto& id : d.created) {
            ++created;
            CHECK_MESSAGE(on_server.count(id) == 1,
                          "household " << id << " created on a tablet is missing on the server");
        }
    // Every acknowledged write is there, with its values or later ones (this test edits only
    // members_count after the first sync, so names and statuses must be exactly as acked).
    for (const auto& [id, ess] : acked) {
        auto it = on_server.find(id);
        REQUIRE_MESSAGE(it != on_server.end(),
                        "acknowledged household " << id << " is missing on the server");
        const auto got = essentials(it->second);
        CHECK_MESSAGE(
            got.substr(0, got.find("members_count")) == ess.substr(0, ess.find("members_count")),
            id << ": acked " << ess << ", server has " << got);
    }
    // Each tablet holds exactly its village, equal to the server, with nothing left to send.
    for (auto& d : devices) {
        const auto held = tablet_households(*d.tablet);
        const auto expected = server_households(server->port(), token, d.village);
        CHECK(held.size() == expected.size());
        for (const auto& [id, fields] : expected) {
            auto it = held.find(id);
            if (it == held.end()) {
                CHECK_MESSAGE(false, d.tablet->db().filename().string() << " lacks " << id);
                continue;
            }
            CHECK_MESSAGE(it->second.first == "synced", id << " is " << it->second.first);
            CHECK_MESSAGE(essentials(it->second.second) == essentials(fields),
                          id << ": tablet " << essentials(it->second.second) << ", server "
                             << essentials(fields));
        }
        const auto status = d.tablet->ok({"status"});
        CHECK(status.at("pending").as_int64() == 0);
    }

    const auto& c = proxy.counts();
    MESSAGE("fault e2e: seed " << seed << ", " << rounds << " rounds, " << devices.size()
                               << " tablets, " << writes << " writes (" << created
                               << " households), " << acked.size()
                               << " seen acknowledged; faults: " << c.cuts.load() << " cuts, "
                               << c.stalls.load() << " stalls, " << c.drops.load() << " drops over "
                               << c.connections.load() << " connections (" << c.refused.load()
                               << " refused while the server was down), " << kills
                               << " server SIGKILLs; " << failed_syncs
                               << " syncs failed along the way");
}
