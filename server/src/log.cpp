// The server's logger. Contract: fieldsync/server/log.hpp.
#include "fieldsync/server/log.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace fieldsync::server::log {

namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};
std::mutex g_mutex;

const char* tag(Level level) noexcept {
    switch (level) {
        case Level::debug:
            return "DEBUG";
        case Level::info:
            return "INFO ";
        case Level::warn:
            return "WARN ";
        case Level::error:
            return "ERROR";
        case Level::off:
            break;
    }
    return "     ";
}

}  // namespace

std::optional<Level> parse_level(std::string_view text) noexcept {
    if (text == "debug") return Level::debug;
    if (text == "info") return Level::info;
    if (text == "warn" || text == "warning") return Level::warn;
    if (text == "error") return Level::error;
    if (text == "off") return Level::off;
    return std::nullopt;
}

const char* to_string(Level level) noexcept {
    switch (level) {
        case Level::debug:
            return "debug";
        case Level::info:
            return "info";
        case Level::warn:
            return "warn";
        case Level::error:
            return "error";
        case Level::off:
            return "off";
    }
    return "info";
}

void set_level(Level level) noexcept {
    g_level.store(static_cast<int>(level));
}

Level level() noexcept {
    return static_cast<Level>(g_level.load());
}

bool enabled(Level l) noexcept {
    return l != Level::off && static_cast<int>(l) >= g_level.load(std::memory_order_relaxed);
}

void write(Level l, std::string_view message) {
    if (!enabled(l)) return;
    using namespace std::chrono;
    auto now = system_clock::now();
    auto t = system_clock::to_time_t(now);
    auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[96];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    std::string line;
    line.reserve(message.size() + 40);
    line += stamp;
    line += tag(l);
    line += ' ';
    line += message;
    line += '\n';
    std::lock_guard lock(g_mutex);
    // One write(2) per line: lines from several threads (and processes) never interleave.
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(STDERR_FILENO, p, left);
        if (n <= 0) break;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

}  // namespace fieldsync::server::log
