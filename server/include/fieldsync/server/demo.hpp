// Demo data: the bundled household survey, the Ordos area tree, demo accounts and demo survey
// records, so that a newcomer can run `fieldsync-server --demo --plain`, sign in at once and
// (with the records) find households, visits and conflicts in the console to look at and settle.
//
// The areas follow the 2017 Ordos poverty-relief report in shared/seed/ (Longhuqu, Nalinxili
// and Hashatu villages in Ejin Horo Banner; Xini Town with Shengli, Sishililiang and Amenqi in
// Hanggin Banner; Dalad Banner's gaqa e-commerce stations), under codes such as
// "ordos/ejin-horo/altan-xire/longhuqu" with English and Chinese names.
//
// Accounts (passwords are random, made at first start):
//   admin                 admin        ordos
//   supervisor-ejin-horo  supervisor   ordos/ejin-horo
//   supervisor-hanggin    supervisor   ordos/hanggin
//   enumerator-longhuqu   enumerator   ordos/ejin-horo/altan-xire/longhuqu
//   enumerator-hashatu    enumerator   ordos/ejin-horo/altan-xire/hashatu
//   enumerator-xini       enumerator   ordos/hanggin/xini
// They are written to <data_dir>/demo-credentials.txt (mode 0600) so they can be found again.
//
// Survey records (made up; written only into a new store, dated relative to the first start; the
// server writes them unless --no-demo-records, see docs/operations.md):
//   households  26: Longhuqu 6, Hashatu 5, Nalinxili 3 (Ejin Horo); Shengli 4, Sishililiang 4,
//               Amenqi 4 (Hanggin, Xini Town). Every poverty status (national line, dibao line,
//               marginal, not poor, exited with an exit reason), Mongolian and Han heads,
//               18-digit identity numbers of Ejin Horo (150627) or Hanggin (150625) form with
//               a valid check digit, income per capita, assistance modes, cooperatives, GPS.
//   members     13, of four households.
//   visits      40 of the four kinds over the last six weeks, with findings; some approved or
//               marked as having issues by the banner supervisor (written as a console review
//               is: under the server's replica), some pending.
//   conflicts   2 open: a Longhuqu household's poverty_status (enumerator-longhuqu's tablet vs
//               supervisor-ejin-horo's tablet) and a Sishililiang household's income_per_capita
//               (enumerator-xini vs supervisor-hanggin): concurrent writes of two replicas.
// Every record goes through write_record_change (validation, row, audit with device "demo",
// conflicts), in time order, so the change history looks like synced data. Replica and record
// ids are derived deterministically (record ids are UUIDv7 of the record's creation time).
//
// No Beast/Asio here. \note The functions are thread-compatible (the Store is not thread-safe).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/server.hpp"
#include "fieldsync/server/store.hpp"

namespace fieldsync::server {

/// The demo survey (protocol/schemas/household-survey.json), embedded at build time.
/// \note Thread-safe.
std::string_view bundled_schema_json() noexcept;

/// The demo area tree, parents before children. \note Thread-safe.
std::vector<Area> demo_areas();

/// What seed_demo_records wrote.
struct DemoRecords {
    std::size_t households = 0;
    std::size_t members = 0;
    std::size_t visits = 0;
    std::size_t writes = 0;     ///< record changes stored (one audit row each)
    std::size_t conflicts = 0;  ///< conflicts left open
    /// Why nothing was written although asked ("" when records were written or not asked):
    /// e.g. the served schema is not the demo survey.
    std::string skipped;
};

/// What seed_demo made.
struct DemoSeed {
    std::vector<DemoAccount> accounts;  ///< empty: not a new store, nothing was seeded
    DemoRecords records;
};

/// Seeds the demo areas and accounts into `store` when it holds no users and no areas; does
/// nothing (and returns no accounts) otherwise. With `schema` (the schema being served, already
/// stored), the demo survey records are seeded too, in the same transaction (see
/// seed_demo_records); nullptr seeds no records. Everything is written in one transaction;
/// the credentials file is written (0600, replacing any old one) before the commit, so a
/// failed start never leaves accounts whose passwords nobody knows.
/// Fails with internal (store or file errors) naming what failed.
Result<DemoSeed> seed_demo(Store& store, const protocol::Schema* schema,
                           const std::filesystem::path& credentials_file, std::int64_t now_ms,
                           int password_iterations = default_password_iterations);

/// Writes the demo survey records (listed at the top of this file) when the store holds no
/// records at all (last_seq() == 0); otherwise writes nothing. Timestamps lie in the six weeks
/// before `now_ms`, the newest on the previous (UTC) day. Runs in its own transaction, or inside
/// the caller's (begin/commit nest). When `schema` is not the demo survey (another name, or a
/// version whose fields no longer take these records), nothing is written and `skipped` says why.
/// Fails with internal on store errors.
Result<DemoRecords> seed_demo_records(Store& store, const protocol::Schema& schema,
                                      std::int64_t now_ms);

/// Reads the accounts back from a credentials file written by seed_demo.
/// Fails with internal when the file cannot be read.
Result<std::vector<DemoAccount>> read_demo_credentials(const std::filesystem::path& file);

}  // namespace fieldsync::server
