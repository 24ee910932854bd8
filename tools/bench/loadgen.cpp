// loadgen: process-level benchmarks of fieldsync-server. Starts real `fieldsync-server`
// processes (127.0.0.1, --port 0 --port-file, a fresh --data-dir each, --demo) and drives them
// with many simulated tablets: WebSocket clients that speak the sync protocol (SPEC.md) from
// one io thread of this process (one Asio io_context, so 10,000 tablets cost 10,000 sockets,
// not 10,000 threads). The initial pull uses the SDK itself (Replica + Replicator).
//
// Scenarios (all by default, in this order; each prints RESULT lines, see emit()):
//   storage      the storage bound: raw SQLite inserts of the rows the server stores for new
//                households (the server's `records` table and indexes, WAL, synchronous=FULL,
//                the same upsert statement), one transaction per `--group` rows (the server's
//                group commit takes up to StoreWorker::Options::max_group = 256 frames; with
//                one record per push, that is 256 records per commit)
//   ingest       1, 10 and 100 tablets (`--tablets`) each push new demo-survey households, one
//                push in flight per tablet, `--items` records per push; records/s of durable
//                acks, p50/p99 push-to-ack latency, and the ratio to the storage bound; then
//                again with 100 tablets pushing `--batched-items` (20, then 200: the SDK's
//                default batch) records per push
//   pull         seeds one village with 5,000 households and 20,000 visits, then a fresh SDK
//                replica's first sync (Replicator::sync_once): seconds and records/s
//   fanout       1,000 live tablets in one village; one tablet pushes a household, the others
//                receive it as a notify: p50/p99 from the pusher's ack to each receipt
//   connections  server RSS with 1,000 and 10,000 idle connected tablets (hello + pull, live)
//
// Usage: loadgen [--server PATH] [--scenarios a,b,...] [--small] [--dir DIR] [--keep]
//                [--seconds S] [--records N] [--tablets 1,10,100] [--items N] [--group N]
//                [--batched-items 20,200]
//                [--pull-households N] [--pull-visits N] [--fanout-tablets N] [--pushes N]
//                [--connections 1000,10000]
// `--small` shrinks every size for a smoke run (CTest label bench); it never checks timings.
// Exit status: EXIT_SUCCESS when every scenario ran (figures may still miss targets);
// EXIT_FAILURE with the reason on stderr when a scenario could not run.
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/replicator.hpp"
#include "household_fixture.hpp"

namespace {

namespace fs = std::filesystem;
namespace fp = fieldsync::protocol;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

const std::string kUser = "enumerator-longhuqu";
const std::string kVillage = "ordos/ejin-horo/altan-xire/longhuqu";

std::mt19937_64& rng() {
    static std::mt19937_64 r{std::random_device{}()};
    return r;
}

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

std::uint64_t unix_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<std::size_t>(rank);
    const auto hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

// One result line: RESULT <tab> figure <tab> value <tab> unit <tab> bound <tab> ratio.
// `bound` is a measured bound or a target ("" when the figure has neither); ratio = value/bound.
void emit(const std::string& figure, double value, const std::string& unit, double bound = 0,
          const std::string& bound_text = "") {
    std::ostringstream line;
    line.setf(std::ios::fixed);
    line.precision(value >= 100 ? 0 : (value >= 1 ? 2 : 3));
    line << "RESULT\t" << figure << '\t' << value << '\t' << unit << '\t';
    if (!bound_text.empty())
        line << bound_text;
    else if (bound > 0)
        line << static_cast<long long>(bound + 0.5);
    line << '\t';
    if (bound > 0) {
        line.precision(2);
        line << value / bound;
    }
    std::cout << line.str() << std::endl;
}

[[noreturn]] void die(const std::string& what) {
    std::cerr << "loadgen: " << what << std::endl;
    std::exit(EXIT_FAILURE);
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// --- Records ------------------------------------------------------------------------------

fp::Id128 random_id() {
    fp::Id128 id;
    for (auto& b : id.bytes)
        b = static_cast<std::uint8_t>(rng()());
    id.bytes[6] = static_cast<std::uint8_t>((id.bytes[6] & 0x0f) | 0x40);  // UUIDv4 form
    id.bytes[8] = static_cast<std::uint8_t>((id.bytes[8] & 0x3f) | 0x80);
    return id;
}

fp::RecordId new_record_id(std::uint64_t ms) {
    std::array<std::uint8_t, 10> random{};
    for (auto& b : random)
        b = static_cast<std::uint8_t>(rng()());
    return fp::make_uuid_v7(ms, random);
}

void must(const fp::Status& s, const char* what) {
    if (!s) die(std::string("building a record: ") + what + ": " + s.error().message);
}

// A household as a tablet creates it on the first identification visit (the fields of
// bench_protocol's household: every field of the demo schema's households but exit_reason).
fp::RecordState household(const fp::ReplicaId& replica, std::uint64_t n, std::uint64_t ms) {
    static const char* statuses[] = {"national_line", "dibao_line", "marginal", "not_poor"};
    fp::RecordState s;
    s.collection = "households";
    s.id = new_record_id(ms);
    fp::Update u{s, replica, fp::HlcTimestamp::from_parts(ms, n & 0xffff), kUser};
    fieldsync_bench::write_first_visit(
        u, {"Household " + std::to_string(n), static_cast<std::int64_t>(1 + n % 8), statuses[n % 4],
            static_cast<std::int64_t>(2800 + n % 5000)});
    return s;
}

fp::RecordState visit(const fp::ReplicaId& replica, const fp::RecordId& of, std::uint64_t n,
                      std::uint64_t ms) {
    using R = fp::MergeRule;
    static const char* kinds[] = {"identification", "look_back", "extensive_visit",
                                  "exit_verification"};
    fp::RecordState s;
    s.collection = "visits";
    s.id = new_record_id(ms);
    fp::Update u{s, replica, fp::HlcTimestamp::from_parts(ms, n & 0xffff), kUser};
    must(u.set("village", R::lww, kVillage), "village");
    must(u.set("household", R::lww, of.to_string()), "household");
    must(u.set("kind", R::lww, std::string{kinds[n % 4]}), "kind");
    must(u.set("enumerator", R::lww, kUser), "enumerator");
    must(u.set("visited_at", R::lww, std::string{"2017-09-09T10:30:00Z"}), "visited_at");
    must(u.set("findings", R::lww, std::string{"Income checked with the cooperative's ledger."}),
         "findings");
    must(u.set("income_observed", R::review, static_cast<std::int64_t>(3000 + n % 4000)), "income");
    must(u.set("gps", R::lww, fp::GeoPoint{396087000, 1097813000}), "gps");
    return s;
}

fp::Bytes push_frame(std::uint64_t batch, std::vector<fp::RecordState> records,
                     std::uint64_t schema_version) {
    fp::Push p;
    p.batch = batch;
    for (auto& r : records)
        p.items.push_back(fp::PushItem{schema_version, std::move(r)});
    return fp::encode_message(p);
}

// --- Child processes ----------------------------------------------------------------------

std::vector<pid_t> g_children;

void kill_children() {
    for (pid_t p : g_children)
        if (p > 0) ::kill(p, SIGKILL);
}

extern "C" void on_signal(int sig) {
    kill_children();
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

std::uint64_t proc_status_kib(pid_t pid, const char* key) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    const std::string k = std::string(key) + ":";
    for (std::string line; std::getline(in, line);)
        if (line.rfind(k, 0) == 0) return std::strtoull(line.c_str() + k.size(), nullptr, 10);
    return 0;
}

// utime + stime of a process, seconds.
double proc_cpu_seconds(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; in >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) {
            stime = std::stoull(field);
            break;
        }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// fieldsync-server with a fresh data folder, on 127.0.0.1 and a port it picked; stopped
/// (SIGTERM, then SIGKILL after 15 s) by stop() or the destructor.
class ServerProcess {
public:
    ServerProcess(const fs::path& exe, const fs::path& dir, const std::string& config_json = "")
        : m_dir(dir) {
        fs::remove_all(dir);
        fs::create_directories(dir);
        const fs::path port_file = dir / "port";
        std::vector<std::string> args{exe.string(),       "--demo",     "--plain",
                                      "--port",           "0",          "--port-file",
                                      port_file.string(), "--data-dir", (dir / "data").string(),
                                      "--log-level",      "warn"};
        if (!config_json.empty()) {
            std::ofstream(dir / "server.json") << config_json;
            args.push_back("--config");
            args.push_back((dir / "server.json").string());
        }
        const fs::path log = dir / "server.log";
        m_pid = ::fork();
        if (m_pid < 0) die("fork failed");
        if (m_pid == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            std::FILE* f = std::fopen(log.c_str(), "w");
            if (f) {
                ::dup2(fileno(f), STDOUT_FILENO);
                ::dup2(fileno(f), STDERR_FILENO);
            }
            std::vector<char*> argv;
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(exe.c_str(), argv.data());
            ::_exit(127);
        }
        g_children.push_back(m_pid);
        const auto deadline = Clock::now() + 30s;
        while (m_port == 0) {
            if (Clock::now() > deadline) {
                stop();
                die("fieldsync-server did not start within 30 s; its log:\n" + read_text(log));
            }
            int st = 0;
            if (::waitpid(m_pid, &st, WNOHANG) == m_pid) {
                forget();
                die("fieldsync-server exited at start; its log:\n" + read_text(log));
            }
            std::this_thread::sleep_for(20ms);
            const std::string text = read_text(port_file);
            if (!text.empty()) m_port = static_cast<std::uint16_t>(std::atoi(text.c_str()));
        }
        std::istringstream creds(read_text(dir / "data" / "demo-credentials.txt"));
        for (std::string line; std::getline(creds, line);) {
            if (line.empty() || line[0] == '#') continue;
            std::istringstream words(line);
            std::string name, role, password;
            if (words >> name >> role >> password && name == kUser) m_password = password;
        }
        if (m_password.empty()) {
            stop();
            die("no password for " + kUser + " in the demo credentials");
        }
    }
    ~ServerProcess() { stop(); }
    ServerProcess(const ServerProcess&) = delete;
    ServerProcess& operator=(const ServerProcess&) = delete;

    void stop() {
        if (m_pid <= 0) return;
        ::kill(m_pid, SIGTERM);
        const auto deadline = Clock::now() + 15s;
        int st = 0;
        while (::waitpid(m_pid, &st, WNOHANG) != m_pid) {
            if (Clock::now() > deadline) {
                ::kill(m_pid, SIGKILL);
                ::waitpid(m_pid, &st, 0);
                break;
            }
            std::this_thread::sleep_for(10ms);
        }
        forget();
    }

    pid_t pid() const { return m_pid; }
    std::uint16_t port() const { return m_port; }
    const std::string& password() const { return m_password; }
    tcp::endpoint endpoint() const { return {net::ip::make_address("127.0.0.1"), m_port}; }
    std::uint64_t rss_kib() const { return proc_status_kib(m_pid, "VmRSS"); }

    /// GET /metrics (blocking, its own connection); "" on failure.
    std::string metrics() const {
        try {
            net::io_context io;
            beast::tcp_stream s(io);
            s.expires_after(10s);
            s.connect(endpoint());
            http::request<http::empty_body> req{http::verb::get, "/metrics", 11};
            req.set(http::field::host, "127.0.0.1");
            http::write(s, req);
            beast::flat_buffer b;
            http::response<http::string_body> res;
            http::read(s, b, res);
            return res.body();
        } catch (const std::exception&) {
            return "";
        }
    }
    /// A counter or gauge from /metrics (the first sample whose name starts with `name`).
    static double metric(const std::string& text, const std::string& name) {
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) {
            if (line.rfind(name, 0) != 0) continue;
            auto sp = line.rfind(' ');
            return std::atof(line.c_str() + sp + 1);
        }
        return -1;
    }

private:
    void forget() {
        std::erase(g_children, m_pid);
        m_pid = -1;
    }
    fs::path m_dir;
    pid_t m_pid = -1;
    std::uint16_t m_port = 0;
    std::string m_password;
};

// --- Tablets: WebSocket clients -----------------------------------------------------------

struct Tablet : std::enable_shared_from_this<Tablet> {
    explicit Tablet(net::io_context& io) : ws(io) {}
    websocket::stream<beast::tcp_stream> ws;
    fp::Id128 device = random_id();
    fp::ReplicaId replica = random_id();
    std::size_t index = 0;
    beast::flat_buffer buf;
    std::deque<std::shared_ptr<fp::Bytes>> outq;
    bool writing = false;
    bool open = false;
    bool reading = false;
    std::string error;
    std::optional<fp::Welcome> welcome;
    bool live = false;
    /// Sees every frame first (raw); returns true when it consumed it.
    std::function<bool(Tablet&, fp::ByteView, Clock::time_point)> on_raw;
    /// Every decoded frame.
    std::function<void(Tablet&, fp::Message&, Clock::time_point)> on_msg;
};
using TabletPtr = std::shared_ptr<Tablet>;

void write_next(const TabletPtr& t) {
    if (t->outq.empty() || !t->open) {
        t->writing = false;
        return;
    }
    t->writing = true;
    auto frame = t->outq.front();
    t->ws.async_write(net::buffer(*frame), [t, frame](beast::error_code ec, std::size_t) {
        if (!t->outq.empty()) t->outq.pop_front();
        if (ec) {
            t->writing = false;
            t->outq.clear();
            if (t->error.empty()) t->error = "write: " + ec.message();
            return;
        }
        write_next(t);
    });
}

void send(const TabletPtr& t, fp::Bytes frame) {
    t->outq.push_back(std::make_shared<fp::Bytes>(std::move(frame)));
    if (!t->writing) write_next(t);
}

net::awaitable<void> reader(TabletPtr t) {
    t->reading = true;
    for (;;) {
        t->buf.clear();
        auto [ec, n] = co_await t->ws.async_read(t->buf, use_tuple);
        const auto at = Clock::now();
        if (ec) {
            t->open = false;
            if (t->error.empty() && ec != websocket::error::closed &&
                ec != net::error::operation_aborted)
                t->error = "read: " + ec.message();
            break;
        }
        const auto data = t->buf.cdata();
        const fp::ByteView bytes(static_cast<const std::uint8_t*>(data.data()), data.size());
        if (t->on_raw && t->on_raw(*t, bytes, at)) continue;
        auto msg = fp::decode_message(bytes);
        if (!msg) {
            t->error = "undecodable frame: " + msg.error().message;
            continue;
        }
        if (auto* e = std::get_if<fp::ErrorMessage>(&*msg); e && t->error.empty())
            t->error = "server error " + e->code + ": " + e->message;
        if (t->on_msg) t->on_msg(*t, *msg, at);
    }
    t->reading = false;
}

/// Connects, sends hello, waits for welcome; then starts the reader.
net::awaitable<void> connect_tablet(TabletPtr t, tcp::endpoint ep, fp::Auth auth,
                                    std::uint64_t schema_version) {
    auto& tcp_layer = beast::get_lowest_layer(t->ws);
    tcp_layer.expires_after(60s);
    if (auto [ec] = co_await tcp_layer.async_connect(ep, use_tuple); ec) {
        t->error = "connect: " + ec.message();
        co_return;
    }
    tcp_layer.expires_never();
    auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::client);
    timeouts.handshake_timeout = 60s;
    t->ws.set_option(timeouts);
    if (auto [ec] = co_await t->ws.async_handshake("127.0.0.1:" + std::to_string(ep.port()),
                                                   "/sync", use_tuple);
        ec) {
        t->error = "handshake: " + ec.message();
        co_return;
    }
    t->ws.binary(true);
    fp::Hello h;
    h.device = t->device;
    h.replica = t->replica;
    h.app = "fieldsync-loadgen/0.1";
    h.auth = std::move(auth);
    h.schema_version = schema_version;
    h.cursor = 0;
    h.clock = unix_ms();
    const fp::Bytes hello = fp::encode_message(h);
    if (auto [ec, n] = co_await t->ws.async_write(net::buffer(hello), use_tuple); ec) {
        t->error = "hello: " + ec.message();
        co_return;
    }
    auto [ec, n] = co_await t->ws.async_read(t->buf, use_tuple);
    if (ec) {
        t->error = "welcome: " + ec.message();
        co_return;
    }
    const auto data = t->buf.cdata();
    auto msg = fp::decode_message(
        fp::ByteView(static_cast<const std::uint8_t*>(data.data()), data.size()));
    if (!msg) {
        t->error = "welcome: " + msg.error().message;
        co_return;
    }
    if (auto* w = std::get_if<fp::Welcome>(&*msg)) {
        t->welcome = std::move(*w);
    } else if (auto* e = std::get_if<fp::ErrorMessage>(&*msg)) {
        t->error = "hello refused: " + e->code + ": " + e->message;
        co_return;
    } else {
        t->error = "hello: unexpected reply";
        co_return;
    }
    t->open = true;
    net::co_spawn(t->ws.get_executor(), reader(t), net::detached);
}

/// Runs the io_context until `done()` or the deadline; returns done().
bool run_until(net::io_context& io, const std::function<bool()>& done,
               std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!done()) {
        if (Clock::now() > deadline) return false;
        io.restart();
        io.run_for(5ms);
    }
    return true;
}

/// Opens `count` tablets (at most `window` handshakes at a time) with `auth`; returns them
/// (check ->open). `ready` (optional) is called on each welcomed tablet.
std::vector<TabletPtr> open_tablets(net::io_context& io, tcp::endpoint ep, std::size_t count,
                                    const fp::Auth& auth, std::uint64_t schema_version,
                                    std::size_t window = 128,
                                    std::function<void(const TabletPtr&)> ready = {}) {
    std::vector<TabletPtr> out;
    out.reserve(count);
    std::size_t started = 0, finished = 0;
    std::function<void()> start_one;
    start_one = [&] {
        if (started >= count) return;
        auto t = std::make_shared<Tablet>(io);
        t->index = started++;
        out.push_back(t);
        net::co_spawn(io, connect_tablet(t, ep, auth, schema_version),
                      [&, t](std::exception_ptr e) {
                          if (e && t->error.empty()) t->error = "exception in connect";
                          ++finished;
                          if (t->open && ready) ready(t);
                          start_one();
                      });
    };
    for (std::size_t i = 0; i < std::min(window, count); ++i)
        start_one();
    run_until(
        io, [&] { return finished >= count; }, std::chrono::milliseconds(60000 + 20 * count));
    return out;
}

void close_tablets(net::io_context& io, std::vector<TabletPtr>& tablets) {
    for (auto& t : tablets) {
        t->on_raw = nullptr;
        t->on_msg = nullptr;
        beast::error_code ec;
        beast::get_lowest_layer(t->ws).socket().shutdown(tcp::socket::shutdown_both, ec);
        beast::get_lowest_layer(t->ws).socket().close(ec);
    }
    run_until(
        io,
        [&] {
            return std::none_of(tablets.begin(), tablets.end(),
                                [](const TabletPtr& t) { return t->reading || t->writing; });
        },
        10s);
    tablets.clear();
    io.restart();
    io.poll();
}

std::size_t count_open(const std::vector<TabletPtr>& tablets) {
    return static_cast<std::size_t>(
        std::count_if(tablets.begin(), tablets.end(), [](const TabletPtr& t) { return t->open; }));
}

std::string first_error(const std::vector<TabletPtr>& tablets) {
    for (const auto& t : tablets)
        if (!t->error.empty()) return t->error;
    return "";
}

/// Logs in once with the password (one PBKDF2 on the server) and returns the session token, so
/// that every other tablet can say hello with it (devices of one enumerator; each has its own
/// device and replica id, as SPEC.md §3.1 requires).
std::string login_token(net::io_context& io, const ServerProcess& server,
                        std::uint64_t& schema_version) {
    auto ts = open_tablets(io, server.endpoint(), 1, fp::PasswordAuth{kUser, server.password()}, 0);
    if (ts.empty() || !ts[0]->open || !ts[0]->welcome || !ts[0]->welcome->token)
        die("password login failed: " + (ts.empty() ? std::string("?") : ts[0]->error));
    schema_version = ts[0]->welcome->schema_version;
    std::string token = *ts[0]->welcome->token;
    close_tablets(io, ts);
    return token;
}

/// Puts every tablet live: pull from 0 until a page with more = false (SPEC.md §4.5).
void go_live(const TabletPtr& t) {
    t->on_msg = [](Tablet& self, fp::Message& m, Clock::time_point) {
        if (auto* c = std::get_if<fp::Changes>(&m)) {
            if (c->more)
                send(self.shared_from_this(), fp::encode_message(fp::Pull{c->cursor, 500}));
            else
                self.live = true;
        }
    };
    send(t, fp::encode_message(fp::Pull{0, 500}));
}

// --- Options ------------------------------------------------------------------------------

struct Options {
    fs::path server = FIELDSYNC_SERVER_EXE;
    fs::path dir = fs::temp_directory_path() / ("fieldsync-loadgen-" + std::to_string(::getpid()));
    bool keep = false;
    bool small = false;
    std::vector<std::string> scenarios{"storage", "ingest", "pull", "fanout", "connections"};
    double seconds = 6;
    std::size_t records = 20000;  // per ingest scenario, at most
    std::vector<std::size_t> tablets{1, 10, 100};
    std::size_t items = 1;
    // Further 100-tablet ingest runs with this many records per push: 20, and 200, the SDK's
    // default batch (EngineOptions::max_batch), which a tablet back with a full outbox sends.
    std::vector<std::size_t> batched_items{20, 200};
    std::size_t group = 256;
    std::size_t storage_records = 50000;
    std::size_t pull_households = 5000;
    std::size_t pull_visits = 20000;
    std::size_t fanout_tablets = 1000;
    std::size_t pushes = 40;
    std::vector<std::size_t> connections{1000, 10000};
};

std::vector<std::size_t> parse_list(const std::string& s) {
    std::vector<std::size_t> out;
    std::istringstream in(s);
    for (std::string x; std::getline(in, x, ',');)
        out.push_back(std::strtoull(x.c_str(), nullptr, 10));
    return out;
}

// --- Scenario: storage bound --------------------------------------------------------------

double g_storage_bound = 0;

void sql(sqlite3* db, const char* text) {
    char* err = nullptr;
    if (sqlite3_exec(db, text, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string e = err ? err : "?";
        sqlite3_free(err);
        die(std::string("sqlite: ") + e + " in " + text);
    }
}

// Inserts `count` household rows in transactions of `group` rows; returns records/s.
double storage_run(const fs::path& dir, std::size_t count, std::size_t group) {
    fs::create_directories(dir);
    const fs::path file = dir / ("storage-" + std::to_string(group) + ".db");
    fs::remove(file);
    fs::remove(file.string() + "-wal");
    fs::remove(file.string() + "-shm");
    sqlite3* db = nullptr;
    if (sqlite3_open(file.c_str(), &db) != SQLITE_OK) die("cannot open " + file.string());
    // Pragmas and the records table exactly as server/src/sqlite_store.cpp sets them up.
    sql(db, "PRAGMA journal_mode = WAL");
    sql(db,
        "PRAGMA synchronous = FULL; PRAGMA fullfsync = ON; PRAGMA checkpoint_fullfsync = ON; "
        "PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;");
    sql(db, R"sql(
CREATE TABLE records (
    collection     TEXT NOT NULL,
    id             BLOB NOT NULL CHECK (length(id) = 16),
    area           TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    updated_at_ms  INTEGER NOT NULL,
    state          BLOB NOT NULL,
    first_seq      INTEGER NOT NULL DEFAULT 0, -- the server's migration 3 adds it
    PRIMARY KEY (collection, id)
) STRICT;
CREATE UNIQUE INDEX records_seq ON records(seq);
CREATE INDEX records_area ON records(area);
CREATE INDEX records_tombstones ON records(updated_at_ms) WHERE deleted = 1;
)sql");
    sqlite3_stmt* ins = nullptr;
    const char* text =
        "INSERT INTO records(collection, id, area, seq, schema_version, deleted, "
        "updated_at_ms, state, first_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?4) "
        "ON CONFLICT(collection, id) DO UPDATE SET area = excluded.area, "
        "seq = excluded.seq, schema_version = excluded.schema_version, "
        "deleted = excluded.deleted, updated_at_ms = excluded.updated_at_ms, "
        "state = excluded.state";
    if (sqlite3_prepare_v3(db, text, -1, SQLITE_PREPARE_PERSISTENT, &ins, nullptr) != SQLITE_OK)
        die(std::string("prepare: ") + sqlite3_errmsg(db));
    // The rows: encoded states of new households, made before the clock starts.
    const fp::ReplicaId replica = random_id();
    std::vector<std::pair<fp::RecordId, fp::Bytes>> rows;
    rows.reserve(count);
    const std::uint64_t ms = unix_ms();
    for (std::size_t i = 0; i < count; ++i) {
        auto h = household(replica, i, ms);
        rows.emplace_back(h.id, fp::encode_record(h));
    }
    const auto t0 = Clock::now();
    std::size_t seq = 0;
    for (std::size_t i = 0; i < count;) {
        sql(db, "BEGIN IMMEDIATE");
        for (std::size_t k = 0; k < group && i < count; ++k, ++i) {
            sqlite3_bind_text(ins, 1, "households", -1, SQLITE_STATIC);
            sqlite3_bind_blob(ins, 2, rows[i].first.bytes.data(), 16, SQLITE_STATIC);
            sqlite3_bind_text(ins, 3, kVillage.c_str(), -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 4, static_cast<sqlite3_int64>(++seq));
            sqlite3_bind_int64(ins, 5, 1);
            sqlite3_bind_int64(ins, 6, 0);
            sqlite3_bind_int64(ins, 7, static_cast<sqlite3_int64>(ms));
            sqlite3_bind_blob(ins, 8, rows[i].second.data(),
                              static_cast<int>(rows[i].second.size()), SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE) die(std::string("insert: ") + sqlite3_errmsg(db));
            sqlite3_reset(ins);
        }
        sql(db, "COMMIT");
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return static_cast<double>(count) / secs;
}

void scenario_storage(const Options& o) {
    const std::size_t n = o.small ? 600 : o.storage_records;
    g_storage_bound = storage_run(o.dir / "storage", n, o.group);
    emit("storage bound: records/s, " + std::to_string(o.group) + " rows per transaction",
         g_storage_bound, "records/s");
    // For context: one row per transaction is what a single tablet's one-record pushes cost.
    const double single = storage_run(o.dir / "storage", o.small ? 50 : 500, 1);
    emit("storage: records/s, 1 row per transaction (fsync-bound)", single, "records/s");
}

// --- Scenario: ingest ---------------------------------------------------------------------

void scenario_ingest(const Options& o, std::size_t count) {
    ServerProcess server(o.server, o.dir / ("ingest-" + std::to_string(count)));
    net::io_context io(1);
    std::uint64_t sv = 0;
    const std::string token = login_token(io, server, sv);
    auto tablets = open_tablets(io, server.endpoint(), count, fp::TokenAuth{token}, sv);
    if (count_open(tablets) != count)
        die("ingest: only " + std::to_string(count_open(tablets)) + " of " + std::to_string(count) +
            " tablets connected: " + first_error(tablets));

    // Every push is built and encoded before the clock starts.
    const std::size_t total = o.small ? std::min<std::size_t>(o.records, 20 * count) : o.records;
    const std::size_t per_tablet = std::max<std::size_t>(1, total / count / o.items);
    std::vector<std::vector<fp::Bytes>> frames(count);
    const std::uint64_t ms = unix_ms();
    std::uint64_t n = 0;
    for (std::size_t t = 0; t < count; ++t) {
        frames[t].reserve(per_tablet);
        for (std::size_t b = 0; b < per_tablet; ++b) {
            std::vector<fp::RecordState> recs;
            for (std::size_t i = 0; i < o.items; ++i)
                recs.push_back(household(tablets[t]->replica, n++, ms));
            frames[t].push_back(push_frame(b + 1, std::move(recs), sv));
        }
    }

    struct PerTablet {
        std::size_t next = 0;
        bool inflight = false;
        Clock::time_point sent;
    };
    std::vector<PerTablet> st(count);
    std::vector<double> latencies;
    latencies.reserve(per_tablet * count);
    std::size_t acked = 0, rejected = 0;
    std::string reject_reason;
    // The /metrics probe comes before the clock starts: on a loaded machine (or a debug build)
    // it can take longer than a short run, which would then send nothing.
    const std::string metrics_before = server.metrics();
    const double cpu_before = proc_cpu_seconds(server.pid());
    const double own_cpu_before = proc_cpu_seconds(::getpid());
    const auto start = Clock::now();
    const auto stop_sending =
        start + std::chrono::milliseconds(static_cast<long>(o.seconds * 1000));
    Clock::time_point last_ack = start;

    auto push_next = [&](const TabletPtr& t) {
        auto& s = st[t->index];
        // Every tablet pushes at least once, however late it starts.
        if (s.next >= frames[t->index].size() || (s.next > 0 && Clock::now() >= stop_sending))
            return;
        s.inflight = true;
        s.sent = Clock::now();
        send(t, std::move(frames[t->index][s.next++]));
    };
    for (auto& t : tablets) {
        t->on_msg = [&, t](Tablet&, fp::Message& m, Clock::time_point at) {
            auto* ack = std::get_if<fp::PushAck>(&m);
            if (!ack) return;
            auto& s = st[t->index];
            s.inflight = false;
            latencies.push_back(ms_between(s.sent, at));
            for (const auto& r : ack->results) {
                if (r.ok) {
                    ++acked;
                } else {
                    ++rejected;
                    if (reject_reason.empty()) reject_reason = r.code + ": " + r.reason;
                }
            }
            last_ack = at;
            push_next(t);
        };
    }
    for (auto& t : tablets)
        push_next(t);
    const bool finished = run_until(
        io,
        [&] {
            return std::none_of(st.begin(), st.end(),
                                [](const PerTablet& s) { return s.inflight; });
        },
        std::chrono::milliseconds(static_cast<long>(o.seconds * 1000) + 60000));
    const double cpu = proc_cpu_seconds(server.pid()) - cpu_before;
    const double own_cpu = proc_cpu_seconds(::getpid()) - own_cpu_before;
    const std::string metrics_after = server.metrics();
    if (!finished) die("ingest: acks did not all arrive within a minute after the run");
    if (rejected > 0)
        die("ingest: the server refused " + std::to_string(rejected) +
            " records: " + reject_reason);
    if (acked == 0) die("ingest: nothing was acknowledged: " + first_error(tablets));
    const double secs = std::chrono::duration<double>(last_ack - start).count();
    const double rate = static_cast<double>(acked) / secs;
    const std::string tag =
        "ingest, " + std::to_string(count) + (count == 1 ? " tablet" : " tablets") +
        (o.items > 1 ? ", " + std::to_string(o.items) + " records per push" : "");
    const bool target = count == 100 && o.items == 1;  // the p99 target: 100 tablets
    emit(tag + ": records/s (durable acks)", rate, "records/s", g_storage_bound);
    emit(tag + ": push-to-ack p50", percentile(latencies, 50), "ms");
    emit(tag + ": push-to-ack p99", percentile(latencies, 99), "ms", target ? 100 : 0,
         target ? "100 (target)" : "");
    const double groups = ServerProcess::metric(metrics_after, "fieldsync_store_groups_total") -
                          ServerProcess::metric(metrics_before, "fieldsync_store_groups_total");
    if (groups > 0)
        emit(tag + ": records per group commit (server)", static_cast<double>(acked) / groups,
             "records");
    emit(tag + ": server CPU per 1,000 records", cpu * 1000.0 / static_cast<double>(acked) * 1000.0,
         "ms");
    // The tablets run on the same two cores as the server here (on a deployment they do not):
    // their CPU is what the server could not have.
    emit(tag + ": load generator (tablets) CPU per 1,000 records",
         own_cpu * 1000.0 / static_cast<double>(acked) * 1000.0, "ms");
    // Where the store worker's time went (server /metrics): near 100% busy, it is the limit;
    // the commit share is the part spent in COMMIT (WAL writes and fsync).
    const double run_s = std::chrono::duration<double>(last_ack - start).count();
    const auto delta = [&](const char* name) {
        return ServerProcess::metric(metrics_after, name) -
               ServerProcess::metric(metrics_before, name);
    };
    if (run_s > 0) {
        emit(tag + ": store worker busy (share of the run)",
             100.0 * delta("fieldsync_store_busy_seconds_total") / run_s, "%");
        emit(tag + ": of which on CPU (share of the run)",
             100.0 * delta("fieldsync_store_busy_cpu_seconds_total") / run_s, "%");
        emit(tag + ": store worker CPU per 1,000 records",
             delta("fieldsync_store_busy_cpu_seconds_total") * 1000.0 * 1000.0 /
                 static_cast<double>(acked),
             "ms");
        emit(tag + ": of which in COMMIT (share of the run)",
             100.0 * delta("fieldsync_store_commit_seconds_total") / run_s, "%");
        // The fsyncs run on the sync thread, overlapped with the worker's next groups.
        const double syncs = delta("fieldsync_store_syncs_total");
        emit(tag + ": sync thread in fsync (share of the run)",
             100.0 * delta("fieldsync_store_sync_seconds_total") / run_s, "%");
        if (syncs > 0) emit(tag + ": groups per fsync", groups / syncs, "groups");
    }
    close_tablets(io, tablets);
    server.stop();
}

// --- Scenario: initial pull ---------------------------------------------------------------

void scenario_pull(const Options& o) {
    const std::size_t households = o.small ? 100 : o.pull_households;
    const std::size_t visits = o.small ? 400 : o.pull_visits;
    ServerProcess server(o.server, o.dir / "pull");
    net::io_context io(1);
    std::uint64_t sv = 0;
    const std::string token = login_token(io, server, sv);
    auto seeders = open_tablets(io, server.endpoint(), 1, fp::TokenAuth{token}, sv);
    if (!seeders[0]->open) die("pull: seeding tablet: " + seeders[0]->error);
    auto seeder = seeders[0];

    // Seed: households, then visits spread over them, in pushes of max_batch items.
    const std::size_t batch =
        seeder->welcome->limits.max_batch ? seeder->welcome->limits.max_batch : 500;
    const std::uint64_t ms = unix_ms();
    std::vector<fp::RecordId> ids;
    std::vector<fp::RecordState> all;
    for (std::size_t i = 0; i < households; ++i) {
        all.push_back(household(seeder->replica, i, ms));
        ids.push_back(all.back().id);
    }
    for (std::size_t i = 0; i < visits; ++i)
        all.push_back(visit(seeder->replica, ids[i % ids.size()], i, ms));
    std::size_t acked = 0, inflight = 0;
    std::string problem;
    seeder->on_msg = [&](Tablet&, fp::Message& m, Clock::time_point) {
        if (auto* ack = std::get_if<fp::PushAck>(&m)) {
            --inflight;
            for (const auto& r : ack->results) {
                if (r.ok)
                    ++acked;
                else if (problem.empty())
                    problem = r.code + ": " + r.reason;
            }
        }
    };
    std::uint64_t b = 0;
    for (std::size_t i = 0; i < all.size(); i += batch) {
        std::vector<fp::RecordState> part(
            std::make_move_iterator(all.begin() + static_cast<long>(i)),
            std::make_move_iterator(all.begin() +
                                    static_cast<long>(std::min(all.size(), i + batch))));
        ++inflight;
        send(seeder, push_frame(++b, std::move(part), sv));
        // Keep at most a few pushes in flight (the server reads 64 frames ahead at most).
        run_until(
            io, [&] { return inflight < 4; }, 120s);
    }
    run_until(
        io, [&] { return inflight == 0; }, 120s);
    if (acked != all.size())
        die("pull: seeding: " + std::to_string(acked) + " of " + std::to_string(all.size()) +
            " records acknowledged; " + problem + first_error(seeders));
    close_tablets(io, seeders);

    // The first sync of a fresh SDK replica: connect, hello (token), schema, every page joined;
    // with the SDK's default page size (the server's largest page, max_page 500), then with
    // smaller pages of 200 (more round trips and commits).
    for (const std::uint64_t page : {std::uint64_t{0}, std::uint64_t{200}}) {
        const fs::path replica_dir = o.dir / "pull" / ("tablet-" + std::to_string(page));
        fs::create_directories(replica_dir);
        auto opened = fieldsync::Replica::open(replica_dir / "replica.db");
        if (!opened) die("pull: Replica::open: " + opened.error().message);
        auto replica = *opened;
        fieldsync::ReplicatorOptions ro;
        ro.url = "ws://127.0.0.1:" + std::to_string(server.port()) + "/sync";
        ro.credentials = {kUser, "", token};
        if (page) ro.engine.page_size = page;
        const std::uint64_t page_size = ro.engine.page_size;
        std::atomic<std::uint64_t> pages{0};
        ro.on_status = [&](const fieldsync::ReplicatorStatus& s) { pages = s.pages; };
        fieldsync::Replicator sync(replica, ro);
        const double server_cpu0 = proc_cpu_seconds(server.pid());
        const double tablet_cpu0 = proc_cpu_seconds(::getpid());
        const auto t0 = Clock::now();
        auto st = sync.sync_once(std::chrono::seconds(300));
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        const double server_cpu = proc_cpu_seconds(server.pid()) - server_cpu0;
        const double tablet_cpu = proc_cpu_seconds(::getpid()) - tablet_cpu0;
        if (!st) die("pull: sync_once: " + st.error().message);
        auto hh = replica->count("households");
        auto vv = replica->count("visits");
        auto mm = replica->count("members");
        const std::size_t got = (hh ? *hh : 0) + (vv ? *vv : 0) + (mm ? *mm : 0);
        // The village also holds whatever --demo seeded there.
        if (!hh || !vv || *hh < households || *vv < visits)
            die("pull: the replica holds " + std::to_string(hh ? *hh : 0) + " households and " +
                std::to_string(vv ? *vv : 0) + " visits, expected at least " +
                std::to_string(households) + " and " + std::to_string(visits));
        const std::string tag =
            "initial pull, " + std::to_string(*hh) + " households + " + std::to_string(*vv) +
            " visits" + (mm && *mm ? " + " + std::to_string(*mm) + " members" : "") +
            (page ? ", " : ", SDK default ") + std::to_string(page_size) + " per page";
        emit(tag + ": seconds", secs, "s", 1, "1 (target)");
        emit(tag + ": records/s", static_cast<double>(got) / secs, "records/s");
        emit(tag + ": pages", static_cast<double>(pages.load()), "pages");
        // Where the time goes: CPU of the server process and of the tablet (this process: the
        // SDK's replicator and transport threads) during the sync; the rest is waiting.
        emit(tag + ": server CPU during the pull", server_cpu, "s");
        emit(tag + ": tablet (SDK) CPU during the pull", tablet_cpu, "s");
    }
    server.stop();
}

// --- Scenario: live fan-out ---------------------------------------------------------------

void scenario_fanout(const Options& o) {
    const std::size_t count = o.small ? 20 : o.fanout_tablets;
    const std::size_t pushes = o.small ? 5 : o.pushes;
    ServerProcess server(o.server, o.dir / "fanout");
    net::io_context io(1);
    std::uint64_t sv = 0;
    const std::string token = login_token(io, server, sv);
    auto tablets =
        open_tablets(io, server.endpoint(), count, fp::TokenAuth{token}, sv, 128, go_live);
    if (count_open(tablets) != count)
        die("fanout: only " + std::to_string(count_open(tablets)) +
            " tablets connected: " + first_error(tablets));
    if (!run_until(
            io,
            [&] {
                return std::all_of(tablets.begin(), tablets.end(), [](auto& t) { return t->live; });
            },
            120s))
        die("fanout: not every tablet became live: " + first_error(tablets));

    std::vector<double> after_ack, after_send;
    std::size_t missing = 0;
    fp::RecordId current{};
    std::vector<Clock::time_point> received(count);
    std::vector<char> got(count, 0);
    std::size_t got_count = 0;
    std::optional<Clock::time_point> acked_at;
    for (auto& t : tablets) {
        t->on_raw = [&](Tablet& self, fp::ByteView bytes, Clock::time_point at) {
            // A notify carrying the record pushed now: find its 16-byte id in the frame (cheaper
            // than decoding 1,000 frames on this one thread, which would delay later receipts).
            if (got[self.index]) return false;
            auto it =
                std::search(bytes.begin(), bytes.end(), current.bytes.begin(), current.bytes.end());
            if (it == bytes.end()) return false;
            got[self.index] = 1;
            received[self.index] = at;
            ++got_count;
            return true;
        };
        t->on_msg = [&](Tablet&, fp::Message& m, Clock::time_point at) {
            if (std::holds_alternative<fp::PushAck>(m)) acked_at = at;
        };
    }
    for (std::size_t k = 0; k < pushes; ++k) {
        const std::size_t pusher = (k * 7919 + 13) % count;
        auto rec = household(tablets[pusher]->replica, k, unix_ms());
        current = rec.id;
        std::fill(got.begin(), got.end(), 0);
        got_count = 0;
        acked_at.reset();
        std::vector<fp::RecordState> one;
        one.push_back(std::move(rec));
        const auto sent = Clock::now();
        send(tablets[pusher], push_frame(k + 1, std::move(one), sv));
        // Done when the pusher has its ack and every other tablet its notify.
        run_until(
            io, [&] { return acked_at && got_count - (got[pusher] ? 1 : 0) >= count - 1; }, 20s);
        if (!acked_at)
            die("fanout: push " + std::to_string(k) +
                " was not acknowledged: " + first_error(tablets));
        for (std::size_t i = 0; i < count; ++i) {
            if (i == pusher) continue;
            if (!got[i]) {
                ++missing;
                continue;
            }
            after_ack.push_back(ms_between(*acked_at, received[i]));
            after_send.push_back(ms_between(sent, received[i]));
        }
        run_until(
            io, [] { return false; }, 20ms);  // a pause between pushes
    }
    const std::string tag = "live fan-out, " + std::to_string(count) + " tablets";
    emit(tag + ": pusher's ack -> other tablet receives, p50", percentile(after_ack, 50), "ms");
    emit(tag + ": pusher's ack -> other tablet receives, p99", percentile(after_ack, 99), "ms");
    emit(tag + ": push sent -> other tablet receives, p99", percentile(after_send, 99), "ms");
    if (missing)
        emit(tag + ": receipts missing after 20 s", static_cast<double>(missing), "receipts");
    close_tablets(io, tablets);
    server.stop();
}

// --- Scenario: idle connections -----------------------------------------------------------

void scenario_connections(const Options& o) {
    const std::vector<std::size_t>& steps = o.connections;
    const std::size_t most = steps.empty() ? 0 : *std::max_element(steps.begin(), steps.end());
    // The default max_connections (10,000) counts every connection, including the /metrics
    // request made here: raise it a little above the tablets.
    ServerProcess server(o.server, o.dir / "connections",
                         "{\"limits\": {\"max_connections\": " + std::to_string(most + 100) + "}}");
    std::this_thread::sleep_for(500ms);
    const std::uint64_t rss0 = server.rss_kib();
    net::io_context io(1);
    std::uint64_t sv = 0;
    const std::string token = login_token(io, server, sv);
    std::vector<TabletPtr> all;
    emit("server RSS at start (no tablets)", static_cast<double>(rss0) / 1024.0, "MiB");
    for (std::size_t target : steps) {
        if (target <= all.size()) continue;
        auto more = open_tablets(io, server.endpoint(), target - all.size(), fp::TokenAuth{token},
                                 sv, 256, go_live);
        all.insert(all.end(), more.begin(), more.end());
        run_until(
            io,
            [&] {
                return std::all_of(all.begin(), all.end(),
                                   [](auto& t) { return !t->open || t->live; });
            },
            120s);
        run_until(
            io, [] { return false; }, 2s);  // idle
        const std::size_t open = count_open(all);
        const std::uint64_t rss = server.rss_kib();
        const double ws =
            ServerProcess::metric(server.metrics(), "fieldsync_connections{kind=\"ws\"}");
        const std::string tag = std::to_string(target) + " idle tablets";
        if (open != target || static_cast<std::size_t>(ws) != target)
            std::cerr << "loadgen: connections: " << open << " tablets open, server reports " << ws
                      << " WebSockets; first error: " << first_error(all) << "\n";
        emit(tag + ": tablets connected and live", static_cast<double>(open), "tablets");
        emit(tag + ": server RSS", static_cast<double>(rss) / 1024.0, "MiB",
             target >= 10000 ? 1024 : 0, target >= 10000 ? "1024 (target)" : "");
        if (open > 0)
            emit(
                tag + ": server bytes per connection",
                static_cast<double>(rss - std::min(rss, rss0)) * 1024.0 / static_cast<double>(open),
                "bytes");
        emit(tag + ": loadgen RSS (all clients)",
             static_cast<double>(proc_status_kib(::getpid(), "VmRSS")) / 1024.0, "MiB");
    }
    close_tablets(io, all);
    server.stop();
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) die(a + " needs a value");
            return argv[++i];
        };
        if (a == "--server")
            o.server = value();
        else if (a == "--dir")
            o.dir = value();
        else if (a == "--keep")
            o.keep = true;
        else if (a == "--small")
            o.small = true;
        else if (a == "--scenarios") {
            o.scenarios.clear();
            std::istringstream in(value());
            for (std::string s; std::getline(in, s, ',');)
                o.scenarios.push_back(s);
        } else if (a == "--seconds")
            o.seconds = std::atof(value().c_str());
        else if (a == "--records")
            o.records = std::strtoull(value().c_str(), nullptr, 10);
        else if (a == "--tablets")
            o.tablets = parse_list(value());
        else if (a == "--batched-items")
            o.batched_items = parse_list(value());
        else if (a == "--items")
            o.items = std::max<std::size_t>(1, std::strtoull(value().c_str(), nullptr, 10));
        else if (a == "--group")
            o.group = std::max<std::size_t>(1, std::strtoull(value().c_str(), nullptr, 10));
        else if (a == "--storage-records")
            o.storage_records = std::strtoull(value().c_str(), nullptr, 10);
        else if (a == "--pull-households")
            o.pull_households =
                std::max<std::size_t>(1, std::strtoull(value().c_str(), nullptr, 10));
        else if (a == "--pull-visits")
            o.pull_visits = std::strtoull(value().c_str(), nullptr, 10);
        else if (a == "--fanout-tablets")
            o.fanout_tablets =
                std::max<std::size_t>(2, std::strtoull(value().c_str(), nullptr, 10));
        else if (a == "--pushes")
            o.pushes = std::strtoull(value().c_str(), nullptr, 10);
        else if (a == "--connections")
            o.connections = parse_list(value());
        else {
            std::cerr
                << "usage: loadgen [--server PATH] [--scenarios "
                   "storage,ingest,pull,fanout,connections]\n"
                   "               [--small] [--dir DIR] [--keep] [--seconds S] [--records N]\n"
                   "               [--tablets 1,10,100] [--items N] [--batched-items 20,200] "
                   "[--group "
                   "N]\n"
                   "               [--storage-records N]\n"
                   "               [--pull-households N] [--pull-visits N] [--fanout-tablets N]\n"
                   "               [--pushes N] [--connections 1000,10000]\n";
            return EXIT_FAILURE;
        }
    }
    // Every tablet is a socket here and in the server (which inherits this limit).
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    ::signal(SIGINT, on_signal);
    ::signal(SIGTERM, on_signal);
    ::signal(SIGPIPE, SIG_IGN);
    std::atexit(kill_children);
    if (!fs::exists(o.server)) die("no server binary at " + o.server.string() + " (--server)");
    fs::create_directories(o.dir);
    for (const auto& s : o.scenarios) {
        const auto t0 = Clock::now();
        if (s == "storage") {
            scenario_storage(o);
        } else if (s == "ingest") {
            if (g_storage_bound == 0) scenario_storage(o);
            for (std::size_t n : o.tablets)
                scenario_ingest(o, n);
            for (std::size_t items : o.batched_items) {
                if (items <= 1 || o.items != 1 || o.tablets.empty()) continue;
                // Tablets back from days offline push their outbox in batches (the SDK sends up
                // to min(EngineOptions::max_batch, welcome.limits.max_batch) items per push):
                // the per-push costs amortise. Larger pushes get more records, so that every
                // tablet makes several pushes.
                Options b = o;
                b.items = items;
                b.records = (items >= 100 ? 6 : 2) * o.records;
                scenario_ingest(b, *std::max_element(o.tablets.begin(), o.tablets.end()));
            }
        } else if (s == "pull") {
            scenario_pull(o);
        } else if (s == "fanout") {
            scenario_fanout(o);
        } else if (s == "connections") {
            // Each tablet needs a descriptor here and one in the server.
            Options c = o;
            c.connections.clear();
            for (std::size_t n : o.small ? std::vector<std::size_t>{20, 50} : o.connections) {
                if (n + 200 > nofile.rlim_cur) {
                    std::cerr << "loadgen: connections: " << n
                              << " tablets need more than RLIMIT_NOFILE = " << nofile.rlim_cur
                              << " descriptors; skipped\n";
                    emit(std::to_string(n) + " idle tablets: not run (RLIMIT_NOFILE " +
                             std::to_string(nofile.rlim_cur) + ")",
                         0, "");
                } else {
                    c.connections.push_back(n);
                }
            }
            scenario_connections(c);
        } else {
            die("unknown scenario " + s);
        }
        std::cerr << "loadgen: " << s << " took "
                  << std::chrono::duration<double>(Clock::now() - t0).count() << " s\n";
    }
    if (!o.keep) {
        std::error_code ec;
        fs::remove_all(o.dir, ec);
    }
    return EXIT_SUCCESS;
}
