// Package callmodel turns a stream of normalised PBX events (asterisk.Event, from AMI or ARI)
// into live events (an extension rings, answers, stops ringing, the call is transferred or hangs
// up) and finished call Records, one per external call (Asterisk Linkedid): the schema of
// docs/design.md §4.
//
// The package is pure: no goroutines, no I/O, no logging, no wall clock. Time comes from the
// events and from the caller (Flush). The same event stream always yields the same records. A
// Builder serves one PBX and one goroutine; see Builder, Output, Options.
//
// # Signals
//
// The model is built on channel, dial and bridge events — Newchannel, NewCallerid, Newexten,
// VarSet, DialBegin/DialEnd, BridgeEnter/BridgeLeave, Hangup — and on nothing else where it
// can help it:
//
//   - They exist, with the same meaning, in AMI (Asterisk 12 to 22) and in ARI (ChannelCreated,
//     Dial, ChannelEnteredBridge...), so one model serves both transports; CEL and Cdr have no
//     ARI counterpart.
//   - They arrive as things happen, which live events (incoming-call cards) need; a Cdr arrives
//     after the channel is gone, and CEL needs its own configuration (cel.conf) that many PBXs do
//     not have.
//   - They describe the topology directly: who was dialled (rang), who is bridged with whom
//     (talks), through which Local channel pairs. Cdr records are per channel pair and split or
//     merged differently across Asterisk versions and transfer types (the lab's attended
//     transfer yields 10 of them), so rebuilding a call from Cdrs is fragile.
//
// Cdr is used only as a fallback for the recording file name (RecordingFile) when the AMI user
// cannot see VarSet (no "dialplan" read class), with Options.FinishDelay giving it time to
// arrive. CEL, LocalBridge, LocalOptimization*, Queue*/Agent* and OriginateResponse events are
// not needed: queues are recognised from the Queue() application, Local pairs from channel
// names, optimisations from the bridge events they cause.
//
// # How a call is modelled
//
// Every channel belongs to a call. A new channel joins the call of its Linkedid; without one
// (ARI, Asterisk 11) it joins its Local partner's call or starts a new call, and calls are then
// merged the way Asterisk merges linkedids: the destination of a Dial joins the caller's call,
// and the channels of a basic bridge take the oldest call (bridge_channel_update_linkedids).
// The AMI Linkedid header, when it changes, merges calls the same way. So both transports give
// the same call ids, and a phone's own consultation call in an attended transfer, or the
// picking-up phone's call in a call pickup, becomes part of the call it joined.
//
// Channels are recognised lazily, by Options: extension devices, trunks, and plumbing (Local
// halves and anything unknown) that the model looks through. The party a call is about — the
// customer — is the incoming trunk channel (inbound), the dialled trunk channels (outbound) or
// the first extension channel (internal). After every topology change (bridge enter/leave,
// hangup, Local pairing, merge) the model walks from the customer through bridges and Local
// pairs, looking through plumbing, and collects the extensions it reaches: those are talking
// to the customer. A leg opens when an extension becomes reachable and closes when it stops
// being reachable; if the same extension becomes reachable again before anybody else does
// (hold, Local optimisation swapping a device into the bridge, a bridge move), the leg resumes.
// A different extension connecting after another's leg closed is a transfer: the kind comes from
// a BlindTransfer/AttendedTransfer event when there is one, otherwise (AMI Redirect, parking,
// anything else) it is recorded as a blind transfer at the time the previous leg ended.
//
// An extension "rang" when it was the destination of a Dial (ring group members, queue members,
// the agent of a click-to-call), whatever the outcome. A call is finished when all its channels
// have hung up.
//
// # Traps this handles (seen in real Asterisk 22 transcripts)
//
//   - LocalOptimizationEnd says "Success: No" even when the swap succeeded: ignored; the
//     BridgeEnter of the device and the Local pair's hangups tell what happened.
//   - An Originate's own DialBegin/DialEnd has no Channel (only DestChannel): a Dial without a
//     caller; its destination is the party being rung (the click-to-call agent).
//   - Channels start with CallerIDNum <unknown>; the number arrives in a later NewCallerid. The
//     customer's number is the channel's first non-empty caller ID; recognition by caller ID
//     waits for it.
//   - Queue member legs are two Local pairs (Local/101@from-queue, then the device): the walk
//     through plumbing finds the device behind them.
//   - Redirect (and parking) produce no transfer event: the transfer is inferred from the
//     customer being connected to another extension.
//   - An attended transfer is Local optimisation plus a BridgeMerge that moves only some
//     channels (the transferer stays behind): BridgeMerge itself is ignored and the
//     BridgeLeave/BridgeEnter events that follow it are used.
//   - A cancelled Dial may have no DialEnd: a dialled extension without one counts as not
//     answered.
//   - Events keep coming for a channel after its Hangup (NewCallerid, Cdr): a channel is never
//     re-created by them, and events about channels never seen created are ignored (no phantom
//     calls); only snapshots create channels after a reconnect.
//
// # Reconnects
//
// TypeDisconnected marks every open call "resynced". After TypeConnected{Resync: true}, each
// TypeSnapshot refreshes (or creates) a live channel and its bridge; at TypeSnapshotEnd every
// channel neither in the snapshot nor seen since the reconnect is hung up as of the disconnect
// time, which finishes the calls that ended during the outage (ended_at = disconnect time). A
// TypeSnapshotEnd with Vars["error"] (the PBX refused the channel list) finishes nothing.
//
// Live events about channels not known yet (created while the connection was down, or before
// the daemon started) are ignored even when they arrive between the login and the snapshot that
// lists those channels; they are not held back and re-applied. An extension channel a snapshot
// shows being dialled (AppDial) counts as rang, and if at TypeSnapshotEnd it is still ringing
// (alive, not answered, in no bridge, no DialEnd or ringing event since) it gets its ringing
// live event then, at the TypeSnapshotEnd time: a call found ringing after a (re)start shows a
// card like one seen from its start.
//
// # Calls the daemon did not see
//
// FromCDR builds the record of a call from its Call Detail Records (asterisk/cdr) after the
// fact, for calls that began and ended while the daemon or its connection was down. It
// recognises the rows' channels with the same Options and follows the same conventions, with
// what a CDR can tell (FromCDR lists it; TestFromCDRMatchesLive compares it with the live
// records of the with-cdr recordings). Builder.Knows and ChannelNames tell the recovery which
// calls of the CDR the model is still following.
//
// # Live events
//
// Live events (call.Live) drive the cards a CRM shows while a call is in progress; each names
// the extension it is about (Ext):
//
//   - LiveRinging: an extension started ringing for the call (it was dialled). For an outbound
//     call, the extension that placed it gets LiveRinging with the dialled number as Customer
//     when the external (trunk) leg is dialled — once per call, whatever further trunks a
//     failover dials — so the employee sees the customer's card while it rings.
//   - LiveAnswered: an extension talks to the customer (for an outbound call: the calling
//     extension, when the customer answers).
//   - LiveStopRinging: an extension stopped ringing without answering (another answered, the
//     caller gave up, ring timeout). The trunk leg of an outbound call never gets one: the
//     caller keeps the call until LiveHangup.
//   - LiveTransferred: the customer moved from one extension (From) to another (Ext).
//   - LiveHangup: the call ended (or was merged into an older call: the older call's id
//     continues); its Record follows.
//
// A click-to-call (or callback) first rings the agent's own phone: that ring has no customer
// yet and emits nothing. The agent gets the call's one card when the customer's leg starts
// ringing (LiveRinging, Ext = the agent), then LiveAnswered when the customer answers.
// connector/callmodel/outbound_live_test.go checks this on every transcript.
//
// # Record conventions
//
// started_at is the creation of the call's first channel; ended_at the last hangup of its
// channels (Flush: see Builder.Flush). answered_at is when the first extension was connected to
// the customer (for an outbound call, when the called party answered), ring_seconds the seconds
// from started_at to answered_at (to ended_at when unanswered: the customer's whole wait,
// including IVR and queue), talk_seconds from answered_at to ended_at; both and each leg's
// talk_seconds are rounded to the nearest second, halves up. Disposition: answered when an
// extension talked to the customer (outbound: the trunk answered); otherwise from the dials —
// any dial that rang out or was cancelled makes it no_answer, else busy, else failed
// (congestion, unavailable, invalid number, no outbound route). hangup_cause is the customer
// channel's Q.850 cause, or the first non-zero cause of the call's channels when that is 0.
// recording is the first MIXMONITOR_FILENAME of the call (or a Cdr RecordingFile), reported only
// for answered calls unless Options.UnansweredRecordings (a missed call's MixMonitor file, with
// option b, is a 44-byte header with no audio). customer and line are normalised with
// Options.Normalize; extensions never are. connector/callmodel/testdata/README.md has the full
// list with examples.
package callmodel
