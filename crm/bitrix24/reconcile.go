package bitrix24

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm"
	"github.com/pbxbridge/pbxbridge/crm/bitrix24/api"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Reconciling after a restore (crm.Reconciler).
//
// After `pbxbridge restore` the CallStore is as it was at the backup: a call Bitrix24 got after
// that time is unknown to it, and delivering it again would register and finish it a second
// time (a second call and activity in the CRM). The daemon calls Uncertain for every call still
// queued; Uncertain marks the call (fUncertain), and the call's next delivery first looks it up
// in the telephony statistics, by the EXTERNAL_CALL_ID it is registered with (the record key),
// then by the CALL_ID the store knows, if any (Bitrix24 registers click-to-call calls itself,
// without EXTERNAL_CALL_ID). Only finished calls are there (docs/crm-apis.md A.3.6).
//
//   - A row: Bitrix24 has the finished call. It is recorded as finished with the row's CALL_ID,
//     statistics record and activity, and is neither registered nor finished again. Its
//     recording is attached unless the row shows one (RECORD_FILE_ID, CALL_RECORD_URL). A missed
//     call's lead and follow-up are not created: the delivery that finished the call went on to
//     create them in the same attempt, and Bitrix24 cannot be asked for them cheaply (a warning
//     in the timeline says so).
//   - No row: delivered as usual. A call registered after the backup but not finished is not in
//     the statistics: register answers its CALL_ID again within 30 minutes of the first
//     registration (A.3.1), so it is finished once; later it is registered anew, and the first
//     registration stays unfinished (no activity, no statistics row).
//   - The look-up refused (ACCESS_DENIED: the application's user lacks "Call statistics: view",
//     or such a refusal within statLookupPause): delivered as usual, with a warning in the
//     timeline and finish_lookups_total{result="unavailable"}.
//   - Any other error (transport, 5xx, rate limit): the delivery is retried; the mark stays.

// fUncertain marks a call to look up before it is sent: the unix time of the backup the state
// was restored from.
const fUncertain = "b24.uncertain"

// followUpRestored marks a missed call's lead and follow-up as left to the delivery that
// finished the call before the restore.
const followUpRestored = "skipped:restore"

// Uncertain implements crm.Reconciler: the state was restored from a backup taken at since, so
// the call key, still queued, may have reached Bitrix24 after it. The call is marked in the
// CallStore (no request); its next Deliver looks it up in the telephony statistics before it
// registers or finishes it. A call the store knows as finished, or marked already, is left as
// it is.
func (a *Adapter) Uncertain(ctx context.Context, key string, since time.Time) error {
	unlock, err := a.callLocks.lock(ctx, key)
	if err != nil {
		return fmt.Errorf("bitrix24: marking call %s for a look-up: %w", key, err)
	}
	defer unlock()
	all, err := a.getAll(ctx, key, fFinished, fUncertain)
	if err == nil && all[fFinished] == "" && all[fUncertain] == "" {
		mark := strconv.FormatInt(since.Unix(), 10)
		if err = a.set(ctx, key, fUncertain, mark); err == nil {
			a.liveMu.Lock()
			if lc := a.live[key]; lc != nil { // the delivery uses the live state (deliverState)
				lc.uncertain = mark
			}
			a.liveMu.Unlock()
		}
	}
	if err != nil {
		return fmt.Errorf("bitrix24: marking call %s for a look-up: %w", key, err)
	}
	return nil
}

var _ crm.Reconciler = (*Adapter)(nil)

// reconcile settles a call Uncertain marked: it looks the call up in the telephony statistics
// and, when Bitrix24 has it, records it as finished in st (and the store), so that deliver
// neither registers nor finishes it again. The mark is cleared once the look-up answered or
// was refused.
func (a *Adapter) reconcile(ctx context.Context, rec *call.Record, st *callState) error {
	if st.uncertain == "" {
		return nil
	}
	key := rec.Key()
	fields := map[string]string{fUncertain: ""}
	if st.finished == "" {
		l, err := a.lookupStatistic(ctx, api.FieldExternalCallID, key)
		if err == nil && l.stat == nil && l.refused == "" && st.callID != "" {
			l, err = a.lookupStatistic(ctx, api.FieldCallID, st.callID)
		}
		switch {
		case err != nil:
			return fmt.Errorf("looking the call up after the restore: %w", err)
		case l.refused != "":
			a.m.finishLookups.WithLabelValues("unavailable").Inc()
			crm.Trace(ctx, "decision", "warning: cannot look the call up in Bitrix24's call statistics after the restore: sending it (it may be logged twice)",
				l.refused+`; grant the application's user the "Call statistics: view" permission`)
		case l.stat == nil:
			a.m.finishLookups.WithLabelValues("not_finished").Inc()
			crm.Trace(ctx, "decision", "not in Bitrix24's call statistics after the restore: sending it", "")
		default:
			a.m.finishLookups.WithLabelValues("finished").Inc()
			a.restoredFinished(ctx, rec, st, l.stat, fields)
		}
	}
	if err := a.setMany(ctx, key, fields); err != nil {
		return err
	}
	st.uncertain = ""
	return nil
}

// restoredFinished records in st and fields a call found finished in the statistics after a
// restore, with what is left to do (the recording) and what is not (the follow-ups).
func (a *Adapter) restoredFinished(ctx context.Context, rec *call.Record, st *callState, stat *api.Statistic, fields map[string]string) {
	if id := string(stat.CallID); id != "" && id != st.callID {
		st.callID = id
		fields[fCallID] = id
	}
	a.finishedFrom(st, stat, fields)
	detail := fmt.Sprintf("CALL_ID %s, statistics record %d, activity %d", st.callID, stat.ID, stat.CRMActivityID)
	if a.cfg.Recordings.Attach && rec.Recording != "" && st.record == "" {
		if stat.RecordFileID > 0 || stat.CallRecordURL != "" {
			st.record = fmt.Sprintf("found:%d", stat.RecordFileID)
			fields[fRecord] = st.record
			detail += "; its recording is there already"
		} else {
			detail += "; its recording is attached now"
		}
	}
	crm.Trace(ctx, "decision", "found in Bitrix24's call statistics after the restore: not logged again", detail)
	if !a.missed(rec) {
		return
	}
	var skipped []string
	if a.cfg.MissedCalls.CreateLead && st.lead == "" && st.entity == "" {
		st.lead = followUpRestored
		fields[fLead] = st.lead
		skipped = append(skipped, "lead")
	}
	if a.cfg.MissedCalls.FollowUp != FollowUpNone && st.followUp == "" {
		st.followUp = followUpRestored
		fields[fFollowUp] = st.followUp
		skipped = append(skipped, a.cfg.MissedCalls.FollowUp)
	}
	if len(skipped) > 0 {
		crm.Trace(ctx, "decision", "warning: the missed call's "+strings.Join(skipped, " and ")+" is not created again after the restore",
			"the delivery that finished this call before the state was lost went on to create it; look in Bitrix24 if in doubt")
	}
}

// finishedFrom records a statistics row in st: the call is finished (statistics record and
// activity), bound to the row's CRM object when st has none. The fields to store are added to
// fields.
func (a *Adapter) finishedFrom(st *callState, stat *api.Statistic, fields map[string]string) {
	st.finished = fmt.Sprintf("%d:%d", stat.ID, stat.CRMActivityID)
	fields[fFinished] = st.finished
	if st.entity == "" && stat.CRMEntityType != "" {
		if st.entity = entityString(string(stat.CRMEntityType), int(stat.CRMEntityID)); st.entity != "" {
			fields[fEntity] = st.entity
		}
	}
}

// statLookup is the outcome of a look-up in the telephony statistics.
type statLookup struct {
	stat *api.Statistic // the call's row; nil: not there (not finished)
	// refused says why the portal would not answer (the permission, the method), now or within
	// statLookupPause (paused: not asked again); "" when it answered.
	refused string
	paused  bool
}

// lookupStatistic looks a call up in the telephony statistics by CALL_ID or EXTERNAL_CALL_ID
// (api.FieldCallID, api.FieldExternalCallID). A refusal pauses such look-ups for
// statLookupPause and is reported in the outcome, not as an error: the caller goes on without
// knowing. The error is any other failure.
func (a *Adapter) lookupStatistic(ctx context.Context, field, value string) (statLookup, error) {
	if until := a.statDenied.Load(); until != nil && a.now().Before(*until) {
		return statLookup{refused: "Bitrix24 refused a look-up in the call statistics within the last hour", paused: true}, nil
	}
	var stat *api.Statistic
	var err error
	if field == api.FieldExternalCallID {
		stat, err = a.client.FindStatisticByExternalID(ctx, value)
	} else {
		stat, err = a.client.FindStatistic(ctx, value)
	}
	if err == nil {
		return statLookup{stat: stat}, nil
	}
	var e *api.Error
	if errors.As(err, &e) && (api.IsCode(err, api.CodeAccessDenied, api.CodeInsufficientScope, api.CodeMethodNotFound,
		api.CodeUserAccessError, api.CodeInvalidCredentials) || e.Status == 400 || e.Status == 403 || e.Status == 404) {
		until := a.now().Add(statLookupPause)
		a.statDenied.Store(&until)
		return statLookup{refused: err.Error()}, nil
	}
	return statLookup{}, err
}
