// Package e2e holds end-to-end tests that cross package boundaries: the simulated PBX
// (asterisk/fakepbx) feeding a PBX source (asterisk/ami, asterisk/ari) into the call model
// (connector/callmodel), wired as the daemon wires them. It has no non-test code.
//
// The AMI tests are in package e2e; the ARI tests (ari_*_test.go) are in package e2e_test and
// share its TestMain (goroutine leak check). asterisk/ari's own tests check what the ARI source
// delivers as events; the tests here check the call records made from them.
package e2e
