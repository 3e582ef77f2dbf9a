// Package config loads pbxbridge's YAML configuration: defaults, then the file (strictly decoded:
// an unknown key is an error naming its path and line), then PBXBRIDGE_… environment variables
// for secrets; then validation. Every problem is reported at once, each naming the field path and,
// when it comes from the file, the line. `pbxbridge config check` and the daemon use the same Load.
package config
