// fieldsync-mkcert: makes a self-signed certificate and private key for a fieldsync server.
//
// Usage:   fieldsync-mkcert --out DIR [--host NAME_OR_IP]... [--days N] [--rsa] [--force]
// Example: fieldsync-mkcert --out ./data/tls --host 127.0.0.1 --host survey.example.org
//          fieldsync-server --tls-cert ./data/tls/cert.pem --tls-key ./data/tls/key.pem ...
//
// Writes DIR/cert.pem (mode 0644) and DIR/key.pem (mode 0600, PKCS#8). The key is EC P-256
// (or RSA 2048 with --rsa); the certificate is X.509 v3, signed with SHA-256, valid from five
// minutes ago (clock skew) for --days days, with subjectAltName entries for every --host (IP
// addresses as iPAddress, names as dNSName; default 127.0.0.1 and localhost), basicConstraints
// CA:FALSE, keyUsage digitalSignature (+keyEncipherment for RSA), extendedKeyUsage serverAuth.
// Clients trust it explicitly: `curl --cacert DIR/cert.pem`, the SDK's ca_file, or the SDK's
// certificate pin, which this tool prints ("sha256/<base64>" of the SubjectPublicKeyInfo).
//
// Only the OpenSSL 3 C API is used (EVP_PKEY, X509, X509V3), no openssl command line.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Options {
    fs::path out;
    std::vector<std::string> hosts;
    long days = 365;
    bool rsa = false;
    bool force = false;
};

const char* kUsage =
    "Usage: fieldsync-mkcert --out DIR [--host NAME_OR_IP]... [--days N] [--rsa] [--force]\n"
    "\n"
    "Makes a self-signed TLS certificate and private key for fieldsync-server:\n"
    "DIR/cert.pem (certificate) and DIR/key.pem (private key, readable only by you).\n"
    "\n"
    "Options:\n"
    "  --out DIR      folder to write cert.pem and key.pem into (created if missing)\n"
    "  --host H       a name or IP address clients use to reach the server; repeat for\n"
    "                 several (default: 127.0.0.1 and localhost)\n"
    "  --days N       validity in days (default 365)\n"
    "  --rsa          RSA 2048 instead of the default EC P-256 key\n"
    "  --force        replace existing files\n"
    "  -h, --help     this text\n"
    "\n"
    "Example:\n"
    "  fieldsync-mkcert --out ./data/tls --host 127.0.0.1 --host survey.example.org\n"
    "  fieldsync-server --tls-cert ./data/tls/cert.pem --tls-key ./data/tls/key.pem \\\n"
    "      --data-dir ./data\n"
    "  curl --cacert ./data/tls/cert.pem https://127.0.0.1:8470/healthz\n";

[[noreturn]] void fail(const std::string& what) {
    std::string detail;
    unsigned long e = ERR_get_error();
    if (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        detail = std::string(" (") + buf + ")";
    }
    throw std::runtime_error(what + detail);
}

struct PkeyFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
    void operator()(X509* p) const { X509_free(p); }
};
struct BnFree {
    void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ExtFree {
    void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct FileClose {
    void operator()(FILE* f) const { std::fclose(f); }
};

bool is_ip(const std::string& h) {
    unsigned char buf[16];
    return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

void add_ext(X509* cert, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, ExtFree> ext(
        X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
    if (!ext) fail("cannot make the extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
    if (X509_add_ext(cert, ext.get(), -1) != 1) fail("cannot add an extension");
}

/// Opens `file` for writing with `mode` (exclusive unless `force`).
std::unique_ptr<FILE, FileClose> create_file(const fs::path& file, mode_t mode, bool force) {
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
    int fd = ::open(file.c_str(), flags, mode);
    if (fd < 0) {
        if (errno == EEXIST)
            throw std::runtime_error(file.string() + " exists (use --force to replace it)");
        throw std::runtime_error("cannot create " + file.string() + ": " + std::strerror(errno));
    }
    ::fchmod(fd, mode);
    FILE* f = ::fdopen(fd, "w");
    if (!f) {
        ::close(fd);
        throw std::runtime_error("cannot open " + file.string());
    }
    return std::unique_ptr<FILE, FileClose>(f);
}

std::string base64(const unsigned char* data, int n) {
    std::string out(static_cast<std::size_t>(4 * ((n + 2) / 3)) + 1, '\0');
    int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, n);
    out.resize(static_cast<std::size_t>(len));
    return out;
}

int run(const Options& o) {
    std::unique_ptr<EVP_PKEY, PkeyFree> key(o.rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
    if (!key) fail("cannot generate the key");

    std::unique_ptr<X509, X509Free> cert(X509_new());
    if (!cert) fail("X509_new failed");
    X509_set_version(cert.get(), X509_VERSION_3);

    // A random positive 159-bit serial number (RFC 5280 §4.1.2.2: at most 20 octets).
    std::unique_ptr<BIGNUM, BnFree> serial(BN_new());
    if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())))
        fail("cannot make a serial number");

    if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) ||
        !X509_time_adj_ex(X509_getm_notAfter(cert.get()), static_cast<int>(o.days), 0, nullptr))
        fail("cannot set the validity period");
    if (X509_set_pubkey(cert.get(), key.get()) != 1) fail("cannot set the public key");

    X509_NAME* name = X509_get_subject_name(cert.get());
    const std::string cn = o.hosts.front();
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("fieldsync"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);

    std::string san;
    for (const auto& h : o.hosts) {
        if (!san.empty()) san += ',';
        san += (is_ip(h) ? "IP:" : "DNS:") + h;
    }
    add_ext(cert.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert.get(), NID_key_usage,
            o.rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
    add_ext(cert.get(), NID_ext_key_usage, "serverAuth");
    add_ext(cert.get(), NID_subject_key_identifier, "hash");
    add_ext(cert.get(), NID_subject_alt_name, san);

    if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) fail("cannot sign the certificate");

    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (ec) throw std::runtime_error("cannot create " + o.out.string() + ": " + ec.message());
    const fs::path key_file = o.out / "key.pem";
    const fs::path cert_file = o.out / "cert.pem";
    if (!o.force) {
        for (const auto& f : {key_file, cert_file})
            if (fs::exists(f))
                throw std::runtime_error(f.string() + " exists (use --force to replace it)");
    }
    {
        auto f = create_file(key_file, 0600, o.force);
        if (PEM_write_PrivateKey(f.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
            fail("cannot write " + key_file.string());
    }
    {
        auto f = create_file(cert_file, 0644, o.force);
        if (PEM_write_X509(f.get(), cert.get()) != 1) fail("cannot write " + cert_file.string());
    }

    // The SDK's pin: SHA-256 over the DER SubjectPublicKeyInfo.
    unsigned char* der = nullptr;
    int der_len = i2d_PUBKEY(key.get(), &der);
    if (der_len <= 0) fail("cannot encode the public key");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_Digest(der, static_cast<std::size_t>(der_len), digest, &digest_len, EVP_sha256(), nullptr);
    OPENSSL_free(der);
    unsigned char fp[EVP_MAX_MD_SIZE];
    unsigned int fp_len = 0;
    X509_digest(cert.get(), EVP_sha256(), fp, &fp_len);
    std::string fingerprint;
    for (unsigned i = 0; i < fp_len; ++i) {
        char b[4];
        std::snprintf(b, sizeof b, i ? ":%02X" : "%02X", fp[i]);
        fingerprint += b;
    }

    std::printf("wrote %s (certificate) and %s (private key, mode 0600)\n", cert_file.c_str(),
                key_file.c_str());
    std::printf("  key:          %s\n", o.rsa ? "RSA 2048" : "EC P-256");
    std::printf("  names:        %s\n", san.c_str());
    std::printf("  valid:        %ld days\n", o.days);
    std::printf("  SHA-256:      %s\n", fingerprint.c_str());
    std::printf("  SDK pin:      sha256/%s\n",
                base64(digest, static_cast<int>(digest_len)).c_str());
    std::printf("start the server with:\n  fieldsync-server --tls-cert %s --tls-key %s ...\n",
                cert_file.c_str(), key_file.c_str());
    return EXIT_SUCCESS;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](const char* opt) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "fieldsync-mkcert: %s needs a value\n\n%s", opt, kUsage);
                std::exit(EXIT_FAILURE);
            }
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return EXIT_SUCCESS;
        } else if (a == "--out") {
            o.out = value("--out");
        } else if (a == "--host") {
            o.hosts.push_back(value("--host"));
        } else if (a == "--days") {
            std::string d = value("--days");
            char* end = nullptr;
            o.days = std::strtol(d.c_str(), &end, 10);
            if (d.empty() || *end != '\0' || o.days < 1 || o.days > 36500) {
                std::fprintf(stderr, "fieldsync-mkcert: --days must be 1..36500\n");
                return EXIT_FAILURE;
            }
        } else if (a == "--rsa") {
            o.rsa = true;
        } else if (a == "--force") {
            o.force = true;
        } else {
            std::fprintf(stderr, "fieldsync-mkcert: unknown argument \"%s\"\n\n%s", a.c_str(),
                         kUsage);
            return EXIT_FAILURE;
        }
    }
    if (o.out.empty()) {
        std::fprintf(stderr, "fieldsync-mkcert: --out DIR is required\n\n%s", kUsage);
        return EXIT_FAILURE;
    }
    if (o.hosts.empty()) o.hosts = {"127.0.0.1", "localhost"};
    for (const auto& h : o.hosts) {
        if (h.empty() || h.find_first_of(", \t") != std::string::npos) {
            std::fprintf(stderr, "fieldsync-mkcert: invalid --host \"%s\"\n", h.c_str());
            return EXIT_FAILURE;
        }
    }
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fieldsync-mkcert: %s\n", e.what());
        return EXIT_FAILURE;
    }
}
