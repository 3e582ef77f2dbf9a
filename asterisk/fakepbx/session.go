package fakepbx

import (
	"bufio"
	"crypto/md5" //nolint:gosec // AMI's challenge login is defined with MD5
	"encoding/hex"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
)

// session is one client connection.
type session struct {
	srv     *Server
	nc      net.Conn
	out     chan []byte // frames to write; nil = flush and close
	closed  chan struct{}
	once    sync.Once
	stalled atomic.Bool

	// set by the reader goroutine; mask also read by broadcasters
	authed    atomic.Bool
	mask      atomic.Uint32
	challenge string
}

func newSession(s *Server, nc net.Conn) *session {
	return &session{srv: s, nc: nc, out: make(chan []byte, 4096), closed: make(chan struct{})}
}

func (ss *session) start() {
	ss.enqueue([]byte(ss.srv.cfg.Banner + "\r\n"))
	ss.srv.wg.Add(2)
	go ss.writeLoop()
	go ss.readLoop()
}

// close closes the connection at once (idempotent).
func (ss *session) close() {
	ss.once.Do(func() {
		close(ss.closed)
		_ = ss.nc.Close()
	})
}

func (ss *session) wantsEvents(classes uint32) bool {
	return ss.authed.Load() && !ss.stalled.Load() && ss.mask.Load()&classes != 0
}

// enqueue queues a frame for writing; a client that does not drain its queue within the write
// timeout is disconnected.
func (ss *session) enqueue(b []byte) bool {
	return enqueue(ss.out, ss.closed, ss.srv.cfg.WriteTimeout, b, func() {
		ss.srv.log.Warn("fakepbx: client too slow, disconnecting", "remote", ss.nc.RemoteAddr().String())
		ss.close()
	})
}

// closeAfterWrite queues the end of the session after what is already queued.
func (ss *session) closeAfterWrite() { ss.enqueue(nil) }

func (ss *session) writeLoop() {
	defer ss.srv.wg.Done()
	defer ss.srv.removeSession(ss)
	defer ss.close()
	bw := bufio.NewWriterSize(ss.nc, 64<<10)
	for {
		var b []byte
		select {
		case b = <-ss.out:
		case <-ss.closed:
			return
		}
		end := b == nil
		if !end && !ss.stalled.Load() {
			_, _ = bw.Write(b)
		}
		for more := !end; more; {
			select {
			case b = <-ss.out:
				if b == nil {
					end, more = true, false
				} else if !ss.stalled.Load() {
					_, _ = bw.Write(b)
				}
			default:
				more = false
			}
		}
		_ = ss.nc.SetWriteDeadline(time.Now().Add(ss.srv.cfg.WriteTimeout))
		if err := bw.Flush(); err != nil || end {
			return
		}
	}
}

func (ss *session) readLoop() {
	defer ss.srv.wg.Done()
	rd := ami.NewReader(ss.nc)
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			if errors.Is(err, ami.ErrFrameTooLarge) {
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				ss.srv.log.Debug("fakepbx: reading action", "err", err)
			}
			ss.close()
			return
		}
		if ss.stalled.Load() {
			continue // half-open: the actions go nowhere
		}
		ss.handle(f)
	}
}

// handle answers one action.
func (ss *session) handle(f *ami.Frame) {
	id := f.Get("ActionID")
	action := strings.ToLower(f.Get("Action"))
	switch action {
	case "login":
		ss.login(f, id)
		return
	case "challenge":
		if !strings.EqualFold(f.Get("AuthType"), "md5") {
			ss.reply(id, "Error", "Message", "Must specify AuthType")
			return
		}
		ss.challenge = strconv.FormatUint(uint64(ss.srv.rngUint32()), 10)
		ss.reply(id, "Success", "Challenge", ss.challenge)
		return
	case "ping":
		ss.reply(id, "Success", "Ping", "Pong", "Timestamp", string(appendTimestamp(nil, time.Now())))
		return
	case "logoff":
		ss.reply(id, "Goodbye", "Message", "Thanks for all the fish.")
		ss.closeAfterWrite()
		return
	case "":
		ss.reply(id, "Error", "Message", "Missing action in request")
		return
	}
	if !ss.authed.Load() {
		ss.reply(id, "Error", "Message", "Authentication Required")
		return
	}
	switch action {
	case "events":
		m := eventMask(f.Get("EventMask"))
		ss.mask.Store(m)
		state := "On"
		if m == 0 {
			state = "Off"
		}
		ss.reply(id, "Success", "Events", state)
	case "coresettings":
		ss.reply(id, "Success", "AMIversion", strings.TrimPrefix(ss.srv.cfg.Banner, "Asterisk Call Manager/"),
			"AsteriskVersion", ss.srv.cfg.Version, "SystemName", "fakepbx", "CoreMaxCalls", "0",
			"CoreMaxLoadAvg", "0.000000", "CoreRunUser", "asterisk", "CoreRunGroup", "asterisk",
			"CoreMaxFilehandles", "0", "CoreRealTimeEnabled", "No", "CoreCDRenabled", "Yes",
			"CoreHTTPenabled", "No")
	case "coreshowchannels":
		ss.srv.coreShowChannels(ss, id)
	case "extensionstate":
		ss.extensionState(f, id)
	case "originate":
		ss.srv.originate(ss, f, id)
	case "listcommands":
		// As Asterisk answers it for a user with write = originate,call,reporting.
		ss.reply(id, "Success",
			"Ping", "Keepalive command.  (Priv: <none>)",
			"CoreSettings", "Show PBX core settings (version etc).  (Priv: system,reporting,all)",
			"CoreShowChannels", "List currently active channels.  (Priv: system,reporting,all)",
			"ExtensionState", "Check Extension Status.  (Priv: call,reporting,all)",
			"Originate", "Originate a call.  (Priv: originate,all)",
			"Logoff", "Logoff Manager.  (Priv: <none>)")
	default:
		ss.reply(id, "Error", "Message", "Invalid/unknown command")
	}
}

func (ss *session) login(f *ami.Frame, id string) {
	cfg := &ss.srv.cfg
	ok := f.Get("Username") == cfg.Username
	if strings.EqualFold(f.Get("AuthType"), "md5") {
		sum := md5.Sum([]byte(ss.challenge + cfg.Secret)) //nolint:gosec // protocol-defined
		ok = ok && ss.challenge != "" && strings.EqualFold(f.Get("Key"), hex.EncodeToString(sum[:]))
	} else {
		ok = ok && f.Get("Secret") == cfg.Secret
	}
	if !ok {
		// Asterisk answers and then closes the session.
		ss.reply(id, "Error", "Message", "Authentication failed")
		ss.closeAfterWrite()
		return
	}
	// Under emitMu, so that no event is broadcast between the answer and the moment the session
	// receives events: the client sees every event emitted after its login response.
	ss.srv.emitMu.Lock()
	defer ss.srv.emitMu.Unlock()
	ss.mask.Store(eventMask(f.Get("Events")))
	ss.reply(id, "Success", "Message", "Authentication accepted")
	up := strconv.Itoa(int(time.Since(ss.srv.booted).Seconds()))
	ss.enqueue([]byte("Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: " + up +
		"\r\nLastReload: " + up + "\r\nStatus: Fully Booted\r\n\r\n"))
	ss.srv.logins.Add(1)
	ss.authed.Store(true)
}

// Asterisk's texts for extension states.
var stateTexts = map[int]string{
	-2: "Removed", -1: "Unknown", 0: "Idle", 1: "InUse", 2: "Busy", 4: "Unavailable", 8: "Ringing",
	9: "InUse&Ringing", 16: "Hold", 17: "InUse&Hold",
}

func (ss *session) extensionState(f *ami.Frame, id string) {
	exten, dialContext := f.Get("Exten"), f.Get("Context")
	e, ok := ss.srv.extension(exten)
	status, hint := ami.ExtNoHint, ""
	if ok {
		status, hint = e.State, "PJSIP/"+exten
	}
	text, known := stateTexts[status]
	if !known {
		text = "Unknown"
	}
	ss.reply(id, "Success", "Message", "Extension Status", "Exten", exten, "Context", dialContext,
		"Hint", hint, "Status", strconv.Itoa(status), "StatusText", text)
}

// reply queues a response frame: Response, ActionID (when the action had one), then key/value
// pairs.
func (ss *session) reply(id, response string, kv ...string) {
	b := responseHead(nil, response, id)
	for i := 0; i+1 < len(kv); i += 2 {
		b = appendHeader(b, kv[i], kv[i+1])
	}
	ss.enqueue(append(b, "\r\n"...))
}

func responseHead(dst []byte, response, id string) []byte {
	dst = appendHeader(dst, "Response", response)
	if id != "" {
		dst = appendHeader(dst, "ActionID", id)
	}
	return dst
}

// channelExt extracts the extension from an Originate channel such as PJSIP/101,
// Local/101@from-internal, Local/101@internal/n or SIP/101.
var channelExt = regexp.MustCompile(`^[A-Za-z0-9]+/([^@/;&-]+)`)

// originate answers an Originate: queued at once (Async) and, later, an OriginateResponse
// broadcast like Asterisk does. An answering extension plays the click_to_call transcript with
// the requested extension, number and variables.
func (s *Server) originate(ss *session, f *ami.Frame, id string) {
	s.origs.Add(1)
	channel, exten := f.Get("Channel"), f.Get("Exten")
	m := channelExt.FindStringSubmatch(channel)
	if m == nil || exten == "" {
		ss.reply(id, "Error", "Message", "Invalid channel or missing Exten")
		return
	}
	ext := m[1]
	var vars []ami.Field
	for _, fl := range f.Fields {
		if !strings.EqualFold(fl.Key, "Variable") {
			continue
		}
		for _, kv := range strings.Split(fl.Value, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if k != "" {
				vars = append(vars, ami.Field{Key: k, Value: v})
			}
		}
	}
	async := isTrue(f.Get("Async"))
	if async {
		ss.reply(id, "Success", "Message", "Originate successfully queued")
	}
	e, known := s.extension(ext)
	outcome := e.Outcome
	if !known {
		outcome = Fail
	}
	if outcome == Answer {
		in := s.newInstance(s.orig, time.Now())
		in.ext, in.num, in.actionID, in.vars = ext, exten, id, vars
		if !async {
			// Answer once the OriginateResponse would have been sent.
			s.after(in.scale(s.orig.frames[s.orig.origIdx].at), func() {
				ss.reply(id, "Success", "Message", "Originate successfully queued")
			})
		}
		s.startInstance(s.ctx, in)
		return
	}
	reason, delay := "0", 50*time.Millisecond
	switch outcome {
	case Busy:
		reason, delay = "5", 300*time.Millisecond
	case Congestion:
		reason, delay = "8", 300*time.Millisecond
	case Reject:
		reason, delay = "1", time.Second
	case NoAnswer:
		reason, delay = "3", 30*time.Second
		if ms, err := strconv.Atoi(f.Get("Timeout")); err == nil && ms > 0 {
			delay = time.Duration(ms) * time.Millisecond
		}
	}
	dialContext := f.Get("Context")
	if s.speed > 1 {
		delay = time.Duration(float64(delay) / s.speed)
	}
	s.after(delay, func() {
		var b []byte
		b = appendHeader(b, "Event", "OriginateResponse")
		b = appendHeader(b, "Privilege", "call,all")
		if !s.cfg.NoTimestamps {
			b = appendHeader(b, "Timestamp", string(appendTimestamp(nil, time.Now())))
		}
		if id != "" {
			b = appendHeader(b, "ActionID", id)
		}
		b = appendHeader(b, "Response", "Failure")
		b = appendHeader(b, "Channel", channel)
		b = appendHeader(b, "Context", dialContext)
		b = appendHeader(b, "Exten", exten)
		b = appendHeader(b, "Reason", reason)
		b = appendHeader(b, "Uniqueid", "<unknown>")
		b = appendHeader(b, "CallerIDNum", "<unknown>")
		b = appendHeader(b, "CallerIDName", "<unknown>")
		b = append(b, "\r\n"...)
		s.emit(b, classBits["call"])
		if !async {
			ss.reply(id, "Error", "Message", "Originate failed")
		}
	})
}

func isTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "yes", "true", "on", "y", "t":
		return true
	}
	return false
}
