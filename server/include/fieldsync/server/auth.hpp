// Authentication primitives of the server: password hashes, bearer tokens, and the login
// throttle. No I/O and no clock reads: callers pass the time in.
//
// Password hash format (stored in users.password_hash):
//     pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>
// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2) over the UTF-8 password with a 16-byte random salt and a
// 32-byte output; hex is lower-case. The iteration count travels with the hash, so raising the
// default later leaves old hashes verifiable (re-hash them at the next successful login).
//
// Tokens: 32 random bytes, base64url without padding (43 characters). The server stores only
// token_hash(token), the lower-case hex SHA-256 of the token's text, so a copy of the database
// does not hand out sessions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace fieldsync::server {

/// PBKDF2 iterations of new hashes (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
inline constexpr int default_password_iterations = 210000;

/// Hashes `password` with a fresh random salt, in the format above.
/// Throws std::invalid_argument when iterations < 1 (a bug), std::runtime_error when OpenSSL's
/// random generator or PBKDF2 fails (an environment failure). \note Thread-safe.
std::string hash_password(std::string_view password, int iterations = default_password_iterations);

/// True when `password` matches `stored` (compared in constant time with CRYPTO_memcmp).
/// A malformed `stored` (wrong scheme, bad hex, iterations outside 1..10,000,000, salt outside
/// 1..64 bytes, hash outside 16..64 bytes) gives false. Costs one PBKDF2 run; for an unknown
/// user, verify against a dummy hash so timing does not reveal which names exist.
/// \note Thread-safe.
bool verify_password(std::string_view password, std::string_view stored);

/// A new bearer token: 32 bytes from RAND_bytes, base64url without padding (43 characters).
/// Throws std::runtime_error when the random generator fails. \note Thread-safe.
std::string new_token();

/// SHA-256 of the token's text, 64 lower-case hex digits: the form tokens are stored in.
/// \note Thread-safe.
std::string token_hash(std::string_view token);

/// Limits of a LoginThrottle.
struct LoginThrottleOptions {
    std::size_t max_failures = 5;                ///< failures within `window_ms` before a lock
    std::int64_t window_ms = 15 * 60 * 1000;     ///< how long a failure counts
    std::int64_t base_delay_ms = 30 * 1000;      ///< first lock; each further one doubles it
    std::int64_t max_delay_ms = 15 * 60 * 1000;  ///< longest lock
    std::size_t max_keys = 100000;               ///< keys kept before idle ones are swept
};

/// Refuses logins for a key (a user name or a client address; prefix them, e.g. "user:ana",
/// "peer:10.0.0.7", so the two never collide) after repeated failures.
///
/// Rule: after `max_failures` failures within `window_ms`, the key is locked for
/// `base_delay_ms`. While the key is "hot" (from its first lock until it has gone a whole
/// window without failing after its last lock ended), every further failure locks it again for
/// twice as long, up to `max_delay_ms`: 30 s, 1 min, 2 min, ... 15 min. record_success forgets
/// the key. Callers check allow() for every key before verifying a password, and record the
/// outcome for every key after.
///
/// Times are the caller's (Unix or monotonic milliseconds, but always the same clock); the
/// throttle never reads a clock. Memory: one small entry per key with recent failures; when
/// more than `max_keys` exist, entries that have cooled down are dropped.
/// \note Thread-safe (one mutex).
class LoginThrottle {
public:
    LoginThrottle() = default;
    explicit LoginThrottle(LoginThrottleOptions options) : m_options(options) {}
    LoginThrottle(const LoginThrottle&) = delete;
    LoginThrottle& operator=(const LoginThrottle&) = delete;

    /// True when a login attempt for `key` may proceed at `now_ms`.
    bool allow(std::string_view key, std::int64_t now_ms) const;
    /// Milliseconds until `key` may try again (0 when allowed now): for Retry-After.
    std::int64_t retry_after_ms(std::string_view key, std::int64_t now_ms) const;
    /// Counts a failed attempt for `key` at `now_ms`, locking the key when the rule says so.
    void record_failure(std::string_view key, std::int64_t now_ms);
    /// Forgets the failures and lock of `key`.
    void record_success(std::string_view key);
    /// Number of keys currently tracked (for tests and metrics).
    std::size_t size() const;

private:
    struct Entry {
        std::vector<std::int64_t> failures;  // recent failure times, oldest first (<= max)
        unsigned level = 0;                  // locks since the key was last cool
        std::int64_t locked_until = 0;
    };
    std::int64_t delay(unsigned level) const noexcept;
    void sweep(std::int64_t now_ms);

    LoginThrottleOptions m_options;
    mutable std::mutex m_mutex;
    std::map<std::string, Entry, std::less<>> m_entries;  // guarded by m_mutex
    std::size_t m_sweep_at = 0;                           // guarded by m_mutex
    std::int64_t m_last_sweep_ms = 0;                     // guarded by m_mutex
};

}  // namespace fieldsync::server
