package ami

// commonKeys are header names that appear in almost every frame; interning them saves one
// allocation per header line on the hot path.
var commonKeys = func() map[string]string {
	keys := []string{
		"Event", "Response", "ActionID", "Message", "Privilege", "Timestamp", "SystemName",
		"Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
		"ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context", "Exten",
		"Priority", "Uniqueid", "Linkedid", "Extension", "Application", "AppData", "Variable",
		"Value", "Cause", "Cause-txt", "DestChannel", "DestChannelState", "DestChannelStateDesc",
		"DestCallerIDNum", "DestCallerIDName", "DestConnectedLineNum", "DestConnectedLineName",
		"DestLanguage", "DestAccountCode", "DestContext", "DestExten", "DestPriority",
		"DestUniqueid", "DestLinkedid", "DialString", "DialStatus", "BridgeUniqueid",
		"BridgeType", "BridgeTechnology", "BridgeCreator", "BridgeName", "BridgeNumChannels",
		"BridgeVideoSourceMode", "Device", "State", "EventName", "EventTime", "UniqueID",
		"LinkedID", "CallerIDnum", "CallerIDname", "CallerIDani", "CallerIDrdnis",
		"CallerIDdnid", "AMAFlags", "Userfield", "Peer", "PeerAccount", "Extra", "EventTV",
		"Severity", "Service", "EventVersion", "AccountID", "SessionID", "LocalAddress",
		"RemoteAddress", "Queue", "Interface", "MemberName", "Status", "Source", "Destination",
		"DestinationContext", "DestinationChannel", "LastApplication", "LastData", "StartTime",
		"AnswerTime", "EndTime", "Duration", "BillableSeconds", "Disposition", "UserField",
		"RecordingFile", "CallerID",
	}
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = k
	}
	return m
}()

// internKey returns the key as a string, reusing a shared string for common header names.
func internKey(b []byte) string {
	if s, ok := commonKeys[string(b)]; ok {
		return s
	}
	return string(b)
}
