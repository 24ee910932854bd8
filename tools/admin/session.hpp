// Where the admin command line keeps its session, and how it reads passwords.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace fieldsync::admin {

/// A saved login: which server, which user, the bearer token and when it expires.
struct SavedSession {
    std::string server;  ///< normalised server URL
    std::string user;
    std::string token;
    std::string expires_at;  ///< ISO 8601, as the server said
    std::string cacert;      ///< the --cacert used at login ("" = system store)
};

/// $XDG_CONFIG_HOME/fieldsync/token, else $HOME/.config/fieldsync/token.
/// Throws UsageError when neither variable is set.
std::filesystem::path token_file();

/// The saved session, or nullopt when there is none. Throws UsageError when the file exists
/// but cannot be read or parsed (the message names the file).
std::optional<SavedSession> load_session();

/// Writes the session file with mode 0600 (its folder 0700) through a temporary file and a
/// rename, so it is never readable by others, not even for a moment. Throws std::runtime_error.
void save_session(const SavedSession& s);

/// Removes the session file; true when there was one.
bool remove_session();

/// The first line of `file` (without the line end). Throws UsageError when unreadable or empty.
std::string read_password_file(const std::string& file);

/// A password: from the terminal without echo when stdin is a terminal (asking twice when
/// `confirm`), else the first line of stdin. Throws UsageError when none is given.
std::string read_password(const std::string& prompt, bool confirm);

}  // namespace fieldsync::admin
