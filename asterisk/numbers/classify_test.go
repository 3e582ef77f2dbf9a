package numbers_test

import (
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/asterisk/numbers"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	n := numbers.MustNew(numbers.Config{DefaultRegion: "RU"})
	for _, tc := range []struct {
		in   string
		want numbers.Class
		e164 string
	}{
		{"101", numbers.ClassExtension, ""},
		{"+7 495 111-22-33", numbers.ClassNational, "+74951112233"},
		{"84951112233", numbers.ClassNational, "+74951112233"},
		{"89161234567", numbers.ClassNational, "+79161234567"},
		{"+375 29 123 45 67", numbers.ClassInternational, "+375291234567"},
		{"+44 20 7946 0958", numbers.ClassInternational, "+442079460958"},
		{"+7 809 505 12 34", numbers.ClassPremium, "+78095051234"},
		{"+44 909 879 0000", numbers.ClassPremium, "+449098790000"},
		{"+882 16 0000 0001", numbers.ClassSatellite, "+882160000000" + "1"},
		{"+881 631 234 567", numbers.ClassSatellite, "+881631234567"},
		{"*97", numbers.ClassInvalid, ""},
		{"101#", numbers.ClassInvalid, ""},
		{"8495111223#", numbers.ClassInvalid, ""},
		{"+7495abc", numbers.ClassInvalid, ""},
		{"٤٩٥١١١٢٢٣٣", numbers.ClassInvalid, ""}, // Arabic-Indic digits are not dialable
		{strings.Repeat("9", 5000), numbers.ClassInvalid, ""},
		{"", numbers.ClassInvalid, ""},
		{"1", numbers.ClassInvalid, ""},
	} {
		got, e164 := n.Classify(tc.in)
		if got != tc.want || (tc.e164 != "" && e164 != tc.e164) {
			t.Errorf("Classify(%.30q) = %s %q, want %s %q", tc.in, got, e164, tc.want, tc.e164)
		}
	}
}
