//go:build devkeys

package keyring

// DevBuild reports whether this binary was built with the `devkeys` tag. In this build the keys in
// $PBXBRIDGE_DEV_KEYRING are trusted in addition to the release keyring. Never ship such a build.
const DevBuild = true
