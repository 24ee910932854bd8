#!/usr/bin/env bash
# End-to-end test of the admin command line (tools/admin, `fieldsync`) against a real
# fieldsync-server started with --demo on a free port and a temporary data folder.
#
#   tests/admin/admin_cli_test.sh <fieldsync> <fieldsync-server> [<fieldsync-mkcert>]
#
# Checks login (right and wrong password), users add/list/disable/enable/assign/reset-password,
# areas import (good and bad CSV) and list, schema validate (good and bad file), conflicts
# list/show, export (csv to a file, jsonl to stdout), logout, and the exit statuses:
# 0 ok, 1 usage, 2 server refused (with the server's message), 3 network failure. With
# fieldsync-mkcert, also https: an untrusted certificate fails (3), --cacert makes it work.
# Ends with "N passed, N failed"; exit status 1 when anything failed.
set -uo pipefail

CLI=${1:?usage: admin_cli_test.sh <fieldsync> <fieldsync-server>}
SERVER=${2:?usage: admin_cli_test.sh <fieldsync> <fieldsync-server>}
MKCERT=${3:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fieldsync-admin-test.XXXXXX")
export XDG_CONFIG_HOME="$WORK/config"
unset FIELDSYNC_SERVER FIELDSYNC_TOKEN FIELDSYNC_CACERT
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
not_ok() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    [[ -f "$WORK/out" ]] && sed 's/^/       stdout: /' "$WORK/out" | head -20
    [[ -f "$WORK/err" ]] && sed 's/^/       stderr: /' "$WORK/err" | head -20
}

# run NAME EXPECTED_STATUS [PATTERN_IN_OUTPUT] -- command...: runs the CLI, checks its exit
# status and (when given) that stdout+stderr match an extended regular expression.
run() {
    local name=$1 want=$2 pattern=$3
    shift 4
    timeout 60 "$CLI" "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
    local got=$?
    if [[ $got -ne $want ]]; then
        not_ok "$name (exit status $got, expected $want)"
        return 1
    fi
    if [[ -n "$pattern" ]] && ! cat "$WORK/out" "$WORK/err" | grep -Eq -- "$pattern"; then
        not_ok "$name (output does not match /$pattern/)"
        return 1
    fi
    ok "$name"
}

# --- Start the server ------------------------------------------------------------------------
"$SERVER" --demo --no-demo-records --plain --port 0 --port-file "$WORK/port" --data-dir "$WORK/data" \
    --log-level warn >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do
    [[ -s "$WORK/port" && -s "$WORK/data/demo-credentials.txt" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ ! -s "$WORK/port" ]]; then
    echo "fieldsync-server did not start:"; cat "$WORK/server.log"
    echo "0 passed, 1 failed"
    exit 1
fi
URL="http://127.0.0.1:$(cat "$WORK/port")"
password_of() { awk -v u="$1" '$1 == u { print $3 }' "$WORK/data/demo-credentials.txt"; }
password_of admin >"$WORK/admin.pw"
password_of supervisor-ejin-horo >"$WORK/supervisor.pw"
echo "not-the-password" >"$WORK/wrong.pw"
echo "a-long-enough-password-07" >"$WORK/new.pw"
echo "short" >"$WORK/short.pw"
echo "server at $URL"

# --- Usage errors: exit 1 ----------------------------------------------------------------------
run "--help prints Usage: and Example: lines" 0 "Usage: fieldsync" -- --help
run "users add --help has an example" 0 "Example:" -- users add --help
run "an unknown subcommand is a usage error" 1 "" -- frobnicate
run "users add without --role is a usage error" 1 "role" -- users add someone
run "a bad --role value is a usage error" 1 "" -- users add someone --role chief
run "conflicts resolve needs --value or --choice" 1 "exactly one of --value" -- --server "$URL" --token x conflicts resolve 1 --note n
run "a command before login says how to log in" 1 "fieldsync login --server" -- users list
run "a server URL without a scheme is a usage error" 1 "scheme" -- login --server 127.0.0.1:1 --user admin --password-file "$WORK/admin.pw"

# --- Login -----------------------------------------------------------------------------------
run "login with a wrong password: exit 2 with the server's message" 2 "wrong user name or password" -- \
    login --server "$URL" --user admin --password-file "$WORK/wrong.pw"
grep -q "what to do: check the user name and password" "$WORK/err" && ok "the refusal says what to do" || not_ok "the refusal says what to do"
run "login as admin" 0 "Logged in to .* as admin \(admin\)" -- login --server "$URL" --user admin --password-file "$WORK/admin.pw"
mode=$(stat -c %a "$XDG_CONFIG_HOME/fieldsync/token" 2>/dev/null)
[[ "$mode" == "600" ]] && ok "the token file has mode 0600" || not_ok "the token file has mode 0600 (got '$mode')"
# The password is also read from standard input.
if timeout 30 "$CLI" login --server "$URL" --user admin <"$WORK/admin.pw" >"$WORK/out" 2>"$WORK/err"; then
    ok "login reads the password from standard input"
else
    not_ok "login reads the password from standard input"
fi

# --- Users -----------------------------------------------------------------------------------
run "users add" 0 "Added enumerator enumerator-07" -- users add enumerator-07 --role enumerator \
    --areas ordos/ejin-horo/altan-xire/longhuqu --display-name "Longhuqu enumerator 07" --password-file "$WORK/new.pw"
run "users add of an existing name is refused (exit 2)" 2 "already exists" -- users add enumerator-07 --role enumerator \
    --password-file "$WORK/new.pw"
run "users add with a short password is refused with the server's reason" 2 "at least 10 characters" -- \
    users add enumerator-08 --role enumerator --password-file "$WORK/short.pw"
run "users add for an unknown area is refused" 2 "no area ordos/nowhere" -- users add enumerator-09 --role enumerator \
    --areas ordos/nowhere --password-file "$WORK/new.pw"
run "users list shows the new account" 0 "enumerator-07 +enumerator +ordos/ejin-horo/altan-xire/longhuqu +active" -- users list
run "users disable" 0 "Disabled enumerator-07" -- users disable enumerator-07
run "users list shows it disabled" 0 "enumerator-07 .*disabled" -- users list
run "users enable" 0 "Enabled enumerator-07" -- users enable enumerator-07
run "users assign" 0 "Updated enumerator-07" -- users assign enumerator-07 --areas ordos/ejin-horo/altan-xire/hashatu
run "users list --json shows the new areas" 0 '"ordos/ejin-horo/altan-xire/hashatu"' -- users list --json
run "users reset-password" 0 "Password of enumerator-07 changed" -- users reset-password enumerator-07 --password-file "$WORK/new.pw"
run "users disable of an unknown user: exit 2" 2 "no user named nobody" -- users disable nobody

# --- Areas -----------------------------------------------------------------------------------
cat >"$WORK/areas.csv" <<'CSV'
code,parent,level,name_en,name_zh
ordos/dalad/shulinzhao/xinmin,ordos/dalad/shulinzhao,village,Xinmin Village,新民村
ordos/dalad/shulinzhao/wuxing,ordos/dalad/shulinzhao,village,Wuxing Village,五星村
CSV
cat >"$WORK/bad-areas.csv" <<'CSV'
code,parent,level,name_en,name_zh
ordos/dalad/shulinzhao/dongfeng,ordos/dalad/shulinzhao,village,Dongfeng Village,东风村
ordos/nowhere/x,ordos/nowhere,village,X,
CSV
run "areas import of a good CSV" 0 "Imported 2 areas .*2 new" -- areas import "$WORK/areas.csv"
run "areas list shows the imported villages" 0 "ordos/dalad/shulinzhao/xinmin +village +Xinmin Village +新民村" -- areas list
run "areas import of a bad CSV: exit 2, the line and reason" 2 "line 3: parent ordos/nowhere does not exist" -- areas import "$WORK/bad-areas.csv"
run "a bad CSV imports nothing" 0 "" -- areas list
grep -q dongfeng "$WORK/out" && not_ok "a bad CSV imports nothing (dongfeng was imported)" || ok "no area of the bad CSV was imported"
run "areas import of a missing file is a usage error" 1 "cannot read" -- areas import "$WORK/missing.csv"

# --- Schema ----------------------------------------------------------------------------------
run "schema validate of the demo survey" 0 "valid .* version 1, 3 collections" -- schema validate "$REPO/protocol/schemas/household-survey.json"
cat >"$WORK/bad-schema.json" <<'JSON'
{"name": "bad", "version": 1, "title": {"en": "Bad"},
 "collections": [{"name": "households", "area_field": "village", "title": {"en": "H"},
   "fields": [{"name": "village", "type": "area", "merge": "lww", "required": true, "label": {"en": "V"}},
              {"name": "status", "type": "enum", "merge": "sets", "label": {"en": "S"}, "values": []},
              {"name": "status", "type": "integer", "merge": "lww", "label": {"en": "S2"}}]}]}
JSON
run "schema validate of a bad file: exit 1 and every problem" 1 "problems" -- schema validate "$WORK/bad-schema.json"
n=$(grep -c "bad-schema.json: collections" "$WORK/err")
[[ "$n" -ge 2 ]] && ok "schema validate prints each problem on its own line ($n)" || not_ok "schema validate prints each problem ($n lines)"
run "schema validate works offline (no server, no login needed)" 0 "valid" -- --server http://127.0.0.1:1 schema validate "$REPO/protocol/schemas/household-survey.json"
run "schema publish of the same schema changes nothing" 0 "already has this schema" -- schema publish "$REPO/protocol/schemas/household-survey.json"

# --- Conflicts and export --------------------------------------------------------------------
run "conflicts list (none yet)" 0 "No open conflicts" -- conflicts list
run "conflicts list --json" 0 '"conflicts":\[\]' -- conflicts list --status all --json
run "conflicts show of an unknown conflict: exit 2" 2 "no conflict 999" -- conflicts show 999
run "export csv to a file" 0 "Exported households" -- export --collection households --format csv -o "$WORK/households.csv"
head -1 "$WORK/households.csv" | grep -q "^id,area,deleted,village,head_name" && ok "the CSV has the header row" || not_ok "the CSV has the header row"
[[ ! -e "$WORK/households.csv.part" ]] && ok "no .part file is left behind" || not_ok "no .part file is left behind"
run "export jsonl to stdout" 0 "" -- export --collection visits --format jsonl --area ordos/hanggin
run "export of an unknown collection: exit 2" 2 "no collection named" -- export --collection cattle

# --- Roles and tokens ------------------------------------------------------------------------
SUP_TOKEN_DIR="$WORK/sup"
mkdir -p "$SUP_TOKEN_DIR"
if XDG_CONFIG_HOME="$SUP_TOKEN_DIR" timeout 30 "$CLI" login --server "$URL" --user supervisor-ejin-horo \
    --password-file "$WORK/supervisor.pw" >"$WORK/out" 2>"$WORK/err"; then ok "login as a supervisor"; else not_ok "login as a supervisor"; fi
XDG_CONFIG_HOME="$SUP_TOKEN_DIR" timeout 30 "$CLI" users list >"$WORK/out" 2>"$WORK/err"
rc=$?
if [[ $rc -eq 2 ]] && grep -q "needs the admin role" "$WORK/err" && grep -q "what to do: your account's role" "$WORK/err"; then
    ok "a supervisor cannot list users (exit 2, the server's reason)"
else
    not_ok "a supervisor cannot list users (exit $rc)"
fi
TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' "$XDG_CONFIG_HOME/fieldsync/token")
run "--token works without the saved login" 0 "admin" -- --server "$URL" --token "$TOKEN" users list

# --- Logout ----------------------------------------------------------------------------------
run "logout" 0 "Logged out" -- logout
[[ ! -e "$XDG_CONFIG_HOME/fieldsync/token" ]] && ok "logout removes the token file" || not_ok "logout removes the token file"
run "the revoked token is refused: exit 2, log in again" 2 "revoked.*|log in again" -- --server "$URL" --token "$TOKEN" users list
run "after logout, commands say to log in" 1 "not logged in|log in first" -- users list

# --- Network failures: exit 3 ----------------------------------------------------------------
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
run "server down: exit 3 and what to check" 3 "is fieldsync-server running" -- login --server "$URL" --user admin --password-file "$WORK/admin.pw"
run "a closed port: exit 3" 3 "connection refused|refused" -- --timeout 5 --server "https://127.0.0.1:1" --token x users list

# --- TLS: certificate verification ------------------------------------------------------------
if [[ -n "$MKCERT" && -x "$MKCERT" ]]; then
    "$MKCERT" --out "$WORK/tls" --host 127.0.0.1 >/dev/null 2>&1
    rm -f "$WORK/port"
    "$SERVER" --port 0 --port-file "$WORK/port" --data-dir "$WORK/data" --log-level warn \
        --tls-cert "$WORK/tls/cert.pem" --tls-key "$WORK/tls/key.pem" >"$WORK/server-tls.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do [[ -s "$WORK/port" ]] && break; sleep 0.1; done
    TLS_URL="https://127.0.0.1:$(cat "$WORK/port")"
    run "https with an untrusted certificate: exit 3, and it says to pass --cacert" 3 "certificate.*--cacert" -- \
        login --server "$TLS_URL" --user admin --password-file "$WORK/admin.pw"
    run "https with --cacert: the certificate is verified and login works" 0 "Logged in to https://" -- \
        login --server "$TLS_URL" --user admin --password-file "$WORK/admin.pw" --cacert "$WORK/tls/cert.pem"
    run "the saved login keeps the CA file for the next commands" 0 "supervisor-ejin-horo" -- users list
    run "https to a name the certificate does not cover fails: exit 3" 3 "certificate|not valid for" -- \
        login --server "https://localhost:$(cat "$WORK/port")" --user admin --password-file "$WORK/admin.pw" --cacert "$WORK/tls/cert.pem"
else
    echo "skip - TLS checks (no fieldsync-mkcert given)"
fi

echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
