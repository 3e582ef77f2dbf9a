module github.com/pbxbridge/pbxbridge

go 1.26
