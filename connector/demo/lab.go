package demo

import "github.com/pbxbridge/pbxbridge/connector/callmodel"

// LabCalls is the call recognition for the lab PBX that recorded asterisk/transcripts (every
// phone, trunk and customer there is a Local channel; see the transcripts' README). The demo and
// the end-to-end tests replay those transcripts through cmd/fakepbx, so they use it. It mirrors
// connector/callmodel/testdata/lab.yaml (a test keeps them equal).
func LabCalls() callmodel.Config {
	return callmodel.Config{
		Extensions: []string{
			`^Local/(?P<ext>\d+)@phones-[0-9a-f]+;1$`,
			`^Local/[^@]+@internal-[0-9a-f]+;1$`,
		},
		Trunks: []string{
			`^Local/[^@]+@from-pstn-[0-9a-f]+;2$`,
			`^Local/[^@]+@pstn-[0-9a-f]+;1$`,
		},
		OriginateIDVariables: []string{"PBXBRIDGE_ORIGINATE_ID", "CRM_ORIGINATE_ID"},
		DIDVariables:         []string{"FROM_DID", "LAB_DID"},
	}
}
