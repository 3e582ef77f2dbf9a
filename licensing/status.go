package licensing

import (
	"slices"
	"time"
)

// Status is the licensing view served by the daemon's admin API and printed by
// `pbxbridge license status`. It is plain data and JSON-encodable.
type Status struct {
	Now          time.Time         `json:"now"`   // effective evaluation time N = max(wall, floor)
	Wall         time.Time         `json:"wall"`  // wall clock at evaluation
	Floor        time.Time         `json:"floor"` // time floor F (§3.5)
	ClockSuspect bool              `json:"clock_suspect"`
	Dir          string            `json:"dir"`
	LastReload   time.Time         `json:"last_reload"`
	Connectors   []ConnectorStatus `json:"connectors"`
	Files        []FileStatus      `json:"files"`
}

// ConnectorStatus is the licence state of one connector instance.
type ConnectorStatus struct {
	Name     string       `json:"name"`
	Type     string       `json:"type"`
	State    State        `json:"state"`
	Allowed  bool         `json:"allowed"` // CRM actions enabled
	Reason   string       `json:"reason,omitempty"`
	Account  *Account     `json:"account,omitempty"` // as reported by the adapter
	License  *LicenseInfo `json:"license,omitempty"` // the selected token
	Next     *LicenseInfo `json:"next,omitempty"`    // a stacked renewal waiting for its start
	DaysLeft *float64     `json:"days_left,omitempty"`
	Seats    SeatStatus   `json:"seats"`
	Host     *HostMatch   `json:"host,omitempty"`
}

// FileResult is the outcome of one file in the licence directory.
type FileResult string

// File results.
const (
	FileValid      FileResult = "valid"
	FileSuperseded FileResult = "superseded"
	FileRevoked    FileResult = "revoked"
	FileError      FileResult = "error"
)

// FileStatus describes one file of the licence directory after the last reload.
type FileStatus struct {
	Path    string       `json:"path"`
	Result  FileResult   `json:"result"`
	Reason  Reason       `json:"reason,omitempty"`
	Error   string       `json:"error,omitempty"`
	License *LicenseInfo `json:"license,omitempty"` // present once the signature verified
}

// LicenseInfo summarises a verified token for humans and tools.
type LicenseInfo struct {
	LID        string      `json:"lid,omitempty"`
	Rev        int         `json:"rev,omitempty"`
	Type       string      `json:"type"`
	KID        string      `json:"kid"`
	DevKey     bool        `json:"dev_key,omitempty"`
	Sub        string      `json:"sub,omitempty"`
	Licensee   string      `json:"licensee,omitempty"`
	Connector  string      `json:"connector,omitempty"`
	Start      string      `json:"start,omitempty"`
	End        string      `json:"end,omitempty"`
	TZ         string      `json:"tz,omitempty"`
	GraceUntil string      `json:"grace_until,omitempty"`
	IAT        time.Time   `json:"iat"`
	CRM        *CRMBinding `json:"crm,omitempty"`
	Seats      *Seats      `json:"seats,omitempty"`
	HostBound  bool        `json:"host_bound"`
	Seq        int64       `json:"seq,omitempty"`
}

// InfoOf summarises l.
func InfoOf(l *License) *LicenseInfo {
	c := l.Claims()
	info := &LicenseInfo{LID: c.LID, Rev: c.Rev, Type: string(c.Typ), KID: l.KID(), DevKey: l.DevKey(), Sub: c.Sub,
		Licensee: c.Licensee, Connector: c.Connector, IAT: c.IAT, CRM: c.CRM, Seats: c.Seats, HostBound: len(c.Hosts) > 0, Seq: c.Seq}
	if c.Term != nil {
		info.Start, info.End, info.TZ = c.Term.Start.String(), c.Term.End.String(), c.Term.TZ
	}
	if c.GraceUntil != nil {
		info.GraceUntil = c.GraceUntil.String()
	}
	return info
}

func (s Status) clone() Status {
	s.Connectors = slices.Clone(s.Connectors)
	for i := range s.Connectors {
		s.Connectors[i] = s.Connectors[i].clone()
	}
	s.Files = slices.Clone(s.Files)
	for i := range s.Files {
		s.Files[i].License = s.Files[i].License.clone()
	}
	return s
}

func (c ConnectorStatus) clone() ConnectorStatus {
	c.Account = clonePtr(c.Account)
	c.License = c.License.clone()
	c.Next = c.Next.clone()
	c.DaysLeft = clonePtr(c.DaysLeft)
	c.Seats.ExtensionsLimit = clonePtr(c.Seats.ExtensionsLimit)
	c.Seats.CRMUsersLimit = clonePtr(c.Seats.CRMUsersLimit)
	c.Seats.Deadline = clonePtr(c.Seats.Deadline)
	c.Seats.Suspended = slices.Clone(c.Seats.Suspended)
	if c.Host != nil {
		h := *c.Host
		h.Failing, h.Missing = slices.Clone(h.Failing), slices.Clone(h.Missing)
		c.Host = &h
	}
	return c
}

func (l *LicenseInfo) clone() *LicenseInfo {
	if l == nil {
		return nil
	}
	c := *l
	c.CRM = clonePtr(c.CRM)
	if c.Seats != nil {
		c.Seats = &Seats{CRMUsers: cloneInt(c.Seats.CRMUsers), Extensions: cloneInt(c.Seats.Extensions)}
	}
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Connector returns the status of the named instance.
func (s Status) Connector(name string) (ConnectorStatus, bool) {
	for _, c := range s.Connectors {
		if c.Name == name {
			return c, true
		}
	}
	return ConnectorStatus{}, false
}
