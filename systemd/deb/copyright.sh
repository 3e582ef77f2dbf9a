#!/usr/bin/env bash
# Writes the package's machine-readable copyright file (DEP-5) to stdout: pbxbridge itself, then
# every Go module compiled into /usr/bin/pbxbridge (go list -deps of ./cmd/pbxbridge) and the Go
# standard library, each with the licence found in its module directory. A module whose licence
# is not recognised fails the build: look at it and extend classify().
set -euo pipefail
cd "$(dirname "$0")/../.."

# classify FILE prints the DEP-5 short name of a licence text.
classify() {
	local f=$1
	if grep -q 'Apache License' "$f" && grep -q 'Version 2.0' "$f"; then echo Apache-2.0
	elif grep -q 'Mozilla Public License' "$f" && grep -q '2\.0' "$f"; then echo MPL-2.0
	elif grep -q 'Permission is hereby granted, free of charge' "$f"; then echo Expat
	elif grep -qE 'Permission to use, copy, modify, and(/or)? distribute' "$f"; then echo ISC
	elif grep -q 'Redistribution and use in source and binary forms' "$f"; then
		if grep -qi 'neither the name' "$f" || grep -qi 'names of its contributors' "$f"; then echo BSD-3-clause; else echo BSD-2-clause; fi
	else echo unknown
	fi
}

# body FILE prints a licence text as a DEP-5 continuation (one space, "." for blank lines).
body() { sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$1"; }

# holders FILE prints the copyright lines of a licence file, or a fallback.
holders() {
	local lines
	lines=$(grep -iE '^[[:space:]]*copyright[[:space:]]+(\(c\)|©|[0-9])' "$1" | sed -e 's/^[[:space:]]*//' -e 's/^[Cc]opyright[[:space:]]*//' | sort -u || true)
	if [ -z "$lines" ]; then lines="the authors of $2"; fi
	printf '%s\n' "$lines" | sed '2,$s/^/ /'
}

cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pbxbridge
Upstream-Contact: pbxbridge maintainers <maintainers@pbxbridge.invalid>
Source: https://github.com/pbxbridge/pbxbridge
Comment: /usr/bin/pbxbridge is a static Go program: the Files paragraphs below "go/" name the Go
 modules compiled into it (go list -deps ./cmd/pbxbridge) and the Go standard library.

Files: *
Copyright: pbxbridge maintainers
License: proprietary
 pbxbridge is proprietary software, licensed per connector by signed licence files
 (pbxbridge license --help). All rights reserved.
HEAD

emit() { # emit FILES-PATH NAME LICENCE-FILE
	local lic
	lic=$(classify "$3")
	if [ "$lic" = unknown ]; then
		echo "copyright.sh: cannot tell the licence of $2 ($3)" >&2
		exit 1
	fi
	printf '\nFiles: %s\nCopyright: %s\nLicense: %s\n' "$1" "$(holders "$3" "$2")" "$lic"
	case $lic in
	Apache-2.0 | MPL-2.0)
		printf ' On Debian systems the full text is in /usr/share/common-licenses/%s.\n' "$lic"
		if [ -f "$(dirname "$3")/NOTICE" ]; then
			printf ' .\n Its NOTICE file:\n .\n'
			body "$(dirname "$3")/NOTICE"
		fi
		;;
	*) body "$3" ;;
	esac
}

emit "go/std/*" "the Go standard library ($(go env GOVERSION))" "$(go env GOROOT)/LICENSE"
go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/pbxbridge | sort -u |
	while read -r path version dir; do
		lic=$(find "$dir" -maxdepth 1 -type f \( -iname 'LICENSE*' -o -iname 'COPYING*' -o -iname 'LICENCE*' \) | sort | head -1)
		if [ -z "$lic" ]; then
			echo "copyright.sh: no licence file in $path $version ($dir)" >&2
			exit 1
		fi
		emit "go/$path/*" "$path $version" "$lic"
	done
