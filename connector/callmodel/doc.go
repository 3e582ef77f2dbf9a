// Package callmodel turns a stream of normalised PBX events (asterisk.Event) into live events
// (an extension rings, answers, stops ringing, the call is transferred or hangs up) and finished
// call Records, one per external call (Asterisk Linkedid).
//
// The package is pure: no goroutines, no I/O, no logging, no wall clock. Time comes from the
// events and from the caller (Flush). The same event stream always yields the same records.
package callmodel
