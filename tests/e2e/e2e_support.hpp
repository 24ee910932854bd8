// Support for the end-to-end tests: child processes (the real fieldsync-server and
// fieldsync-tablet binaries), a server fixture that starts on 127.0.0.1 with port 0 and
// --port-file and always stops within bounded time, and a tiny HTTP/1.1 client for the JSON API.
//
// Every wait here is bounded; a test that would hang fails with the logs of the processes.
#pragma once

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace e2e {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

inline fs::path bin(const std::string& name) {
    return fs::path(FIELDSYNC_BIN_DIR) / name;
}

inline std::string read_file(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
}

/// A fresh directory, removed at the end unless FIELDSYNC_KEEP_E2E is set.
class TempDir {
public:
    explicit TempDir(const std::string& tag) {
        std::random_device rd;
        m_path = fs::temp_directory_path() / ("fieldsync-e2e-" + tag + "-" + std::to_string(rd()));
        fs::create_directories(m_path);
    }
    ~TempDir() {
        if (std::getenv("FIELDSYNC_KEEP_E2E")) return;
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return m_path; }

private:
    fs::path m_path;
};

/// A child process with stdout and stderr redirected to files.
class Process {
public:
    Process(const fs::path& exe, const std::vector<std::string>& args, const fs::path& out,
            const fs::path& err, const std::string& stdin_text = "")
        : m_out(out), m_err(err) {
        int in_pipe[2] = {-1, -1};
        REQUIRE(::pipe(in_pipe) == 0);
        m_pid = ::fork();
        REQUIRE(m_pid >= 0);
        if (m_pid == 0) {
            // If the test process dies (a crash, a kill), the child gets SIGTERM instead of
            // living on as an orphan (a server would keep its port and files).
            ::prctl(PR_SET_PDEATHSIG, SIGTERM);
            ::dup2(in_pipe[0], STDIN_FILENO);
            ::close(in_pipe[0]);
            ::close(in_pipe[1]);
            const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(o, STDOUT_FILENO);
            ::dup2(e, STDERR_FILENO);
            std::vector<std::string> all{exe.string()};
            all.insert(all.end(), args.begin(), args.end());
            std::vector<char*> argv;
            for (auto& a : all)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(exe.c_str(), argv.data());
            ::_exit(127);
        }
        ::close(in_pipe[0]);
        if (!stdin_text.empty()) (void)!::write(in_pipe[1], stdin_text.data(), stdin_text.size());
        ::close(in_pipe[1]);
    }
    ~Process() {
        if (m_pid > 0 && !m_status) kill_now();
    }
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return m_pid; }

    /// Waits up to `timeout`; the exit code (128+signal when killed), or nullopt on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout) {
        if (m_status) return m_status;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            int st = 0;
            const pid_t r = ::waitpid(m_pid, &st, WNOHANG);
            if (r == m_pid) {
                m_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                return m_status;
            }
            if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
            std::this_thread::sleep_for(5ms);
        }
    }
    void signal(int sig) {
        if (m_pid > 0 && !m_status) ::kill(m_pid, sig);
    }
    int kill_now() {
        signal(SIGKILL);
        return wait(10s).value_or(-1);
    }
    std::string out() const { return read_file(m_out); }
    std::string err() const { return read_file(m_err); }

private:
    pid_t m_pid = -1;
    fs::path m_out, m_err;
    std::optional<int> m_status;
};

/// The result of running a command to completion.
struct Run {
    int rc = -1;
    std::string out;
    std::string err;
    json::value json() const {
        json::error_code ec;
        // --json prints one document on the last non-empty line.
        auto end = out.find_last_not_of("\n");
        auto start = out.rfind('\n', end);
        std::string last = out.substr(
            start == std::string::npos ? 0 : start + 1,
            end == std::string::npos ? 0 : end - (start == std::string::npos ? 0 : start + 1) + 1);
        auto v = json::parse(last, ec);
        if (ec) FAIL_CHECK("not JSON: " << out << "\nstderr: " << err);
        return v;
    }
};

inline int g_run_counter = 0;

/// Runs `exe args` (stdin from `input`) with a timeout (then killed); output captured.
inline Run run(const fs::path& dir, const fs::path& exe, const std::vector<std::string>& args,
               std::chrono::milliseconds timeout = 60s, const std::string& input = "") {
    const int n = ++g_run_counter;
    Process p(exe, args, dir / ("run-" + std::to_string(n) + ".out"),
              dir / ("run-" + std::to_string(n) + ".err"), input);
    Run r;
    auto rc = p.wait(timeout);
    if (!rc) {
        p.kill_now();
        r.rc = -1;
    } else {
        r.rc = *rc;
    }
    r.out = p.out();
    r.err = p.err();
    if (!rc)
        FAIL_CHECK(exe.filename().string()
                   << " did not finish within " << timeout.count() << " ms; stderr: " << r.err);
    return r;
}

/// fieldsync-server on 127.0.0.1, port 0, demo data; stopped (SIGTERM, then SIGKILL) by the
/// destructor within bounded time.
class Server {
public:
    /// `extra`: e.g. {"--tls-cert", c, "--tls-key", k} (then no --plain unless given).
    explicit Server(const fs::path& dir, std::vector<std::string> extra = {}, bool plain = true)
        : m_dir(dir / "server") {
        fs::create_directories(m_dir);
        const auto port_file = m_dir / "port";
        // A restart on the same folder must not read the previous run's port.
        std::error_code stale;
        fs::remove(port_file, stale);
        // --no-demo-records: the tests count the records they write themselves.
        std::vector<std::string> args{"--demo",
                                      "--no-demo-records",
                                      "--port",
                                      "0",
                                      "--port-file",
                                      port_file.string(),
                                      "--data-dir",
                                      (m_dir / "data").string()};
        if (plain) args.push_back("--plain");
        args.insert(args.end(), extra.begin(), extra.end());
        m_process = std::make_unique<Process>(bin("fieldsync-server"), args, m_dir / "server.out",
                                              m_dir / "server.err");
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (std::chrono::steady_clock::now() < deadline && m_port == 0) {
            std::this_thread::sleep_for(20ms);
            const std::string text = read_file(port_file);
            try {
                const int p = text.empty() ? 0 : std::stoi(text);
                if (p > 0 && p < 65536) m_port = static_cast<std::uint16_t>(p);
            } catch (const std::exception&) {
            }
            if (m_port == 0 && m_process->wait(0ms)) break;  // exited
        }
        REQUIRE_MESSAGE(m_port != 0, "fieldsync-server did not start; stderr:\n"
                                         << m_process->err() << "\nstdout:\n"
                                         << m_process->out());
        load_credentials();
    }
    ~Server() { stop(); }

    /// SIGTERM, wait up to 15 s for the graceful shutdown, then SIGKILL.
    int stop() {
        if (!m_process) return 0;
        m_process->signal(SIGTERM);
        auto rc = m_process->wait(15s);
        if (!rc) {
            MESSAGE("fieldsync-server ignored SIGTERM for 15 s; killing it");
            rc = m_process->kill_now();
        }
        m_process.reset();
        return *rc;
    }

    /// Sends `sig` to the server (SIGTERM: graceful shutdown; SIGKILL: a crash).
    void signal(int sig) {
        if (m_process) m_process->signal(sig);
    }
    /// Waits up to `timeout` for the server to exit: its status (128+signal when killed), or
    /// nullopt when it is still running.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
        return m_process ? m_process->wait(timeout) : std::optional<int>{};
    }
    /// The server's SQLite database (for read-only inspection by tests).
    fs::path db_path() const { return m_dir / "data" / "fieldsync.db"; }

    std::uint16_t port() const { return m_port; }
    std::string url(bool tls = false) const {
        return std::string(tls ? "wss" : "ws") + "://127.0.0.1:" + std::to_string(m_port) + "/sync";
    }
    std::string password(const std::string& user) const {
        auto it = m_passwords.find(user);
        REQUIRE_MESSAGE(it != m_passwords.end(),
                        "no demo password for " << user << " in demo-credentials.txt:\n"
                                                << read_file(m_dir / "data/demo-credentials.txt"));
        return it->second;
    }
    const fs::path& dir() const { return m_dir; }
    std::string log() const { return m_process ? m_process->err() : ""; }

private:
    /// demo-credentials.txt: "# comment" lines, then one line per account:
    /// `name  role  password  areas` (server/src/demo.cpp).
    void load_credentials() {
        std::istringstream in(read_file(m_dir / "data/demo-credentials.txt"));
        std::string line;
        while (std::getline(in, line)) {
            if (line.empty() || line[0] == '#') continue;
            std::istringstream words(line);
            std::string name, role, password;
            if (words >> name >> role >> password) m_passwords[name] = password;
        }
    }

    fs::path m_dir;
    std::unique_ptr<Process> m_process;
    std::uint16_t m_port = 0;
    std::map<std::string, std::string> m_passwords;
};

/// The reply of an HTTP request.
struct HttpReply {
    int status = 0;
    std::string head;  ///< the status line and headers, header names and values lower-cased
    std::string body;
    json::value json() const {
        json::error_code ec;
        auto v = json::parse(body, ec);
        if (ec) FAIL_CHECK("HTTP body is not JSON (status " << status << "): " << body);
        return v;
    }
};

/// One HTTP/1.1 request to 127.0.0.1:port (plain), Connection: close; bounded by timeouts.
inline HttpReply http(std::uint16_t port, const std::string& method, const std::string& target,
                      const std::string& body = "", const std::string& token = "") {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    std::string req = method + " " + target +
                      " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                      "\r\nConnection: close\r\nAccept: application/json\r\n";
    if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
    if (!body.empty() || method == "POST" || method == "PUT")
        req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\n";
    req += "\r\n" + body;
    for (std::size_t sent = 0; sent < req.size();) {
        const auto n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
        REQUIRE(n > 0);
        sent += static_cast<std::size_t>(n);
    }
    std::string resp;
    char buf[8192];
    for (;;) {
        const auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        resp.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    HttpReply r;
    const auto head_end = resp.find("\r\n\r\n");
    REQUIRE_MESSAGE(head_end != std::string::npos, "no HTTP response: " << resp);
    r.status = std::stoi(resp.substr(resp.find(' ') + 1, 3));
    std::string head = resp.substr(0, head_end);
    std::string raw = resp.substr(head_end + 4);
    std::string lower_head = head;
    for (char& c : lower_head)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.head = lower_head;
    if (lower_head.find("transfer-encoding: chunked") != std::string::npos) {
        std::size_t pos = 0;
        while (pos < raw.size()) {
            const auto eol = raw.find("\r\n", pos);
            if (eol == std::string::npos) break;
            const std::size_t len = std::stoul(raw.substr(pos, eol - pos), nullptr, 16);
            if (len == 0) break;
            r.body += raw.substr(eol + 2, len);
            pos = eol + 2 + len + 2;
        }
    } else {
        r.body = raw;
    }
    return r;
}

/// POST /api/login; returns the bearer token.
inline std::string api_login(std::uint16_t port, const std::string& user,
                             const std::string& password) {
    json::object body{{"user", user}, {"password", password}};
    auto r = http(port, "POST", "/api/login", json::serialize(body));
    REQUIRE_MESSAGE(r.status == 200, "login failed: " << r.status << " " << r.body);
    return std::string(r.json().at("token").as_string());
}

/// One fieldsync-tablet with its own replica file.
class Tablet {
public:
    Tablet(const fs::path& dir, std::string name)
        : m_dir(dir), m_db(dir / (name + ".db")), m_name(std::move(name)) {}

    Run cmd(std::vector<std::string> args, std::chrono::milliseconds timeout = 60s,
            const std::string& input = "") {
        std::vector<std::string> all{"--db", m_db.string(), "--json"};
        all.insert(all.end(), args.begin(), args.end());
        return run(m_dir, bin("fieldsync-tablet"), all, timeout, input);
    }
    /// Runs and requires exit status 0; returns the JSON output.
    json::value ok(std::vector<std::string> args) {
        auto r = cmd(args);
        REQUIRE_MESSAGE(r.rc == 0, m_name << ": fieldsync-tablet " << join(args) << " exited "
                                          << r.rc << "\nstdout: " << r.out
                                          << "\nstderr: " << r.err);
        return r.json();
    }
    json::value init(const std::string& url, const std::string& user, const std::string& password,
                     std::vector<std::string> extra = {}) {
        const auto pw = m_dir / (m_name + ".pw");
        write_file(pw, password + "\n");
        std::vector<std::string> args{"init", "--server",        url,        "--user",
                                      user,   "--password-file", pw.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        return ok(args);
    }
    void sync() { ok({"sync", "--timeout", "60"}); }
    json::value show(const std::string& collection, const std::string& id) {
        return ok({"show", collection, id});
    }
    const fs::path& db() const { return m_db; }

    static std::string join(const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v)
            s += (s.empty() ? "" : " ") + x;
        return s;
    }

private:
    fs::path m_dir;
    fs::path m_db;
    std::string m_name;
};

/// True when the server binary exists (the e2e tests need it).
inline bool have_server() {
    return fs::exists(bin("fieldsync-server")) && fs::exists(bin("fieldsync-tablet"));
}

}  // namespace e2e
