// Console static files. Contract and rules: static_files.hpp.
#include "static_files.hpp"

#include <array>
#include <utility>
#include <vector>

namespace fieldsync::server {

namespace {

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            int hi = hex_value(text[i + 1]);
            int lo = hex_value(text[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            c = static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') return std::nullopt;
        out += c;
    }
    return out;
}

std::string content_type_for(const std::filesystem::path& file) {
    static const std::array<std::pair<std::string_view, std::string_view>, 22> types{{
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".webmanifest", "application/manifest+json"},
        {".txt", "text/plain; charset=utf-8"},
        {".csv", "text/csv; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/vnd.microsoft.icon"},
        {".woff", "font/woff"},
        {".woff2", "font/woff2"},
        {".ttf", "font/ttf"},
        {".wasm", "application/wasm"},
        {".xml", "application/xml"},
    }};
    std::string ext = file.extension().string();
    for (auto& ch : ext)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    for (const auto& [e, t] : types)
        if (ext == e) return std::string(t);
    return "application/octet-stream";
}

std::optional<StaticFile> resolve_static(const std::filesystem::path& root,
                                         std::string_view relative) {
    namespace fs = std::filesystem;
    if (root.empty()) return std::nullopt;
    relative = relative.substr(0, relative.find_first_of("?#"));
    auto decoded = percent_decode(relative);
    if (!decoded) return std::nullopt;
    if (decoded->find('\\') != std::string::npos) return std::nullopt;

    std::vector<std::string> segments;
    std::size_t start = 0;
    while (start <= decoded->size()) {
        std::size_t end = decoded->find('/', start);
        if (end == std::string::npos) end = decoded->size();
        std::string seg = decoded->substr(start, end - start);
        start = end + 1;
        if (seg.empty() || seg == ".") continue;
        if (seg[0] == '.') return std::nullopt;  // "..", and hidden files
        segments.push_back(std::move(seg));
    }

    std::error_code ec;
    fs::path real_root = fs::canonical(root, ec);
    if (ec) return std::nullopt;
    fs::path candidate = real_root;
    for (const auto& s : segments)
        candidate /= s;
    if (fs::is_directory(candidate, ec)) candidate /= "index.html";
    fs::path real = fs::canonical(candidate, ec);
    if (ec) return std::nullopt;
    // Inside the root: the resolved path starts with every component of the resolved root.
    auto r = real_root.begin();
    auto p = real.begin();
    for (; r != real_root.end(); ++r, ++p) {
        if (p == real.end() || *p != *r) return std::nullopt;
    }
    if (!fs::is_regular_file(real, ec)) return std::nullopt;
    return StaticFile{real, content_type_for(real)};
}

}  // namespace fieldsync::server
