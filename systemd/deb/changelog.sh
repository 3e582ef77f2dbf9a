#!/usr/bin/env bash
# Prints the package changelog (Debian format) for VERSION: systemd/deb/changelog, with a snapshot
# entry on top when VERSION is not its latest release (untagged builds: 0.1.0~git<commit>).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$1
latest=$(sed -n '1s/^pbxbridge (\([^)]*\)).*/\1/p' systemd/deb/changelog)
if [ "$version" != "$latest" ]; then
	when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	printf 'pbxbridge (%s) unstable; urgency=medium\n\n  * Snapshot build of commit %s (changes since %s: git log).\n\n -- pbxbridge maintainers <maintainers@pbxbridge.invalid>  %s\n\n' \
		"$version" "$commit" "$latest" "$(LC_ALL=C date -u -R -d "@$when")"
fi
cat systemd/deb/changelog
