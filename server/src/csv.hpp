// CSV for the HTTP API: reading area imports and writing record exports. Private to the server.
//
// Format: RFC 4180. Records end with CRLF when written; reading accepts CRLF, LF and a final
// record without a line break. A field is quoted when it contains a comma, a double quote, CR or
// LF (and when it starts or ends with a space, so spreadsheets do not trim it); a double quote
// inside a quoted field is doubled. Reading strips one leading UTF-8 byte-order mark.
//
// Formula injection (OWASP "CSV Injection"): spreadsheets evaluate a cell that starts with
// = + - @ (or TAB / CR, which some of them skip before looking). `neutralise_formula` prefixes
// such text with a single quote, so the cell shows as text. Exports apply it to every cell
// whose text came from a survey-entered value; cells fieldsync formats itself from numbers
// (integers, coordinates) are left alone, so "-5" stays a number.
//
// Thread-safe free functions (no shared state).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "fieldsync/protocol/error.hpp"

namespace fieldsync::server::csv {

/// One parsed record: its fields and the 1-based line on which it starts.
struct Row {
    std::size_t line = 0;
    std::vector<std::string> fields;
};

/// Parses a whole CSV text. Failure: invalid_value with a message naming the line, e.g.
/// "line 7: unterminated quoted field" or "line 3: text after a closing quote".
/// Blank lines (no characters at all) are skipped.
protocol::Result<std::vector<Row>> parse(std::string_view text);

/// `cell` quoted as RFC 4180 requires (unchanged when no quoting is needed).
std::string quote(std::string_view cell);

/// `cell` with a leading single quote when a spreadsheet would evaluate it as a formula.
std::string neutralise_formula(std::string_view cell);

/// Appends `cells` as one CSV record ending with CRLF (each cell quoted as needed; no
/// neutralisation: callers neutralise the cells that need it first).
void append_row(std::string& out, const std::vector<std::string>& cells);

}  // namespace fieldsync::server::csv
