//go:build !devkeys

package keyring

// DevBuild reports whether this binary was built with the `devkeys` tag. In this build it is
// false, so PBXBRIDGE_DEV_KEYRING is ignored.
const DevBuild = false
