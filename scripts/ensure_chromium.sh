#!/usr/bin/env bash
# The report test drives a real headless browser. Install Debian's chromium when it is missing.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the report test (apt-get) ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will fail in CI" >&2
else
  echo "warning: chromium is not installed and cannot be installed here (need root + apt-get)" >&2
fi
exit 0
