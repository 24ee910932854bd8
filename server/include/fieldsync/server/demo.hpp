// Demo data: the bundled household survey, the Ordos area tree and demo accounts, so that a
// newcomer can run `fieldsync-server --demo --plain` and sign in at once.
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
// No Beast/Asio here. \note The functions are thread-compatible (the Store is not thread-safe).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/server.hpp"
#include "fieldsync/server/store.hpp"

namespace fieldsync::server {

/// The demo survey (protocol/schemas/household-survey.json), embedded at build time.
/// \note Thread-safe.
std::string_view bundled_schema_json() noexcept;

/// The demo area tree, parents before children. \note Thread-safe.
std::vector<Area> demo_areas();

/// Seeds the demo areas and accounts into `store` when it holds no users and no areas; does
/// nothing (and returns an empty list) otherwise. Everything is written in one transaction;
/// the credentials file is written (0600, replacing any old one) before the commit, so a
/// failed start never leaves accounts whose passwords nobody knows. Returns the accounts made.
/// Fails with internal (store or file errors) naming what failed.
Result<std::vector<DemoAccount>> seed_demo(Store& store,
                                           const std::filesystem::path& credentials_file,
                                           std::int64_t now_ms,
                                           int password_iterations = default_password_iterations);

/// Reads the accounts back from a credentials file written by seed_demo.
/// Fails with internal when the file cannot be read.
Result<std::vector<DemoAccount>> read_demo_credentials(const std::filesystem::path& file);

}  // namespace fieldsync::server
