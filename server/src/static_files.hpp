// Static files of the supervisor console (/console/*): URL path to file, refusing anything that
// could leave the console folder. No Beast here: the rules are tested without sockets.
//
// Rules, applied to the part of the URL path after "/console/" (the query is ignored):
//   - percent-decoding must be well-formed; a decoded NUL or backslash is refused;
//   - segments "..", and segments starting with "." (hidden files such as .git) are refused;
//     "." and empty segments are skipped;
//   - an empty path or one naming a folder serves that folder's index.html;
//   - the file, with symbolic links resolved, must be a regular file inside the (resolved)
//     root: a link pointing outside is refused.
// Refused and missing files look the same to the client (404).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace fieldsync::server {

struct StaticFile {
    std::filesystem::path path;  ///< resolved, inside the root
    std::string content_type;
};

/// Decodes %XX escapes; nullopt when an escape is malformed or decodes to NUL.
std::optional<std::string> percent_decode(std::string_view text);

/// The Content-Type for a file name, by extension (text types with charset=utf-8);
/// application/octet-stream when unknown.
std::string content_type_for(const std::filesystem::path& file);

/// Resolves `relative` (the URL path after "/console/", possibly with a query) under `root`.
/// nullopt when refused or not found. \note Thread-safe (reads the file system).
std::optional<StaticFile> resolve_static(const std::filesystem::path& root,
                                         std::string_view relative);

}  // namespace fieldsync::server
