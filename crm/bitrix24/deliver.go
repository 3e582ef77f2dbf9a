package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Deliver logs a finished call: register (unless Live or Bitrix24 did), finish, attach the
// recording, then the missed-call lead and follow-up. Each step is recorded in the CallStore, so
// a repeated delivery does only what is left.
func (a *Adapter) Deliver(ctx context.Context, rec *call.Record) error {
	if err := ctx.Err(); err != nil {
		return crm.Transient(fmt.Errorf("bitrix24: delivering call %s: %w", rec.Key(), err))
	}
	if rec.Direction != call.Inbound && rec.Direction != call.Outbound {
		crm.Trace(ctx, "decision", "bitrix24: "+string(rec.Direction)+" call, not sent", "")
		return nil
	}
	key := rec.Key()
	if digits(rec.Customer) == "" {
		return crm.Permanent(fmt.Errorf("bitrix24: delivering call %s: the caller's number is unknown (%q): Bitrix24 cannot log a call without one", key, rec.Customer))
	}
	ctx, n := withCounter(ctx)
	ctx = a.withHookCall(ctx, rec, false)
	unlock, err := a.callLocks.lock(ctx, key)
	if err != nil {
		return a.classify("delivering call "+key, err)
	}
	defer unlock()
	if err := a.deliver(ctx, rec); err != nil {
		a.addRequests(key, n.Load())
		return a.classify("delivering call "+key, err)
	}
	a.m.requestsPerCall.Observe(float64(n.Load()+a.takeLive(key)) / milli)
	return nil
}

func (a *Adapter) deliver(ctx context.Context, rec *call.Record) error {
	key := rec.Key()
	st, err := a.deliverState(ctx, key)
	if err != nil {
		return err
	}
	if st.callID == "" && rec.OriginateID != "" {
		callID, user, source, done, err := a.bindOriginate(ctx, key, rec.OriginateID)
		if err != nil {
			return err
		}
		if callID != "" {
			st.callID, st.callUser, st.source = callID, user, source
			if done && st.finished == "" {
				st.finished = "by-handler"
				if err := a.setLater(ctx, key, map[string]string{fFinished: st.finished}); err != nil {
					return err
				}
			}
		}
	}
	if err := a.reconcile(ctx, rec, st); err != nil {
		return err
	}
	if st.finished == "" {
		if err := a.finishCall(ctx, rec, st, true); err != nil {
			return err
		}
	}
	if err := a.attachRecording(ctx, rec, st); err != nil {
		return err
	}
	return a.followUps(ctx, rec, st)
}

// registerExt is the extension a call is registered for: the first that rang (inbound) or the
// one that placed it (outbound).
func registerExt(rec *call.Record) string {
	var cands []string
	if rec.Direction == call.Outbound {
		for _, l := range rec.Legs {
			cands = append(cands, l.Ext)
		}
		cands = append(cands, rec.AnsweredBy, rec.CallerExt)
		cands = append(cands, rec.Rang...)
	} else {
		cands = append(cands, rec.Rang...)
		cands = append(cands, rec.AnsweredBy)
		for _, l := range rec.Legs {
			cands = append(cands, l.Ext)
		}
	}
	for _, c := range cands {
		if c != "" {
			return c
		}
	}
	return ""
}

// finishExt is the extension of the employee the finished call belongs to.
func (a *Adapter) finishExt(rec *call.Record) string {
	if rec.Disposition == call.Answered {
		if a.cfg.Finish.User == FinishUserFirstAnswer && rec.AnsweredBy != "" {
			return rec.AnsweredBy
		}
		for i := len(rec.Legs) - 1; i >= 0; i-- {
			if rec.Legs[i].Ext != "" {
				return rec.Legs[i].Ext
			}
		}
		if rec.AnsweredBy != "" {
			return rec.AnsweredBy
		}
	}
	return registerExt(rec)
}

// statusCode maps the outcome to finish's STATUS_CODE and FAILED_REASON (docs/crm-apis.md Part D).
func statusCode(rec *call.Record) (string, string) {
	switch rec.Disposition {
	case call.Answered:
		return "200", ""
	case call.Busy:
		return "486", "busy"
	case call.NoAnswer:
		switch {
		case rec.HasFlag("voicemail"):
			return "304", "voicemail"
		case rec.Direction == call.Outbound && (rec.HasFlag("cancel") || rec.HasFlag("cancelled")):
			return "603-S", "cancelled"
		}
		return "304", "no answer"
	case call.Failed:
		switch rec.HangupCause {
		case 1, 28:
			return "404", "invalid number"
		case 3:
			return "484", "no route to destination"
		case 17:
			return "486", "busy"
		case 20, 27:
			return "480", "unavailable"
		case 21:
			return "603", "declined"
		}
		return "503", "congestion or unavailable"
	}
	return "OTHER", string(rec.Disposition)
}

// finishCall registers the call if it has no CALL_ID and finishes it. A "Call is not found"
// answer after an earlier finish whose outcome was unknown is checked with a harmless
// attachRecord upload request (only finished calls are in the statistics table); otherwise the
// CALL_ID is stale and the call is registered anew (once).
func (a *Adapter) finishCall(ctx context.Context, rec *call.Record, st *callState, mayRetry bool) error {
	key := rec.Key()
	if st.callID == "" {
		user, err := a.userFor(ctx, registerExt(rec), "agent")
		if err != nil {
			return err
		}
		reg, err := a.register(ctx, regRequest{
			key: key, dir: rec.Direction, customer: rec.Customer, line: rec.Line,
			started: rec.StartedAt, user: user, show: false, source: "deliver",
		})
		if err != nil {
			return fmt.Errorf("registering call: %w", err)
		}
		st.callID, st.callUser, st.entity, st.source = reg.callID, reg.user, reg.entity, "deliver"
	}
	user, err := a.finishUser(ctx, rec, st)
	if err != nil {
		return err
	}
	code, reason := statusCode(rec)
	dur := max(rec.TalkSeconds, 0)
	if code == "200" && dur == 0 {
		dur = 1 // Bitrix24 treats 200 with DURATION 0 as missed
	}
	p := api.FinishParams{
		CallID: st.callID, UserID: user, Duration: dur, StatusCode: code, AddToChat: api.Flag(a.cfg.Finish.AddToChat),
	}
	if code != "200" {
		p.FailedReason = reason
	}
	earlier := st.finishSet
	if earlier {
		// A finish was sent before and its answer was lost or unreadable: ask Bitrix24 whether
		// the call was finished before sending another (a second finish of a finished call
		// answers "Call is not found").
		done, err := a.finishedAlready(ctx, key, st)
		if err != nil || done {
			return err
		}
	}
	// Write-ahead: a finish that went out with this marker lost is sent again, and Bitrix24
	// answers a second finish "Call is not found".
	if err := a.setLazy(ctx, key, map[string]string{fFinishSent: "1"}); err != nil {
		return err
	}
	st.finishSet = true
	res, err := a.batch.finish(ctx, p)
	if err != nil && api.DescriptionContains(err, "User is not found") && a.cfg.Users.DefaultUserID > 0 && user != a.cfg.Users.DefaultUserID {
		crm.Trace(ctx, "decision", fmt.Sprintf("warning: Bitrix24 says user %d is not found or not active; finishing as the default user %d", user, a.cfg.Users.DefaultUserID), "")
		p.UserID = a.cfg.Users.DefaultUserID
		res, err = a.batch.finish(ctx, p)
	}
	if err != nil && api.DescriptionContains(err, "Call is not found") {
		if earlier {
			if _, perr := a.client.AttachRecordUpload(ctx, st.callID, "check.mp3"); perr == nil {
				crm.Trace(ctx, "decision", "an earlier finish of "+st.callID+" went through: the call is in the statistics", "")
				st.finished = "checked"
				return a.setLater(ctx, key, map[string]string{fFinished: st.finished})
			}
		}
		if mayRetry && st.source != "click2call" && st.source != "callback" {
			crm.Trace(ctx, "decision", "Bitrix24 no longer knows CALL_ID "+st.callID+": registering the call again", "")
			st.callID = ""
			if err := a.setLazy(ctx, key, map[string]string{fCallID: ""}); err != nil {
				return err
			}
			return a.finishCall(ctx, rec, st, false)
		}
	}
	if err != nil {
		return fmt.Errorf("finishing call: %w", err)
	}
	st.finished = fmt.Sprintf("%d:%d", res.ID, res.CRMActivityID)
	fields := map[string]string{fFinished: st.finished}
	if st.entity == "" && res.CRMEntityType != "" {
		st.entity = entityString(string(res.CRMEntityType), int(res.CRMEntityID))
		fields[fEntity] = st.entity
	}
	// A crash before this is written (the acknowledgement follows at once and carries it) finds
	// the write-ahead marker: the retry asks the statistics before sending finish again.
	return a.setLater(ctx, key, fields)
}

// statLookupPause is how long look-ups in the telephony statistics are skipped after the portal
// refused one (the application's user lacks the "call statistics: view" permission).
const statLookupPause = time.Hour

// finishedAlready looks the call up in the telephony statistics (voximplant.statistic.get by
// CALL_ID: only finished calls are there, docs/crm-apis.md A.3.6) and, when an earlier finish
// went through, records it as finished. It reports false when the call is not there, and when
// the portal will not answer the look-up (permission, method): then the finish is sent again and
// a "Call is not found" answer is checked the old way (attachRecord, in finishCall).
func (a *Adapter) finishedAlready(ctx context.Context, key string, st *callState) (bool, error) {
	l, err := a.lookupStatistic(ctx, api.FieldCallID, st.callID)
	stat := l.stat
	switch {
	case err != nil:
		return false, fmt.Errorf("looking up whether the call was finished: %w", err)
	case l.paused:
		return false, nil
	case l.refused != "":
		a.m.finishLookups.WithLabelValues("unavailable").Inc()
		crm.Trace(ctx, "decision", "warning: cannot look the call up in the telephony statistics ("+l.refused+"): sending finish again", "")
		return false, nil
	case stat == nil:
		a.m.finishLookups.WithLabelValues("not_finished").Inc()
		crm.Trace(ctx, "decision", "an earlier finish of "+st.callID+" did not go through (not in the statistics): sending it again", "")
		return false, nil
	}
	a.m.finishLookups.WithLabelValues("finished").Inc()
	crm.Trace(ctx, "decision", fmt.Sprintf("an earlier finish of %s went through (statistics record %d): not sent again", st.callID, stat.ID), "")
	fields := map[string]string{}
	a.finishedFrom(st, stat, fields)
	// The acknowledgement that follows carries it (a crash before finds the finish marker again).
	return true, a.setLater(ctx, key, fields)
}

// finishUser is the employee a finished call is logged under.
func (a *Adapter) finishUser(ctx context.Context, rec *call.Record, st *callState) (int, error) {
	if u := a.hookResponsible(ctx); u > 0 {
		return u, nil
	}
	if rec.Disposition != call.Answered && st.callUser > 0 {
		return st.callUser, nil
	}
	ext := a.finishExt(rec)
	if ext == "" && st.callUser > 0 {
		return st.callUser, nil
	}
	if ext != "" {
		u, ok, err := a.users.lookup(ctx, ext)
		if err != nil {
			return 0, err
		}
		if ok {
			return u.ID, nil
		}
		if st.callUser > 0 && (st.source == "click2call" || st.source == "callback") {
			return st.callUser, nil
		}
	}
	return a.userFor(ctx, ext, "employee who talked")
}

// attachRecording attaches the call's recording once (never inside batch).
func (a *Adapter) attachRecording(ctx context.Context, rec *call.Record, st *callState) error {
	if !a.cfg.Recordings.Attach || rec.Recording == "" || st.record != "" || st.callID == "" {
		return nil
	}
	skip := func(outcome, why string) error {
		a.m.recordings.WithLabelValues("skipped_" + outcome).Inc()
		crm.Trace(ctx, "decision", "warning: recording not attached: "+why, "")
		st.record = "skipped:" + outcome
		return a.setLater(ctx, rec.Key(), map[string]string{fRecord: st.record})
	}
	if a.recs == nil {
		return skip("unconfigured", "recordings are not configured in pbxbridge")
	}
	name := filepath.Base(rec.Recording)
	switch strings.ToLower(filepath.Ext(name)) {
	case ".wav", ".mp3":
	default:
		return skip("format", "Bitrix24 accepts only wav and mp3 recordings, this one is "+name)
	}
	var fileID int
	var outcome string
	var err error
	if a.cfg.Recordings.Mode == RecordingURL {
		if u := a.recs.URL(rec.Recording); u != "" {
			outcome = "url"
			fileID, err = a.client.AttachRecordURL(ctx, st.callID, name, u)
		}
	}
	if outcome == "" {
		f, oerr := a.recs.Open(rec.Recording)
		if oerr != nil {
			waited := a.now().Sub(rec.EndedAt) >= a.cfg.Recordings.Wait
			switch {
			case errors.Is(oerr, fs.ErrNotExist) && !waited:
				return fmt.Errorf("recording %s is not there yet: %w", name, oerr)
			case errors.Is(oerr, fs.ErrNotExist):
				return skip("missing", "the file "+rec.Recording+" does not exist")
			case !waited:
				// Outside recordings.dir (the PBX writes elsewhere), not a regular file, no
				// permission: retried for recordings.wait in case it is a passing problem, then
				// the call is logged without it. The finish is done, so the call does not stay
				// pending for ever.
				return fmt.Errorf("opening recording: %w", oerr)
			default:
				return skip("unreadable", "pbxbridge cannot open it ("+oerr.Error()+"); check recordings.dir")
			}
		}
		defer func() { _ = f.Close() }()
		if n := f.Name(); n != "" {
			name = n
		}
		size := f.Size()
		switch {
		case size <= 0:
			return skip("empty", "the file is empty")
		case size > a.cfg.Recordings.MaxBytes:
			return skip("size", fmt.Sprintf("the file has %d bytes, more than recordings.max_bytes", size))
		case size <= a.cfg.Recordings.ContentMaxBytes:
			outcome = "content"
			content, rerr := io.ReadAll(io.LimitReader(f, size+1))
			if rerr != nil {
				return fmt.Errorf("reading recording: %w", rerr)
			}
			fileID, err = a.client.AttachRecord(ctx, st.callID, name, content)
		default:
			outcome = "upload"
			var t *api.UploadTarget
			if t, err = a.client.AttachRecordUpload(ctx, st.callID, name); err == nil {
				fileID, err = a.client.Upload(ctx, t, name, f)
			}
		}
	}
	if err != nil {
		if api.DescriptionContains(err, "Wrong file extension") {
			return skip("format", err.Error())
		}
		return fmt.Errorf("attaching recording: %w", err)
	}
	a.m.recordings.WithLabelValues(outcome).Inc()
	st.record = fmt.Sprintf("%s:%d", outcome, fileID)
	return a.setLater(ctx, rec.Key(), map[string]string{fRecord: st.record})
}
