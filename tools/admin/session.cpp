// Session file and password input of the admin command line. Contract: session.hpp.
#include "session.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "http_client.hpp"

namespace fieldsync::admin {

namespace fs = std::filesystem;
namespace json = boost::json;

fs::path token_file() {
    if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
        return fs::path(xdg) / "fieldsync" / "token";
    if (const char* home = std::getenv("HOME"); home && *home)
        return fs::path(home) / ".config" / "fieldsync" / "token";
    throw UsageError(
        "neither HOME nor XDG_CONFIG_HOME is set, so there is no place to keep the "
        "token; pass --token or set FIELDSYNC_TOKEN");
}

std::optional<SavedSession> load_session() {
    const fs::path file = token_file();
    std::ifstream in(file);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    json::error_code ec;
    json::value v = json::parse(ss.str(), ec);
    if (ec || !v.is_object())
        throw UsageError(file.string() +
                         " is not a fieldsync session file; remove it and log in "
                         "again (fieldsync login --server URL --user NAME)");
    const auto& o = v.as_object();
    auto str = [&o](const char* k) {
        const auto* x = o.if_contains(k);
        return x && x->is_string() ? std::string(x->as_string()) : std::string();
    };
    SavedSession s{str("server"), str("user"), str("token"), str("expires_at"), str("cacert")};
    if (s.token.empty() || s.server.empty())
        throw UsageError(file.string() + " holds no token; log in again");
    return s;
}

void save_session(const SavedSession& s) {
    const fs::path file = token_file();
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    if (ec)
        throw std::runtime_error("cannot create " + file.parent_path().string() + ": " +
                                 ec.message());
    ::chmod(file.parent_path().c_str(), 0700);
    json::object o{
        {"server", s.server}, {"user", s.user}, {"token", s.token}, {"expires_at", s.expires_at}};
    if (!s.cacert.empty()) o["cacert"] = s.cacert;
    const std::string text = json::serialize(o) + "\n";
    fs::path tmp = file;
    tmp += ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    ::fchmod(fd, 0600);
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int e = errno;
            ::close(fd);
            throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(e));
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0)
        throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    fs::rename(tmp, file, ec);
    if (ec) throw std::runtime_error("cannot rename " + tmp.string() + ": " + ec.message());
}

bool remove_session() {
    std::error_code ec;
    return fs::remove(token_file(), ec);
}

std::string read_password_file(const std::string& file) {
    std::ifstream in(file);
    if (!in) throw UsageError("--password-file " + file + ": cannot read it");
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) throw UsageError("--password-file " + file + ": the first line is empty");
    return line;
}

namespace {

std::string read_hidden(const std::string& prompt) {
    std::cerr << prompt << std::flush;
    termios old{};
    const bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    std::getline(std::cin, line);
    if (tty) {
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        std::cerr << "\n";
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
}

}  // namespace

std::string read_password(const std::string& prompt, bool confirm) {
    if (!::isatty(STDIN_FILENO)) {
        std::string line;
        if (!std::getline(std::cin, line) || line.empty() || line == "\r")
            throw UsageError(
                "no password: give it on standard input, with --password-file FILE, "
                "or run in a terminal to be asked");
        if (line.back() == '\r') line.pop_back();
        return line;
    }
    std::string pw = read_hidden(prompt);
    if (pw.empty()) throw UsageError("no password given");
    if (confirm && read_hidden("Repeat the password: ") != pw)
        throw UsageError("the two passwords differ");
    return pw;
}

}  // namespace fieldsync::admin
