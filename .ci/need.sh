#!/usr/bin/env bash
# .ci/need.sh COMMAND PACKAGE...: exit 0 when COMMAND is on PATH, installing the Debian PACKAGEs
# first on CI (CI=true, as root, with apt-get); otherwise print why the caller is skipped and exit 3.
cmd=$1; shift
command -v "$cmd" >/dev/null 2>&1 && exit 0
if [[ ${CI:-} == true && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $* for $cmd (CI)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1
  command -v "$cmd" >/dev/null 2>&1 && exit 0
  echo "FAILED: apt-get install $* did not provide $cmd" >&2
  exit 1
fi
echo "SKIPPED: $cmd not found (Debian: apt-get install $*)"
exit 3
