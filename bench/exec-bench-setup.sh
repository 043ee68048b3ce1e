#!/bin/sh
# Installs Node 22 (the npm package node@22) and gitlab-ci-local 4.75 into
# ~/.cache/oar-bench/node22 (or $1), for exec-bench. Outside the repository.
set -eu
prefix=${1:-$HOME/.cache/oar-bench/node22}
mkdir -p "$prefix"
cd "$prefix"
[ -f package.json ] || echo '{}' > package.json
npm install --prefix . node@22 gitlab-ci-local@4.75
# npm 11 does not run install scripts unless approved; node@22's preinstall fetches the binary.
if npm install-scripts --help >/dev/null 2>&1; then
  npm install-scripts approve node --prefix . || true
fi
npm rebuild node --prefix .
PATH=$prefix/node_modules/.bin:$PATH
echo "node $(node --version), gitlab-ci-local $(gitlab-ci-local --version) in $prefix"
