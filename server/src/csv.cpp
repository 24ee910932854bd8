// CSV reading and writing. Format and rules: csv.hpp.
#include "csv.hpp"

namespace fieldsync::server::csv {

namespace p = fieldsync::protocol;

protocol::Result<std::vector<Row>> parse(std::string_view text) {
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
    std::vector<Row> rows;
    std::size_t line = 1;
    std::size_t i = 0;
    const std::size_t n = text.size();
    while (i < n) {
        // Skip blank lines.
        if (text[i] == '\n') {
            ++line;
            ++i;
            continue;
        }
        if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') {
            ++line;
            i += 2;
            continue;
        }
        Row row;
        row.line = line;
        for (;;) {  // one field per iteration
            std::string field;
            if (i < n && text[i] == '"') {
                const std::size_t start_line = line;
                ++i;
                bool closed = false;
                while (i < n) {
                    char c = text[i];
                    if (c == '"') {
                        if (i + 1 < n && text[i + 1] == '"') {
                            field += '"';
                            i += 2;
                            continue;
                        }
                        ++i;
                        closed = true;
                        break;
                    }
                    if (c == '\n') ++line;
                    field += c;
                    ++i;
                }
                if (!closed)
                    return p::Error{
                        p::protocol_errc::invalid_value,
                        "line " + std::to_string(start_line) +
                            ": unterminated quoted field (a \" opens it, none closes it)"};
                if (i < n && text[i] != ',' && text[i] != '\n' &&
                    !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
                    return p::Error{p::protocol_errc::invalid_value,
                                    "line " + std::to_string(line) +
                                        ": text after a closing quote (write \"\" for a quote "
                                        "inside a quoted field)"};
                }
            } else {
                while (i < n && text[i] != ',' && text[i] != '\n' &&
                       !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
                    if (text[i] == '"')
                        return p::Error{p::protocol_errc::invalid_value,
                                        "line " + std::to_string(line) +
                                            ": a \" inside an unquoted field (quote the whole "
                                            "field and write \"\" for the quote)"};
                    field += text[i];
                    ++i;
                }
            }
            row.fields.push_back(std::move(field));
            if (i < n && text[i] == ',') {
                ++i;
                continue;
            }
            // End of record: CRLF, LF or end of text.
            if (i < n && text[i] == '\r') ++i;
            if (i < n && text[i] == '\n') {
                ++i;
                ++line;
            }
            break;
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

std::string quote(std::string_view cell) {
    const bool needs = cell.find_first_of(",\"\r\n") != std::string_view::npos ||
                       (!cell.empty() && (cell.front() == ' ' || cell.back() == ' '));
    if (!needs) return std::string(cell);
    std::string out;
    out.reserve(cell.size() + 2);
    out += '"';
    for (char c : cell) {
        if (c == '"') out += '"';
        out += c;
    }
    out += '"';
    return out;
}

std::string neutralise_formula(std::string_view cell) {
    if (!cell.empty()) {
        switch (cell.front()) {
            case '=':
            case '+':
            case '-':
            case '@':
            case '\t':
            case '\r':
                return "'" + std::string(cell);
            default:
                break;
        }
    }
    return std::string(cell);
}

void append_row(std::string& out, const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
        if (i) out += ',';
        out += quote(cells[i]);
    }
    out += "\r\n";
}

}  // namespace fieldsync::server::csv
