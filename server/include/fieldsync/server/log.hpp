// The server's logger: one line per event on stderr, with a UTC timestamp and a level.
//
//   2025-05-01T08:30:12.345Z INFO  fieldsync-server listening on http://127.0.0.1:8470
//
// Deliberately tiny: the server runs under a service manager (systemd, a container runtime)
// that timestamps, rotates and ships stderr, so the logger only has to write whole lines and
// never interleave them. Messages are assembled by the caller's arguments with operator<<:
//
//   log::info("accepted ", peer, " (", kind, ")");
//
// Arguments are only formatted when the level is enabled.
//
// \note Thread-safe: lines are written under one mutex, each with one write.
#pragma once

#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

namespace fieldsync::server::log {

enum class Level : int { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

/// Parses "debug", "info", "warn" (or "warning"), "error", "off". nullopt for anything else.
std::optional<Level> parse_level(std::string_view text) noexcept;
/// The spelling parse_level accepts ("debug", ...).
const char* to_string(Level level) noexcept;

/// Sets the lowest level written (default info). \note Thread-safe.
void set_level(Level level) noexcept;
Level level() noexcept;
/// True when a message at `level` would be written. \note Thread-safe.
bool enabled(Level level) noexcept;

/// Writes one line (the message must not end with a newline; embedded newlines are kept).
/// \note Thread-safe.
void write(Level level, std::string_view message);

template <class... Args>
void log(Level level, const Args&... args) {
    if (!enabled(level)) return;
    if constexpr (sizeof...(Args) == 1 && (std::is_convertible_v<Args, std::string_view> && ...)) {
        write(level, std::string_view(args...));
    } else {
        std::ostringstream out;
        (out << ... << args);
        write(level, out.str());
    }
}

template <class... Args>
void debug(const Args&... args) {
    log(Level::debug, args...);
}
template <class... Args>
void info(const Args&... args) {
    log(Level::info, args...);
}
template <class... Args>
void warn(const Args&... args) {
    log(Level::warn, args...);
}
template <class... Args>
void error(const Args&... args) {
    log(Level::error, args...);
}

}  // namespace fieldsync::server::log
